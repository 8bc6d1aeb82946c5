//! What Node's `os` module tells the JS agent about the machine, read without
//! libc: `/proc` on Linux, neutral fallbacks elsewhere.

use std::net::Ipv4Addr;

/// The parts of the status `server` entry that the JS agent computes once at
/// load (`DataRetriever.js` module scope).
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
}

impl HostIdentity {
    /// Reads the process environment and the OS once.
    pub fn detect() -> HostIdentity {
        HostIdentity {
            username: username_from(|k| std::env::var(k).ok()),
            hostname: hostname(),
            platform: node_platform(std::env::consts::OS).to_owned(),
            os_type: node_os_type(std::env::consts::OS).to_owned(),
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
    // gethostname(2) on Linux is the UTS name, which procfs exposes.
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            return h.to_owned();
        }
    }
    ["HOSTNAME", "COMPUTERNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
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

/// The per-call parts of the `server` entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostStats {
    /// `os.uptime()`: seconds, fractional on Linux (Node 20 prints e.g. `966.93`).
    pub uptime: f64,
    pub loadavg: [f64; 3],
    /// `os.totalmem()`: bytes.
    pub total_mem: u64,
}

impl HostStats {
    /// Three small procfs reads; zeros where unavailable (non-Linux, or a
    /// procfs that hides them).
    pub fn read() -> HostStats {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        HostStats {
            uptime: read("/proc/uptime")
                .as_deref()
                .and_then(parse_uptime)
                .unwrap_or(0.0),
            loadavg: read("/proc/loadavg")
                .as_deref()
                .and_then(parse_loadavg)
                .unwrap_or([0.0; 3]),
            total_mem: read("/proc/meminfo")
                .as_deref()
                .and_then(parse_mem_total)
                .unwrap_or(0),
        }
    }
}

pub(crate) fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
}

pub(crate) fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text
        .split_whitespace()
        .map(|s| s.parse::<f64>().ok().filter(|f| f.is_finite()));
    Some([it.next()??, it.next()??, it.next()??])
}

/// `MemTotal:  24684092 kB` → bytes (libuv multiplies by 1024 too).
pub(crate) fn parse_mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line["MemTotal:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// The address Node's `os.networkInterfaces()` scan in `Utility.network`
/// would return: the last non-internal IPv4 address, `127.0.0.1` if none.
pub fn internal_ip() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    pick_internal_ip(
        &read("/proc/net/fib_trie"),
        &read("/proc/net/route"),
        &read("/proc/net/dev"),
    )
    .map(|ip| ip.to_string())
    .unwrap_or_else(|| "127.0.0.1".to_owned())
}

/// Without getifaddrs: the kernel's local addresses come from `fib_trie`
/// (`/32 host LOCAL` leaves), each is attributed to the interface whose
/// connected route (`/proc/net/route`) holds it, and interfaces are ordered
/// as `/proc/net/dev` lists them (ifindex order, like getifaddrs). Loopback
/// (127/8) is what Node calls internal. Addresses without a route keep their
/// trie order, after the attributed ones.
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

    #[test]
    fn node_names() {
        assert_eq!(node_platform("macos"), "darwin");
        assert_eq!(node_platform("windows"), "win32");
        assert_eq!(node_platform("linux"), "linux");
        assert_eq!(node_os_type("linux"), "Linux");
        assert_eq!(node_os_type("macos"), "Darwin");
        assert_eq!(node_os_type("windows"), "Windows_NT");
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
    }
}
