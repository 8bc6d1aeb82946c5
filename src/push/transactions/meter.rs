//! `Utility.EWMA` of the JS agent (node-measured's
//! ExponentiallyMovingWeightedAverage): events are counted, and every 5 s
//! the count becomes an instant rate folded into a 1-minute moving average.
//!
//! JS ticks each meter with its own `setInterval` started at construction.
//! Here a meter remembers when its next tick is due and applies the ticks
//! that are past on every use, which gives the same sequence of ticks with
//! no timer per meter.

/// `_tickInterval`.
pub const TICK_MS: u64 = 5_000;
/// `_timePeriod`.
pub const TIME_PERIOD_MS: f64 = 60_000.0;
/// After this many idle ticks (≈ 14 h) the rate is below any printable
/// value (it underflows long before); the rest is skipped instead of looped.
const MAX_CATCH_UP_TICKS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct Meter {
    count: f64,
    rate: f64,
    next_tick_ms: u64,
}

fn alpha() -> f64 {
    1.0 - (-(TICK_MS as f64) / TIME_PERIOD_MS).exp()
}

impl Meter {
    /// A meter created at `now_ms` (its first tick is 5 s later).
    pub fn new(now_ms: u64) -> Self {
        Meter {
            count: 0.0,
            rate: 0.0,
            next_tick_ms: now_ms.saturating_add(TICK_MS),
        }
    }

    /// `update(n)`: `n` events now.
    pub fn update(&mut self, now_ms: u64, n: f64) {
        self.catch_up(now_ms);
        self.count += n;
    }

    /// `rate(unit)`: events per `unit_ms`.
    pub fn rate(&mut self, now_ms: u64, unit_ms: f64) -> f64 {
        self.catch_up(now_ms);
        self.rate * unit_ms
    }

    /// Runs the ticks due at or before `now_ms`.
    fn catch_up(&mut self, now_ms: u64) {
        if self.next_tick_ms > now_ms {
            return;
        }
        let due = (now_ms - self.next_tick_ms) / TICK_MS + 1;
        let run = due.min(MAX_CATCH_UP_TICKS);
        for _ in 0..run {
            self.tick();
        }
        if due > run {
            // The skipped idle ticks would only have decayed it further.
            self.rate = 0.0;
            self.count = 0.0;
        }
        self.next_tick_ms = self
            .next_tick_ms
            .saturating_add(due.saturating_mul(TICK_MS));
    }

    fn tick(&mut self) {
        let instant = self.count / TICK_MS as f64;
        self.count = 0.0;
        self.rate += alpha() * (instant - self.rate);
    }
}
