//! The host's figures for the status `server` entry, read at the rate they
//! change rather than on every tick.
//!
//! The JS agent calls `os.loadavg()`, `os.freemem()` and `os.uptime()` on
//! every status (each a procfs read in libuv). The kernel recomputes the
//! load average every 5 seconds, and free memory seen 5 seconds late is
//! as good for a dashboard, so [`HostSampler`] reads the OS (`/proc` on
//! Linux, sysinfo elsewhere: [`HostStats::read`]) at most every
//! [`HostSampler::REFRESH`] and derives the uptime in between from the
//! monotonic clock: the same values, with two reads every 5 s instead of
//! three each second.

use std::time::{Duration, Instant};

use super::host::HostStats;

/// Cached [`HostStats`], read again from the OS when older than
/// [`HostSampler::REFRESH`].
#[derive(Debug, Default)]
pub struct HostSampler {
    last: Option<(HostStats, Instant)>,
}

impl HostSampler {
    /// How long a reading of the OS is reused.
    pub const REFRESH: Duration = Duration::from_secs(5);

    pub fn new() -> HostSampler {
        HostSampler::default()
    }

    /// The figures at `now`: the OS read again when the last reading is
    /// [`Self::REFRESH`] old, else that reading with the uptime moved on.
    pub fn sample(&mut self, now: Instant) -> HostStats {
        self.sample_with(now, HostStats::read)
    }

    /// [`Self::sample`] with the reader given (tests).
    fn sample_with(&mut self, now: Instant, read: impl FnOnce() -> HostStats) -> HostStats {
        match self.last {
            Some((stats, at)) if now.saturating_duration_since(at) < Self::REFRESH => HostStats {
                uptime: advance_uptime(stats.uptime, now.saturating_duration_since(at)),
                ..stats
            },
            _ => {
                let stats = read();
                self.last = Some((stats, now));
                stats
            }
        }
    }
}

/// `uptime` seconds later by `elapsed`, with the two decimals `/proc/uptime`
/// (hence `os.uptime()`) has. An unknown uptime (0) stays unknown.
fn advance_uptime(uptime: f64, elapsed: Duration) -> f64 {
    if uptime <= 0.0 {
        return uptime;
    }
    ((uptime + elapsed.as_secs_f64()) * 100.0).floor() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: HostStats = HostStats {
        uptime: 100.25,
        loadavg: [1.5, 1.0, 0.5],
        total_mem: 1000,
        free_mem: 500,
    };

    #[test]
    fn reads_proc_once_per_refresh_and_moves_the_uptime_on() {
        let mut s = HostSampler::new();
        let t0 = Instant::now();
        assert_eq!(s.sample_with(t0, || STATS), STATS);
        // Within the refresh period: no read, uptime advanced.
        let later = s.sample_with(t0 + Duration::from_millis(1500), || unreachable!());
        assert_eq!(later.uptime, 101.75);
        assert_eq!(later.loadavg, STATS.loadavg);
        assert_eq!(later.free_mem, 500);
        // Refresh due: read again.
        let fresh = HostStats {
            free_mem: 400,
            ..STATS
        };
        assert_eq!(
            s.sample_with(t0 + HostSampler::REFRESH, || fresh).free_mem,
            400
        );
    }

    #[test]
    fn uptime_keeps_two_decimals_and_unknown_stays_zero() {
        assert_eq!(advance_uptime(10.0, Duration::from_millis(1234)), 11.23);
        assert_eq!(advance_uptime(0.0, Duration::from_secs(3)), 0.0);
    }

    #[test]
    fn live_sample_is_plausible() {
        let mut s = HostSampler::new();
        let a = s.sample(Instant::now());
        let b = s.sample(Instant::now());
        assert!(b.uptime >= a.uptime);
        assert_eq!((a.total_mem, a.loadavg), (b.total_mem, b.loadavg));
    }
}
