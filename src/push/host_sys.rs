//! The host figures where there is no procfs (macOS, Windows, the BSDs),
//! through the `sysinfo` crate with only its `system` part, asked for only
//! what the status carries: RAM (not swap, not processes), the load
//! average, the uptime, the host name, the CPU list once, and the
//! interfaces' addresses for `internal_ip`.
//!
//! Linux keeps its procfs reads ([`super::host`]): they are what libuv reads
//! there, with no dependency and nothing cached. On Linux this module is
//! compiled for the tests only, which check it against procfs.
//!
//! Where Node and sysinfo differ, Node's meaning wins:
//! - `os.freemem()` is `free_memory()` (macOS: free pages; Windows:
//!   `ullAvailPhys`, as libuv);
//! - `os.loadavg()` is `[0, 0, 0]` on Windows, as Node answers; sysinfo's
//!   own estimate there would need a PDH counter refreshed in the
//!   background, which is never started.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};

use super::host::{CpuMeta, HostStats};

/// One `System` for the whole process (on macOS it holds the Mach host port
/// and the page size), created at the first reading.
static SYSTEM: Mutex<Option<System>> = Mutex::new(None);

/// `os.uptime()`, `os.loadavg()`, `os.totalmem()`, `os.freemem()`.
pub(crate) fn stats() -> HostStats {
    let mut guard = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let sys = guard.get_or_insert_with(System::new);
    sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    HostStats {
        uptime: System::uptime() as f64,
        loadavg: load_average(),
        total_mem: sys.total_memory(),
        free_mem: sys.free_memory().min(sys.total_memory()),
    }
}

fn load_average() -> [f64; 3] {
    if cfg!(windows) {
        return [0.0; 3];
    }
    let l = System::load_average();
    [l.one, l.five, l.fifteen].map(|v| if v.is_finite() && v >= 0.0 { v } else { 0.0 })
}

/// `os.hostname()`; `None` when the OS does not say.
pub(crate) fn hostname() -> Option<String> {
    System::host_name()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The CPUs as sysinfo lists them, `(brand, MHz)` each, read once (no usage
/// sampling: the refresh asks for nothing beyond the list).
pub(crate) fn cpus() -> Vec<(String, u64)> {
    let sys =
        System::new_with_specifics(RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()));
    sys.cpus()
        .iter()
        .map(|c| (c.brand().trim().to_owned(), c.frequency()))
        .collect()
}

/// `cpuMeta` from [`cpus`]: the count, and the first model (`no-data`
/// when there is none, as with an empty `os.cpus()`).
pub(crate) fn cpu_meta() -> CpuMeta {
    let list = cpus();
    let number = if list.is_empty() {
        std::thread::available_parallelism().map_or(0, |n| n.get())
    } else {
        list.len()
    };
    let info = list
        .first()
        .map(|(brand, _)| brand.clone())
        .filter(|b| !b.is_empty() && number > 0)
        .unwrap_or_else(|| CpuMeta::NO_DATA.to_owned());
    CpuMeta { number, info }
}

/// `Utility.network`'s address where there is no procfs: the last
/// non-loopback IPv4 address, interfaces taken in name order (sysinfo does
/// not keep the OS's interface order, so where Node would break a tie
/// between interfaces by index, this breaks it by name). `None`: no such
/// address (the caller answers `127.0.0.1`, as Node's scan does).
pub(crate) fn internal_ip() -> Option<Ipv4Addr> {
    let networks = Networks::new_with_refreshed_list();
    let mut interfaces: Vec<_> = networks.iter().collect();
    interfaces.sort_by(|a, b| a.0.cmp(b.0));
    last_external_ipv4(
        interfaces
            .iter()
            .flat_map(|(_, data)| data.ip_networks().iter().map(|n| n.addr)),
    )
}

/// The last IPv4 address of `addrs` that is not loopback (what Node calls
/// internal).
fn last_external_ipv4(addrs: impl IntoIterator<Item = IpAddr>) -> Option<Ipv4Addr> {
    addrs
        .into_iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_plausible() {
        let s = stats();
        assert!(s.uptime > 0.0, "{s:?}");
        assert!(s.total_mem > 0, "{s:?}");
        assert!(s.free_mem > 0 && s.free_mem <= s.total_mem, "{s:?}");
        assert!(s.loadavg.iter().all(|v| *v >= 0.0), "{s:?}");
        // A second reading reuses the System.
        assert_eq!(stats().total_mem, s.total_mem);
        assert!(hostname().is_some());
        let cpu = cpu_meta();
        assert!(cpu.number > 0, "{cpu:?}");
        assert!(!cpu.info.is_empty(), "{cpu:?}");
    }

    #[test]
    fn internal_ip_is_the_last_external_ipv4() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            last_external_ipv4([
                a("127.0.0.1"),
                a("10.0.0.2"),
                a("fe80::1"),
                a("192.168.1.9"),
                a("::1")
            ]),
            Some(Ipv4Addr::new(192, 168, 1, 9))
        );
        assert_eq!(last_external_ipv4([a("127.0.0.1"), a("::1")]), None);
        assert_eq!(last_external_ipv4([]), None);
    }

    /// On Linux both readings exist: they must agree where they read the
    /// same kernel figures.
    #[cfg(target_os = "linux")]
    #[test]
    fn agrees_with_procfs() {
        let proc = HostStats::read_procfs();
        let sys = stats();
        assert_eq!(sys.total_mem, proc.total_mem);
        assert!((sys.uptime - proc.uptime).abs() < 5.0, "{sys:?} {proc:?}");
        let host = super::super::host::HostIdentity::detect();
        assert_eq!(hostname().as_deref(), Some(host.hostname.as_str()));
        let meta = cpu_meta();
        assert_eq!(meta.number, host.cpu.number);
        assert_eq!(meta.info, host.cpu.info);
        // The address is one of the kernel's local ones (the pick among
        // several may differ: procfs keeps the interface index order).
        let fib = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
        let procfs = super::super::host::pick_internal_ip(&fib, "", "");
        match internal_ip() {
            Some(ip) => assert!(fib.contains(&ip.to_string()), "{ip} not local"),
            None => assert_eq!(procfs, None),
        }
    }
}
