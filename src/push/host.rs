//! What Node's `os` module tells the JS agent about the machine: read from
//! `/proc` on Linux (without libc), through [`super::host_sys`] (sysinfo)
//! elsewhere.

use std::net::Ipv4Addr;

/// The parts of the status `server` entry that do not change while the agent
/// runs (`DataRetriever.js`: `cpuMeta` at module scope; `os.hostname()`,
/// `os.type()`, `os.platform()`, `os.arch()` and the username are fixed for
/// the process too, so they are read once here).
#[derive(Debug, Clone, PartialEq)]
pub struct HostIdentity {
    /// First of `SUDO_USER, C9_USER, LOGNAME, USER, LNAME, USERNAME`;
    /// `None` makes the key vanish, as `undefined` does in JSON.
    pub username: Option<String>,
    pub hostname: String,
    /// `os.platform()`: `linux`, `darwin`, `win32`, …
    pub platform: String,
    /// `os.type()`: `Linux`, `Darwin`, `Windows_NT`, …
    pub os_type: String,
    /// `os.arch()`: `x64`, `arm64`, `ia32`, …
    pub arch: String,
    /// `cpuMeta`: `os.cpus().length` and `os.cpus()[0].model`.
    pub cpu: CpuMeta,
}

/// `cpuMeta` of `DataRetriever.js`: `{number, info}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuMeta {
    /// `os.cpus().length`.
    pub number: usize,
    /// `os.cpus()[0].model`, or `'no-data'` when there is no CPU listed.
    pub info: String,
}

impl CpuMeta {
    /// `info` when `os.cpus()` is empty.
    pub const NO_DATA: &'static str = "no-data";

    /// From a Node `os.cpus()` array (what the JS wrapper hands the daemon);
    /// `None` unless it is a non-empty array, so an absent list falls back
    /// to procfs. A first entry without a string `model` gives `'no-data'`
    /// rather than an `undefined` that would drop the key.
    pub fn from_node_cpus(cpus: &serde_json::Value) -> Option<CpuMeta> {
        let list = cpus.as_array().filter(|l| !l.is_empty())?;
        let info = list[0]
            .get("model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(Self::NO_DATA)
            .to_owned();
        Some(CpuMeta {
            number: list.len(),
            info,
        })
    }

    /// What libuv's `uv_cpu_info` would list: on Linux the `cpuN` lines of
    /// `/proc/stat` and the first model in `/proc/cpuinfo` (libuv's default
    /// model is `unknown`); elsewhere sysinfo's CPU list.
    #[cfg(not(target_os = "linux"))]
    fn detect() -> CpuMeta {
        super::host_sys::cpu_meta()
    }

    #[cfg(target_os = "linux")]
    fn detect() -> CpuMeta {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let number = read("/proc/stat")
            .as_deref()
            .map(parse_stat_cpu_count)
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(0, |n| n.get()));
        let model = read("/proc/cpuinfo")
            .as_deref()
            .and_then(parse_cpuinfo_model);
        let info = match (number, model) {
            (0, _) => Self::NO_DATA.to_owned(),
            (_, Some(m)) => m,
            (_, None) => "unknown".to_owned(),
        };
        CpuMeta { number, info }
    }
}

impl HostIdentity {
    /// Reads the process environment and the OS once.
    pub fn detect() -> HostIdentity {
        HostIdentity::detect_with(None)
    }

    /// [`Self::detect`] with the CPU meta already known (Node's `os.cpus()`,
    /// passed by the JS wrapper), so the OS is not asked for it.
    pub fn detect_with(cpu: Option<CpuMeta>) -> HostIdentity {
        HostIdentity {
            username: username_from(|k| std::env::var(k).ok()),
            hostname: hostname(),
            platform: node_platform(std::env::consts::OS).to_owned(),
            os_type: node_os_type(std::env::consts::OS).to_owned(),
            arch: node_arch(std::env::consts::ARCH).to_owned(),
            cpu: cpu.unwrap_or_else(CpuMeta::detect),
        }
    }
}

/// `process.env.SUDO_USER || … || process.env.USERNAME` (empty strings are
/// falsy, so they are skipped like in JS).
pub(crate) fn username_from(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    [
        "SUDO_USER",
        "C9_USER",
        "LOGNAME",
        "USER",
        "LNAME",
        "USERNAME",
    ]
    .iter()
    .filter_map(|k| get(k))
    .find(|v| !v.is_empty())
}

fn hostname() -> String {
    if let Some(h) = os_hostname() {
        return h;
    }
    ["HOSTNAME", "COMPUTERNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// gethostname(2) on Linux is the UTS name, which procfs exposes.
#[cfg(target_os = "linux")]
fn os_hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(h.trim().to_owned()).filter(|h| !h.is_empty())
}

#[cfg(not(target_os = "linux"))]
fn os_hostname() -> Option<String> {
    super::host_sys::hostname()
}

/// Rust's `std::env::consts::OS` → Node's `process.platform`.
pub(crate) fn node_platform(os: &str) -> &str {
    match os {
        "macos" | "ios" => "darwin",
        "windows" => "win32",
        "solaris" | "illumos" => "sunos",
        other => other,
    }
}

/// Rust's `std::env::consts::OS` → Node's `os.type()` (uname sysname).
pub(crate) fn node_os_type(os: &str) -> &str {
    match os {
        "linux" | "android" => "Linux",
        "macos" | "ios" => "Darwin",
        "windows" => "Windows_NT",
        "freebsd" => "FreeBSD",
        "openbsd" => "OpenBSD",
        "netbsd" => "NetBSD",
        "dragonfly" => "DragonFly",
        "solaris" | "illumos" => "SunOS",
        "aix" => "AIX",
        other => other,
    }
}

/// Rust's `std::env::consts::ARCH` → Node's `os.arch()`.
pub(crate) fn node_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "x64",
        "x86" => "ia32",
        "aarch64" => "arm64",
        "powerpc" => "ppc",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" => "mips64el",
        other => other,
    }
}

/// The number of `cpuN` lines in `/proc/stat` (how libuv counts CPUs).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn parse_stat_cpu_count(text: &str) -> usize {
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.strip_prefix("cpu"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .count()
}

/// The model of the first CPU in `/proc/cpuinfo`: the first `model name`
/// (x86, most arm), else `Processor` (old arm kernels), else `cpu` (ppc).
/// The value is kept as printed after `: `.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn parse_cpuinfo_model(text: &str) -> Option<String> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim_end() == key)
                .then(|| v.strip_prefix(' ').unwrap_or(v).trim_end_matches('\r'))
                .filter(|v| !v.trim().is_empty())
                .map(str::to_owned)
        })
    };
    field("model name")
        .or_else(|| field("Processor"))
        .or_else(|| field("cpu"))
}

/// The per-call parts of the `server` entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostStats {
    /// `os.uptime()`: seconds, fractional on Linux (Node 20 prints e.g. `966.93`).
    pub uptime: f64,
    pub loadavg: [f64; 3],
    /// `os.totalmem()`: bytes.
    pub total_mem: u64,
    /// `os.freemem()`: bytes; on Linux libuv reads `MemAvailable`.
    pub free_mem: u64,
}

impl HostStats {
    /// The figures now: procfs on Linux.
    #[cfg(target_os = "linux")]
    pub fn read() -> HostStats {
        HostStats::read_procfs()
    }

    /// The figures now: sysinfo where there is no procfs.
    #[cfg(not(target_os = "linux"))]
    pub fn read() -> HostStats {
        super::host_sys::stats()
    }

    /// Three small procfs reads; zeros where unavailable (a procfs that
    /// hides them).
    #[cfg(target_os = "linux")]
    pub(crate) fn read_procfs() -> HostStats {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let meminfo = read("/proc/meminfo");
        HostStats {
            uptime: read("/proc/uptime")
                .as_deref()
                .and_then(parse_uptime)
                .unwrap_or(0.0),
            loadavg: read("/proc/loadavg")
                .as_deref()
                .and_then(parse_loadavg)
                .unwrap_or([0.0; 3]),
            total_mem: meminfo.as_deref().and_then(parse_mem_total).unwrap_or(0),
            free_mem: meminfo.as_deref().and_then(parse_mem_free).unwrap_or(0),
        }
    }
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text
        .split_whitespace()
        .map(|s| s.parse::<f64>().ok().filter(|f| f.is_finite()));
    Some([it.next()??, it.next()??, it.next()??])
}

/// `MemTotal:  24684092 kB` → bytes (libuv multiplies by 1024 too).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn parse_mem_total(text: &str) -> Option<u64> {
    meminfo_bytes(text, "MemTotal:")
}

/// `os.freemem()` on Linux: `MemAvailable` (libuv), or `MemFree` on kernels
/// older than 3.14 that lack it (libuv then falls back to sysinfo's
/// `freeram`, which is `MemFree`).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn parse_mem_free(text: &str) -> Option<u64> {
    meminfo_bytes(text, "MemAvailable:").or_else(|| meminfo_bytes(text, "MemFree:"))
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The address Node's `os.networkInterfaces()` scan in `Utility.network`
/// would return: the last non-internal IPv4 address, `127.0.0.1` if none.
pub fn internal_ip() -> String {
    #[cfg(target_os = "linux")]
    let ip = {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        pick_internal_ip(
            &read("/proc/net/fib_trie"),
            &read("/proc/net/route"),
            &read("/proc/net/dev"),
        )
    };
    #[cfg(not(target_os = "linux"))]
    let ip = super::host_sys::internal_ip();
    ip.map(|ip| ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".to_owned())
}

/// Without getifaddrs: the kernel's local addresses come from `fib_trie`
/// (`/32 host LOCAL` leaves), each is attributed to the interface whose
/// connected route (`/proc/net/route`) holds it, and interfaces are ordered
/// as `/proc/net/dev` lists them (ifindex order, like getifaddrs). Loopback
/// (127/8) is what Node calls internal. Addresses without a route keep their
/// trie order, after the attributed ones.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn pick_internal_ip(fib_trie: &str, route: &str, dev: &str) -> Option<Ipv4Addr> {
    let locals = local_addresses(fib_trie);
    let routes = connected_routes(route);
    let order: Vec<&str> = dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim())
        .filter(|n| !n.is_empty() && !n.contains('|') && !n.contains(' '))
        .collect();
    let rank = |ip: &Ipv4Addr| -> usize {
        let ipn = u32::from(*ip);
        let iface = routes
            .iter()
            .filter(|(_, dest, mask)| *mask != 0 && ipn & mask == *dest)
            .max_by_key(|(_, _, mask)| mask.count_ones())
            .map(|(i, _, _)| i.as_str());
        iface
            .and_then(|i| order.iter().position(|o| *o == i))
            .unwrap_or(usize::MAX)
    };
    let mut ranked: Vec<(usize, usize, Ipv4Addr)> = locals
        .into_iter()
        .enumerate()
        .map(|(pos, ip)| (rank(&ip), pos, ip))
        .collect();
    ranked.sort();
    ranked.last().map(|(_, _, ip)| *ip)
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn local_addresses(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    let mut last_leaf: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last_leaf = addr.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last_leaf {
                if !ip.is_loopback() && !out.contains(&ip) {
                    out.push(ip);
                }
            }
        } else if t.starts_with("+-- ") || !t.starts_with('/') {
            last_leaf = None;
        }
    }
    out
}

/// `(iface, destination, mask)` as host-order integers.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn connected_routes(route: &str) -> Vec<(String, u32, u32)> {
    route
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // The kernel prints the network-order bytes read as a native u32.
            let field = |i: usize| {
                f.get(i)
                    .and_then(|s| u32::from_str_radix(s, 16).ok())
                    .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
            };
            let (dest, mask) = (field(1)?, field(7)?);
            Some((f[0].to_owned(), dest, mask))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 172.17.0.0/16 2 0 2
        |-- 172.17.0.1
           /32 host LOCAL
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.2
              /32 host LOCAL
";
    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";
    const DEV: &str = "Inter-|   Receive |  Transmit
 face |bytes    packets|bytes    packets
    lo:   17822     245    0
  eth0: 101015513    4495  0
docker0: 0 0 0
";

    #[test]
    fn picks_the_last_non_loopback_address_in_interface_order() {
        // docker0 comes after eth0 in /proc/net/dev, as in getifaddrs, so
        // Node would report it last even though it sorts first in the trie.
        assert_eq!(
            pick_internal_ip(FIB, ROUTE, DEV),
            Some(Ipv4Addr::new(172, 17, 0, 1))
        );
        let dev_eth_last = "    lo: 0\ndocker0: 0\n  eth0: 0\n";
        assert_eq!(
            pick_internal_ip(FIB, ROUTE, dev_eth_last),
            Some(Ipv4Addr::new(192, 0, 2, 2))
        );
    }

    #[test]
    fn loopback_only_or_garbage_gives_none() {
        let lo = "Main:\n  +-- 127.0.0.0/8\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        assert_eq!(pick_internal_ip(lo, "", ""), None);
        assert_eq!(pick_internal_ip("", "", ""), None);
        assert_eq!(
            pick_internal_ip("|-- nonsense\n/32 host LOCAL\n\u{0}", "x\ny z", ":::"),
            None
        );
    }

    #[test]
    fn unrouted_addresses_keep_trie_order() {
        assert_eq!(
            pick_internal_ip(FIB, "", ""),
            Some(Ipv4Addr::new(192, 0, 2, 2))
        );
    }

    #[test]
    fn internal_ip_is_an_ipv4_address() {
        assert!(internal_ip().parse::<Ipv4Addr>().is_ok());
    }

    #[test]
    fn procfs_parsers() {
        assert_eq!(parse_uptime("967.12 1330.92\n"), Some(967.12));
        assert_eq!(parse_uptime("x"), None);
        assert_eq!(
            parse_loadavg("2.53 1.26 0.64 6/163 18275\n"),
            Some([2.53, 1.26, 0.64])
        );
        assert_eq!(parse_loadavg("2.53 1.26"), None);
        assert_eq!(
            parse_mem_total("MemTotal:       24684092 kB\nMemFree: 1 kB\n"),
            Some(25_276_510_208)
        );
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 99999999999999999999 kB\n"), None);
    }

    const CPUINFO_X86: &str = "processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
cpu MHz\t\t: 2200.152

processor\t: 1
model name\t: Some Other Model
";

    #[test]
    fn cpuinfo_model_of_the_first_cpu() {
        assert_eq!(
            parse_cpuinfo_model(CPUINFO_X86).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        // Old arm kernels print `Processor`; ppc prints `cpu`.
        assert_eq!(
            parse_cpuinfo_model("Processor\t: ARMv7 Processor rev 4 (v7l)\nBogoMIPS\t: 38.40\n")
                .as_deref(),
            Some("ARMv7 Processor rev 4 (v7l)")
        );
        assert_eq!(
            parse_cpuinfo_model("processor\t: 0\ncpu\t\t: POWER9 (architected), altivec supported\nclock\t\t: 2200MHz\n")
                .as_deref(),
            Some("POWER9 (architected), altivec supported")
        );
        // aarch64 lists no model at all (libuv says `unknown` there).
        assert_eq!(
            parse_cpuinfo_model("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n"),
            None
        );
        assert_eq!(parse_cpuinfo_model("model name\t: \n"), None);
        assert_eq!(parse_cpuinfo_model(""), None);
    }

    #[test]
    fn stat_cpu_count() {
        let stat = "cpu  10 0 5 100 0 0 0 0 0 0
cpu0 5 0 3 50 0 0 0 0 0 0
cpu1 5 0 2 50 0 0 0 0 0 0
intr 1 2 3
ctxt 42
cpufreq 1
";
        assert_eq!(parse_stat_cpu_count(stat), 2);
        assert_eq!(parse_stat_cpu_count(""), 0);
    }

    #[test]
    fn meminfo_free_is_mem_available() {
        let meminfo = "MemTotal:       24684092 kB
MemFree:         1000000 kB
MemAvailable:   20000000 kB
Buffers:          100000 kB
";
        assert_eq!(parse_mem_free(meminfo), Some(20_000_000 * 1024));
        assert_eq!(parse_mem_total(meminfo), Some(24_684_092 * 1024));
        // Kernels before 3.14: no MemAvailable, MemFree instead.
        assert_eq!(
            parse_mem_free("MemTotal: 2 kB\nMemFree: 1 kB\n"),
            Some(1024)
        );
        assert_eq!(parse_mem_free("MemTotal: 2 kB\n"), None);
        assert_eq!(parse_mem_free("MemAvailable: lots\n"), None);
    }

    #[test]
    fn cpu_meta_from_node_cpus() {
        let cpus = serde_json::json!([
            {"model": "Intel(R) Xeon(R) CPU @ 2.20GHz", "speed": 2200},
            {"model": "Intel(R) Xeon(R) CPU @ 2.20GHz", "speed": 2200}
        ]);
        assert_eq!(
            CpuMeta::from_node_cpus(&cpus),
            Some(CpuMeta {
                number: 2,
                info: "Intel(R) Xeon(R) CPU @ 2.20GHz".into()
            })
        );
        assert_eq!(CpuMeta::from_node_cpus(&serde_json::json!([])), None);
        assert_eq!(CpuMeta::from_node_cpus(&serde_json::Value::Null), None);
        assert_eq!(
            CpuMeta::from_node_cpus(&serde_json::json!([{}])),
            Some(CpuMeta {
                number: 1,
                info: "no-data".into()
            })
        );
    }

    #[test]
    fn node_names() {
        assert_eq!(node_platform("macos"), "darwin");
        assert_eq!(node_platform("windows"), "win32");
        assert_eq!(node_platform("linux"), "linux");
        assert_eq!(node_os_type("linux"), "Linux");
        assert_eq!(node_os_type("macos"), "Darwin");
        assert_eq!(node_os_type("windows"), "Windows_NT");
        assert_eq!(node_arch("x86_64"), "x64");
        assert_eq!(node_arch("aarch64"), "arm64");
        assert_eq!(node_arch("x86"), "ia32");
        assert_eq!(node_arch("s390x"), "s390x");
    }

    #[test]
    fn username_order_and_empty_values() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            username_from(env(&[("USER", "u"), ("SUDO_USER", "s")])),
            Some("s".into())
        );
        assert_eq!(
            username_from(env(&[("SUDO_USER", ""), ("LOGNAME", "l")])),
            Some("l".into())
        );
        assert_eq!(username_from(env(&[])), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_live_procfs() {
        let s = HostStats::read();
        assert!(s.uptime > 0.0);
        assert!(s.total_mem > 0);
        assert!(s.free_mem > 0 && s.free_mem <= s.total_mem);
        let id = HostIdentity::detect();
        assert!(id.cpu.number > 0);
        assert!(!id.cpu.info.is_empty());
    }
}
