//! The host facts Node used to hand the daemon (`os.cpus()`, `os.totalmem()`,
//! `os.hostname()`, `process.version`, `process.execPath`, the package's
//! `config.json`), gathered without Node.
//!
//! The OS facts come from where libuv reads them on Linux (`/proc/stat`,
//! `/proc/cpuinfo`, `/proc/meminfo`, `gethostname(2)`), so `verifyPM2` and
//! `status` carry the same values as with the Node host; on other Unixes
//! (macOS) the CPU list comes from sysinfo, the memory from `sysconf`.
//! The Node facts come
//! from the launcher, by environment (set by `InteractorClient.daemonize`):
//!
//! | variable                  | Node equivalent      | when unset                     |
//! |---------------------------|----------------------|--------------------------------|
//! | `PM2_AGENT_NODE_VERSION`  | `process.version`    | `node_version` is `unknown`    |
//! | `PM2_AGENT_NODE_PATH`     | `process.execPath`   | the watchdog runs `node`       |
//! | `PM2_AGENT_CONFIG_FILE`   | `<package>/config.json` | `config.json` next to the binary, if any |

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::HostInfo;

/// `process.version` of the launcher.
pub const ENV_NODE_VERSION: &str = "PM2_AGENT_NODE_VERSION";
/// `process.execPath` of the launcher (the `node` that runs PM2's CLI).
pub const ENV_NODE_PATH: &str = "PM2_AGENT_NODE_PATH";
/// The package's `config.json` (transporter settings).
pub const ENV_CONFIG_FILE: &str = "PM2_AGENT_CONFIG_FILE";
/// `node_version` when the launcher did not say.
pub const UNKNOWN_NODE_VERSION: &str = "unknown";

/// Gathers the host facts: the OS from procfs, the Node facts from `env`,
/// `config.json` from `env` or next to `exe` (this binary).
pub fn detect(env: &HashMap<String, String>, exe: Option<&Path>) -> HostInfo {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let config_file = get(ENV_CONFIG_FILE).map(PathBuf::from).or_else(|| {
        exe.and_then(Path::parent)
            .map(|dir| dir.join("config.json"))
            .filter(|p| p.is_file())
    });
    HostInfo {
        cpus: os_cpus(),
        total_mem: total_mem(),
        hostname: hostname(),
        node_version: get(ENV_NODE_VERSION).unwrap_or_else(|| UNKNOWN_NODE_VERSION.into()),
        node_path: get(ENV_NODE_PATH).map(PathBuf::from),
        config_file,
    }
}

/// `os.cpus()` where there is no procfs: model and speed from sysinfo; the
/// times, which it does not expose, are zeros.
#[cfg(not(target_os = "linux"))]
pub fn os_cpus() -> Value {
    let list = crate::push::host_sys::cpus()
        .into_iter()
        .map(|(model, speed)| {
            json!({
                "model": if model.is_empty() { "unknown".to_owned() } else { model },
                "speed": speed,
                "times": {"user": 0, "nice": 0, "sys": 0, "idle": 0, "irq": 0},
            })
        })
        .collect();
    Value::Array(list)
}

/// `os.cpus()`: one `{model, speed, times: {user, nice, sys, idle, irq}}`
/// per CPU, times in milliseconds. Empty when procfs is unreadable (the
/// status loop then falls back to its own detection).
#[cfg(target_os = "linux")]
pub fn os_cpus() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let times = parse_stat_times(&read("/proc/stat"));
    let info = read("/proc/cpuinfo");
    let models = parse_cpuinfo_field(&info, "model name");
    let mhz = parse_cpuinfo_field(&info, "cpu MHz");
    let ms_per_tick = 1000 / clock_ticks().max(1);
    let list = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let model = models
                .get(i)
                .or(models.first())
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            let speed = cpufreq_mhz(i)
                .or_else(|| {
                    mhz.get(i)
                        .and_then(|m| m.parse::<f64>().ok())
                        .map(|m| m as u64)
                })
                .unwrap_or(0);
            json!({
                "model": model,
                "speed": speed,
                "times": {
                    "user": t[0] * ms_per_tick,
                    "nice": t[1] * ms_per_tick,
                    "sys": t[2] * ms_per_tick,
                    "idle": t[3] * ms_per_tick,
                    "irq": t[4] * ms_per_tick,
                },
            })
        })
        .collect();
    Value::Array(list)
}

/// The `cpuN` lines of `/proc/stat` as `[user, nice, sys, idle, irq]` ticks
/// (the aggregate `cpu` line is skipped).
pub fn parse_stat_times(stat: &str) -> Vec<[u64; 5]> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let n: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            let at = |i: usize| n.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq
            [at(0), at(1), at(2), at(3), at(5)]
        })
        .collect()
}

/// Every value of `field` in `/proc/cpuinfo`, in processor order.
pub fn parse_cpuinfo_field(cpuinfo: &str, field: &str) -> Vec<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim() == field)
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// `os.totalmem()`: `/proc/meminfo`, else `sysconf` pages × page size.
pub fn total_mem() -> u64 {
    if let Some(t) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .as_deref()
        .and_then(crate::push::host::parse_mem_total)
    {
        return t;
    }
    // SAFETY: sysconf only reads system configuration.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        pages as u64 * size as u64
    } else {
        0
    }
}

/// `os.hostname()`: `gethostname(2)`, `localhost` if it fails.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the result is
    // NUL-terminated within it when the call succeeds (we also bound it).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match String::from_utf8_lossy(&buf[..end]).trim() {
        "" => "localhost".into(),
        h => h.to_owned(),
    }
}

#[cfg(target_os = "linux")]
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads system configuration.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// libuv's speed source: the current frequency in kHz from cpufreq.
#[cfg(target_os = "linux")]
fn cpufreq_mhz(cpu: usize) -> Option<u64> {
    let p = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq");
    let khz: u64 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
    Some(khz / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10 1 5 100 2 3 0 0 0 0\n\
                        cpu0 4 0 2 50 1 1 0 0 0 0\n\
                        cpu1 6 1 3 50 1 2 0 0 0 0\n\
                        intr 1 2 3\nctxt 5\n";

    #[test]
    fn stat_lists_each_cpu_with_libuv_fields() {
        assert_eq!(
            parse_stat_times(STAT),
            vec![[4, 0, 2, 50, 1], [6, 1, 3, 50, 2]]
        );
        assert!(parse_stat_times("").is_empty());
    }

    #[test]
    fn cpuinfo_fields_in_processor_order() {
        let info = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\ncpu MHz\t\t: 2200.146\n\n\
                    processor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\ncpu MHz\t\t: 2200.000\n";
        assert_eq!(
            parse_cpuinfo_field(info, "model name"),
            vec!["Intel(R) Xeon(R) CPU @ 2.20GHz"; 2]
        );
        assert_eq!(
            parse_cpuinfo_field(info, "cpu MHz"),
            vec!["2200.146", "2200.000"]
        );
    }

    #[test]
    fn node_facts_come_from_the_launcher() {
        let env: HashMap<String, String> = [
            (ENV_NODE_VERSION, "v22.1.0"),
            (ENV_NODE_PATH, "/usr/bin/node"),
            (ENV_CONFIG_FILE, "/pkg/config.json"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let h = detect(&env, None);
        assert_eq!(h.node_version, "v22.1.0");
        assert_eq!(h.node_path.as_deref(), Some(Path::new("/usr/bin/node")));
        assert_eq!(
            h.config_file.as_deref(),
            Some(Path::new("/pkg/config.json"))
        );
        assert!(!h.hostname.is_empty());

        let h = detect(&HashMap::new(), Some(Path::new("/nonexistent/dir/bin")));
        assert_eq!(h.node_version, UNKNOWN_NODE_VERSION);
        assert_eq!(h.node_path, None);
        assert_eq!(h.config_file, None, "no config.json next to the binary");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_host_is_described() {
        let cpus = os_cpus();
        let list = cpus.as_array().unwrap();
        assert!(!list.is_empty());
        assert!(list[0]["model"].is_string());
        assert!(list[0]["times"]["idle"].is_u64());
        assert!(total_mem() > 0);
    }
}
