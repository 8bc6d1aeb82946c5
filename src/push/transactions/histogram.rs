//! The JS agent's `utils/probes/Histogram` over `utils/EDS`
//! (ExponentiallyDecayingSample, from felixge/node-measured) with its
//! `BinaryHeap`, transliterated so that the same updates, times and random
//! numbers give the same reservoir and so the same percentiles.
//!
//! Time and randomness are passed in (`now_ms`, [`RandomSource`]) instead of
//! `Date.now()`/`Math.random()`, which is what makes the JS values
//! reproducible in tests.

/// Reservoir size (`EDS.SIZE`).
pub const RESERVOIR_SIZE: usize = 1028;
/// Decay factor (`EDS.ALPHA`).
pub const ALPHA: f64 = 0.015;
/// Priorities are rescaled this often (`EDS.RESCALE_INTERVAL`, 1 h) so the
/// exponential weights do not overflow.
pub const RESCALE_INTERVAL_MS: u64 = 3_600_000;

/// `Math.random()`: a float in `[0, 1)`.
pub trait RandomSource: Send {
    fn next_f64(&mut self) -> f64;
}

/// mulberry32: tiny, fast, good enough for reservoir sampling, and easy to
/// run identically in JS (the fixture generator stubs `Math.random` with it).
#[derive(Debug, Clone)]
pub struct Mulberry32 {
    state: u32,
}

impl Mulberry32 {
    pub fn new(seed: u32) -> Self {
        Mulberry32 { state: seed }
    }

    /// Seeded from the process' hash randomness and the clock: sampling only
    /// needs to differ between runs, not to be secure.
    pub fn from_entropy() -> Self {
        Mulberry32::new(crate::entropy::entropy_u64() as u32)
    }
}

impl RandomSource for Mulberry32 {
    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x6D2B_79F5);
        let mut t = self.state;
        t = (t ^ (t >> 15)).wrapping_mul(t | 1);
        t ^= t.wrapping_add((t ^ (t >> 7)).wrapping_mul(t | 61));
        f64::from(t ^ (t >> 14)) / 4_294_967_296.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Element {
    priority: f64,
    value: f64,
}

/// `ExponentiallyDecayingSample`: a reservoir of at most
/// [`RESERVOIR_SIZE`] values, biased towards recent ones, kept in a binary
/// heap whose root is the lowest priority (heap score = `-priority`).
#[derive(Debug, Clone, Default)]
struct Eds {
    elements: Vec<Element>,
    landmark: Option<u64>,
    next_rescale: u64,
}

/// The heap's `_score`: higher scores bubble up.
fn score(e: &Element) -> f64 {
    -e.priority
}

impl Eds {
    fn update(&mut self, value: f64, now_ms: u64, rng: &mut dyn RandomSource) {
        let landmark = *self.landmark.get_or_insert_with(|| {
            self.next_rescale = now_ms.saturating_add(RESCALE_INTERVAL_MS);
            now_ms
        });
        let element = Element {
            priority: priority(now_ms as f64 - landmark as f64, rng),
            value,
        };
        if self.elements.len() < RESERVOIR_SIZE {
            self.add(element);
        } else if self
            .elements
            .first()
            .is_some_and(|first| element.priority > first.priority)
        {
            self.remove_first();
            self.add(element);
        }
        if now_ms >= self.next_rescale {
            self.rescale(now_ms, rng);
        }
    }

    /// Multiplies every priority by the decay since the old landmark (the
    /// heap order is unchanged: one positive factor for all). Like JS, this
    /// draws one random number.
    fn rescale(&mut self, now_ms: u64, rng: &mut dyn RandomSource) {
        let old = self.landmark.unwrap_or(now_ms);
        self.landmark = Some(now_ms);
        self.next_rescale = now_ms.saturating_add(RESCALE_INTERVAL_MS);
        let factor = priority(-(now_ms as f64 - old as f64), rng);
        for e in &mut self.elements {
            e.priority *= factor;
        }
    }

    fn add(&mut self, element: Element) {
        // Grow straight to the reservoir size instead of doubling past it.
        if self.elements.len() == self.elements.capacity() {
            let want = (self.elements.capacity() * 2)
                .clamp(4, RESERVOIR_SIZE)
                .saturating_sub(self.elements.len());
            self.elements.reserve_exact(want.max(1));
        }
        self.elements.push(element);
        self.bubble(self.elements.len() - 1);
    }

    fn remove_first(&mut self) {
        let Some(last) = self.elements.pop() else {
            return;
        };
        if !self.elements.is_empty() {
            self.elements[0] = last;
            self.sink(0);
        }
    }

    fn bubble(&mut self, mut index: usize) {
        let bubble_score = score(&self.elements[index]);
        while index > 0 {
            let parent = (index - 1) / 2;
            // JS: `if (bubbleScore <= parentScore) break` (NaN never breaks).
            if bubble_score <= score(&self.elements[parent]) {
                break;
            }
            self.elements.swap(parent, index);
            index = parent;
        }
    }

    fn sink(&mut self, mut index: usize) {
        let len = self.elements.len();
        let sink_score = score(&self.elements[index]);
        loop {
            let mut swap: Option<(usize, f64)> = None;
            for child in [2 * index + 1, 2 * index + 2] {
                if child >= len {
                    break;
                }
                let child_score = score(&self.elements[child]);
                if child_score > sink_score && swap.is_none_or(|(_, s)| s < child_score) {
                    swap = Some((child, child_score));
                }
            }
            let Some((to, _)) = swap else { break };
            self.elements.swap(index, to);
            index = to;
        }
    }

    /// `toArray()`: the values in heap order.
    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.elements.iter().map(|e| e.value)
    }
}

/// `_priority(age) = exp(α·age/1000) / Math.random()` (a zero draw gives
/// `Infinity`, as in JS; the float comparisons then behave the same).
fn priority(age_ms: f64, rng: &mut dyn RandomSource) -> f64 {
    (ALPHA * (age_ms / 1000.0)).exp() / rng.next_f64()
}

/// `Histogram`: min/max/count over every update, percentiles over the
/// reservoir.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    sample: Eds,
    min: Option<f64>,
    max: Option<f64>,
    count: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, value: f64, now_ms: u64, rng: &mut dyn RandomSource) {
        self.count += 1;
        self.sample.update(value, now_ms, rng);
        if self.min.is_none_or(|m| value < m) {
            self.min = Some(value);
        }
        if self.max.is_none_or(|m| value > m) {
            self.max = Some(value);
        }
    }

    pub fn min(&self) -> Option<f64> {
        self.min
    }

    pub fn max(&self) -> Option<f64> {
        self.max
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// One percentile (`0.5` = median) of the reservoir; `None` when empty.
    /// Position `p·(n+1)` with linear interpolation, clamped to the ends.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        self.percentiles(&[p]).pop().flatten()
    }

    /// Several percentiles from one sort (JS `percentiles([…])`).
    pub fn percentiles(&self, ps: &[f64]) -> Vec<Option<f64>> {
        let mut values: Vec<f64> = self.sample.values().collect();
        // Values are finite (durations); a NaN would compare equal, like the
        // JS comparator `a - b` returning NaN.
        values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        ps.iter()
            .map(|&p| {
                let n = values.len();
                if n == 0 {
                    return None;
                }
                let pos = p * (n as f64 + 1.0);
                Some(if pos < 1.0 {
                    values[0]
                } else if pos >= n as f64 {
                    values[n - 1]
                } else {
                    let lower = values[pos.floor() as usize - 1];
                    let upper = values[pos.ceil() as usize - 1];
                    lower + (pos - pos.floor()) * (upper - lower)
                })
            })
            .collect()
    }

    /// Values held in the reservoir (≤ [`RESERVOIR_SIZE`]).
    pub fn reservoir_len(&self) -> usize {
        self.sample.elements.len()
    }
}
