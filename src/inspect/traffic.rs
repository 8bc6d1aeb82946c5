//! The outgoing-traffic recorder: per channel, counters since the start,
//! bytes per minute and the newest packets, every part of it bounded
//! (docs/inspector.md). The transport hub records each packet it hands to
//! its transporters ([`Traffic::record`]): the packet is serialized outside
//! the lock into a writer that only counts past [`TRUNCATE_AT`], then the
//! lock is held for a few field updates and, at most, evictions.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::common::Packet;

/// Newest packets kept per channel.
pub const MAX_KEPT_PACKETS: usize = 10;
/// Bytes of kept JSON text per channel; older packets give way first.
pub const MAX_KEPT_BYTES: usize = 256 * 1024;
/// A packet whose JSON is longer is kept as its first this many bytes.
pub const TRUNCATE_AT: usize = 64 * 1024;
/// Minutes of history in `per_minute`.
pub const MINUTES: usize = 10;
/// Channels shown; packets of further channels are only counted
/// ([`Snapshot::unlisted_packets`]). The agent uses a dozen.
pub const MAX_CHANNELS: usize = 64;

const MINUTE_MS: u64 = 60_000;
const SECOND_MS: u64 = 1000;
/// One-second slots behind `bytes_last_minute`.
const SECONDS: usize = 60;

/// Milliseconds since the Unix epoch, never going back.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock at the first call plus a monotonic elapsed time: epoch
/// milliseconds that never go back when the system clock is set.
pub fn system_clock() -> Clock {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let start = Instant::now();
    Arc::new(move || base + start.elapsed().as_millis() as u64)
}

/// A clock the tests move by hand.
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn clock(&self) -> Clock {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

/// The packet's JSON text as handed to the transporter: its length, and
/// its text when it is at most [`TRUNCATE_AT`] bytes (else the first
/// [`TRUNCATE_AT`] bytes, cut back to a character boundary).
struct Measured {
    bytes: u64,
    text: Arc<str>,
    truncated: bool,
}

/// An `io::Write` that counts everything and keeps only a prefix.
struct Capture {
    total: u64,
    head: Vec<u8>,
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.total += buf.len() as u64;
        // One byte past the limit tells "longer than" from "exactly".
        let room = (TRUNCATE_AT + 1).saturating_sub(self.head.len());
        self.head.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    channel: &'a str,
    payload: &'a serde_json::Value,
}

fn measure(packet: &Packet) -> Measured {
    let mut cap = Capture {
        total: 0,
        head: Vec::new(),
    };
    // Writing a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(
        &mut cap,
        &Wire {
            channel: &packet.channel,
            payload: &packet.payload,
        },
    );
    let truncated = cap.head.len() > TRUNCATE_AT;
    if truncated {
        cap.head.truncate(TRUNCATE_AT);
    }
    let text = match String::from_utf8(cap.head) {
        Ok(s) => s,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut v = e.into_bytes();
            v.truncate(valid);
            String::from_utf8(v).unwrap_or_default()
        }
    };
    Measured {
        bytes: cap.total,
        text: text.into(),
        truncated,
    }
}

struct Kept {
    at: u64,
    bytes: u64,
    text: Arc<str>,
    truncated: bool,
}

/// A ring of `N` buckets of `width` ms, the newest for time slot `head`.
struct Ring<const N: usize> {
    width: u64,
    head: u64,
    slots: [u64; N],
}

impl<const N: usize> Ring<N> {
    fn new(width: u64, slot: u64) -> Self {
        Ring {
            width,
            head: slot,
            slots: [0; N],
        }
    }

    fn add(&mut self, slot: u64, bytes: u64) {
        if slot > self.head {
            // Slots skipped since the last packet are empty.
            let gap = (slot - self.head).min(N as u64);
            for s in (slot - gap + 1)..=slot {
                self.slots[(s % N as u64) as usize] = 0;
            }
            self.head = slot;
        }
        // A slot older than the ring (the clock never goes back; kept safe).
        if self.head - slot < N as u64 {
            let i = (slot % N as u64) as usize;
            self.slots[i] = self.slots[i].saturating_add(bytes);
        }
    }

    /// Bytes of time slot `slot` (0 when it left the ring or is empty).
    fn get(&self, slot: u64) -> u64 {
        if slot > self.head || self.head - slot >= N as u64 {
            0
        } else {
            self.slots[(slot % N as u64) as usize]
        }
    }

    fn slot_of(&self, since_start: u64) -> u64 {
        since_start / self.width
    }
}

struct Channel {
    packets: u64,
    bytes: u64,
    last: VecDeque<Kept>,
    kept_bytes: usize,
    minutes: Ring<MINUTES>,
    seconds: Ring<SECONDS>,
}

impl Channel {
    fn new(since_start: u64) -> Self {
        Channel {
            packets: 0,
            bytes: 0,
            last: VecDeque::new(),
            kept_bytes: 0,
            minutes: Ring::new(MINUTE_MS, since_start / MINUTE_MS),
            seconds: Ring::new(SECOND_MS, since_start / SECOND_MS),
        }
    }

    fn add(&mut self, since_start: u64, at: u64, m: Measured) {
        self.packets = self.packets.saturating_add(1);
        self.bytes = self.bytes.saturating_add(m.bytes);
        let slot = self.minutes.slot_of(since_start);
        self.minutes.add(slot, m.bytes);
        let slot = self.seconds.slot_of(since_start);
        self.seconds.add(slot, m.bytes);
        self.kept_bytes += m.text.len();
        self.last.push_front(Kept {
            at,
            bytes: m.bytes,
            text: m.text,
            truncated: m.truncated,
        });
        while self.last.len() > MAX_KEPT_PACKETS || self.kept_bytes > MAX_KEPT_BYTES {
            match self.last.pop_back() {
                Some(old) => self.kept_bytes -= old.text.len(),
                None => break,
            }
        }
    }
}

struct State {
    channels: BTreeMap<String, Channel>,
    unlisted: u64,
}

/// See the module documentation. Shared (`Arc`) by the hub and the server.
pub struct Traffic {
    clock: Clock,
    started_at: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic")
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

impl Traffic {
    pub fn new(clock: Clock) -> Self {
        let started_at = clock();
        Traffic {
            clock,
            started_at,
            state: Mutex::new(State {
                channels: BTreeMap::new(),
                unlisted: 0,
            }),
        }
    }

    /// Records `packet` as handed to the transporters now.
    pub fn record(&self, packet: &Packet) {
        let m = measure(packet);
        let at = (self.clock)();
        let since = at.saturating_sub(self.started_at);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.channels.contains_key(&packet.channel) {
            if st.channels.len() >= MAX_CHANNELS {
                st.unlisted = st.unlisted.saturating_add(1);
                if st.unlisted == 1 {
                    tracing::warn!(
                        channel = %packet.channel,
                        max = MAX_CHANNELS,
                        "inspector: too many channels; further ones are only counted"
                    );
                }
                return;
            }
            st.channels
                .insert(packet.channel.clone(), Channel::new(since));
        }
        if let Some(ch) = st.channels.get_mut(&packet.channel) {
            ch.add(since, at, m);
        }
    }

    /// The `/api/traffic` view at the clock's now.
    pub fn snapshot(&self) -> Snapshot {
        let now = (self.clock)();
        let since = now.saturating_sub(self.started_at);
        let minute = since / MINUTE_MS;
        let second = since / SECOND_MS;
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let channels = st
            .channels
            .iter()
            .map(|(name, ch)| {
                let first = minute.saturating_sub(MINUTES as u64 - 1);
                // The current second and the 59 before it.
                let from = second.saturating_sub(SECONDS as u64 - 1);
                ChannelView {
                    channel: name.clone(),
                    packets: ch.packets,
                    bytes: ch.bytes,
                    bytes_last_minute: (from..=second).map(|s| ch.seconds.get(s)).sum(),
                    per_minute: (first..=minute).map(|m| ch.minutes.get(m)).collect(),
                    last: ch
                        .last
                        .iter()
                        .map(|k| KeptView {
                            at: k.at,
                            bytes: k.bytes,
                            truncated: k.truncated,
                            text: k.text.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        Snapshot {
            started_at: self.started_at,
            now,
            channels,
            unlisted_packets: st.unlisted,
        }
    }
}

/// What the recorder holds at one instant, cheap to take (the kept texts
/// are shared) and serialized outside the lock.
#[derive(Debug)]
pub struct Snapshot {
    pub started_at: u64,
    pub now: u64,
    pub channels: Vec<ChannelView>,
    /// Packets of channels beyond [`MAX_CHANNELS`].
    pub unlisted_packets: u64,
}

#[derive(Debug)]
pub struct ChannelView {
    pub channel: String,
    pub packets: u64,
    pub bytes: u64,
    pub bytes_last_minute: u64,
    pub per_minute: Vec<u64>,
    pub last: Vec<KeptView>,
}

#[derive(Debug)]
pub struct KeptView {
    pub at: u64,
    pub bytes: u64,
    pub truncated: bool,
    /// The JSON text, or its first [`TRUNCATE_AT`] bytes when `truncated`.
    pub text: Arc<str>,
}

impl Snapshot {
    /// The `/api/traffic` document (docs/inspector.md), `source: "agent"`.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Doc<'a> {
            source: &'static str,
            started_at: u64,
            now: u64,
            channels: Vec<Chan<'a>>,
            unlisted_packets: u64,
        }
        #[derive(Serialize)]
        struct Chan<'a> {
            channel: &'a str,
            packets: u64,
            bytes: u64,
            bytes_last_minute: u64,
            per_minute: &'a [u64],
            last: Vec<Item<'a>>,
        }
        #[derive(Serialize)]
        struct Item<'a> {
            at: u64,
            bytes: u64,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            truncated: bool,
            data: Data<'a>,
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Data<'a> {
            Json(&'a RawValue),
            Text(&'a str),
        }
        let doc = Doc {
            source: "agent",
            started_at: self.started_at,
            now: self.now,
            unlisted_packets: self.unlisted_packets,
            channels: self
                .channels
                .iter()
                .map(|c| Chan {
                    channel: &c.channel,
                    packets: c.packets,
                    bytes: c.bytes,
                    bytes_last_minute: c.bytes_last_minute,
                    per_minute: &c.per_minute,
                    last: c
                        .last
                        .iter()
                        .map(|k| {
                            let data = match (k.truncated, serde_json::from_str(&k.text)) {
                                (false, Ok(raw)) => Data::Json(raw),
                                // Never happens for a serialized packet;
                                // shown as text rather than as broken JSON.
                                _ => Data::Text(&k.text),
                            };
                            Item {
                                at: k.at,
                                bytes: k.bytes,
                                truncated: k.truncated,
                                data,
                            }
                        })
                        .collect(),
                })
                .collect(),
        };
        serde_json::to_string(&doc).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const T0: u64 = 1_764_800_000_000;

    fn setup() -> (ManualClock, Traffic) {
        let clock = ManualClock::new(T0);
        let t = Traffic::new(clock.clock());
        (clock, t)
    }

    fn wire_len(p: &Packet) -> u64 {
        serde_json::to_string(&json!({"channel": p.channel, "payload": p.payload}))
            .unwrap()
            .len() as u64
    }

    /// A `logs` packet whose JSON text is exactly `len` bytes.
    fn packet_of_len(channel: &str, len: usize) -> Packet {
        let base = wire_len(&Packet::new(channel, json!({"data": ""}))) as usize;
        let p = Packet::new(channel, json!({"data": "x".repeat(len - base)}));
        assert_eq!(wire_len(&p) as usize, len);
        p
    }

    fn doc(t: &Traffic) -> Value {
        serde_json::from_str(&t.snapshot().to_json()).unwrap()
    }

    #[test]
    fn counts_bytes_as_the_json_text_and_keeps_the_packet() {
        let (clock, t) = setup();
        let p = Packet::new("status", json!({"data": {"process": [{"name": "é\"x"}]}}));
        t.record(&p);
        clock.advance(1500);
        t.record(&p);
        let d = doc(&t);
        assert_eq!(d["source"], "agent");
        assert_eq!(d["started_at"], T0);
        assert_eq!(d["now"], T0 + 1500);
        let ch = &d["channels"][0];
        assert_eq!(ch["channel"], "status");
        assert_eq!(ch["packets"], 2);
        assert_eq!(ch["bytes"], 2 * wire_len(&p));
        assert_eq!(ch["bytes_last_minute"], 2 * wire_len(&p));
        assert_eq!(ch["per_minute"], json!([2 * wire_len(&p)]));
        assert_eq!(ch["last"][0]["at"], T0 + 1500, "newest first");
        assert_eq!(ch["last"][1]["at"], T0);
        assert_eq!(ch["last"][0]["bytes"], wire_len(&p));
        assert_eq!(
            ch["last"][0]["data"],
            json!({"channel": "status", "payload": p.payload})
        );
        assert!(ch["last"][0].get("truncated").is_none());
    }

    #[test]
    fn channels_are_sorted_by_name() {
        let (_, t) = setup();
        for c in ["status", "logs", "axm:transaction", "human:event"] {
            t.record(&Packet::new(c, json!({})));
        }
        let d = doc(&t);
        let names: Vec<&str> = d["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["channel"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["axm:transaction", "human:event", "logs", "status"]);
    }

    #[test]
    fn keeps_at_most_ten_packets_per_channel_newest_first() {
        let (clock, t) = setup();
        for i in 0..(MAX_KEPT_PACKETS as u64 + 5) {
            t.record(&Packet::new("logs", json!({"i": i})));
            clock.advance(1);
        }
        t.record(&Packet::new("status", json!({})));
        let s = t.snapshot();
        let logs = &s.channels[0];
        assert_eq!(logs.packets, MAX_KEPT_PACKETS as u64 + 5, "all counted");
        assert_eq!(logs.last.len(), MAX_KEPT_PACKETS);
        let d = doc(&t);
        let kept: Vec<u64> = d["channels"][0]["last"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["data"]["payload"]["i"].as_u64().unwrap())
            .collect();
        assert_eq!(kept, (5..15).rev().collect::<Vec<_>>());
        assert_eq!(s.channels[1].last.len(), 1, "another channel has its own");
    }

    #[test]
    fn keeps_at_most_256_kib_per_channel_oldest_evicted_first() {
        let (_, t) = setup();
        let len = 60 * 1024;
        for _ in 0..5 {
            t.record(&packet_of_len("profiling", len));
        }
        let s = t.snapshot();
        let ch = &s.channels[0];
        assert_eq!(ch.packets, 5);
        assert_eq!(ch.bytes, 5 * len as u64);
        // 4 × 60 KiB fit in 256 KiB, a fifth does not.
        assert_eq!(ch.last.len(), 4);
        let kept: usize = ch.last.iter().map(|k| k.text.len()).sum();
        assert!(kept <= MAX_KEPT_BYTES, "{kept}");
        // Exactly at the bound is allowed: 4 × 64 KiB.
        let (_, t) = setup();
        for _ in 0..5 {
            t.record(&packet_of_len("profiling", TRUNCATE_AT));
        }
        let s = t.snapshot();
        assert_eq!(s.channels[0].last.len(), 4);
        let kept: usize = s.channels[0].last.iter().map(|k| k.text.len()).sum();
        assert_eq!(kept, MAX_KEPT_BYTES);
    }

    #[test]
    fn truncates_a_packet_over_64_kib() {
        let (_, t) = setup();
        // Exactly 64 KiB: kept whole.
        let whole = packet_of_len("profiling", TRUNCATE_AT);
        t.record(&whole);
        let d = doc(&t);
        let k = &d["channels"][0]["last"][0];
        assert!(k.get("truncated").is_none());
        assert_eq!(k["data"]["payload"], whole.payload);
        // One byte more: truncated to its first 64 KiB, as text.
        let (_, t) = setup();
        let big = packet_of_len("profiling", TRUNCATE_AT + 1);
        t.record(&big);
        let d = doc(&t);
        let k = &d["channels"][0]["last"][0];
        assert_eq!(k["truncated"], true);
        assert_eq!(k["bytes"], TRUNCATE_AT as u64 + 1);
        let text = k["data"].as_str().unwrap();
        assert_eq!(text.len(), TRUNCATE_AT);
        let full = serde_json::to_string(&json!({"channel": big.channel, "payload": big.payload}))
            .unwrap();
        assert_eq!(text, &full[..TRUNCATE_AT]);
        // A huge one: the count is exact, the kept text still 64 KiB.
        let (_, t) = setup();
        let huge = packet_of_len("profiling", 3 << 20);
        t.record(&huge);
        let s = t.snapshot();
        assert_eq!(s.channels[0].bytes, 3 << 20);
        assert_eq!(s.channels[0].last[0].text.len(), TRUNCATE_AT);
    }

    #[test]
    fn truncation_never_splits_a_character() {
        let (_, t) = setup();
        // `{"channel":"logs","payload":{"data":"` is 37 bytes: with a
        // 2-byte character from there on, byte 64 Ki falls inside one.
        let p = Packet::new("logs", json!({"data": "é".repeat(40_000)}));
        t.record(&p);
        let s = t.snapshot();
        let k = &s.channels[0].last[0];
        assert!(k.truncated);
        assert_eq!(k.text.len(), TRUNCATE_AT - 1);
        assert!(k.text.ends_with('é'));
    }

    #[test]
    fn per_minute_rolls_over_with_the_clock() {
        let (clock, t) = setup();
        let p = packet_of_len("status", 100);
        t.record(&p);
        assert_eq!(t.snapshot().channels[0].per_minute, [100]);
        clock.advance(MINUTE_MS);
        t.record(&p);
        t.record(&p);
        assert_eq!(t.snapshot().channels[0].per_minute, [100, 200]);
        // Quiet minutes show as zeros, the current one last.
        clock.advance(3 * MINUTE_MS);
        assert_eq!(t.snapshot().channels[0].per_minute, [100, 200, 0, 0, 0]);
        t.record(&p);
        assert_eq!(t.snapshot().channels[0].per_minute, [100, 200, 0, 0, 100]);
        // At most ten minutes, oldest first: minute 0 leaves at minute 10.
        clock.set(T0 + 9 * MINUTE_MS);
        let pm = t.snapshot().channels[0].per_minute.clone();
        assert_eq!(pm.len(), MINUTES);
        assert_eq!(pm, [100, 200, 0, 0, 100, 0, 0, 0, 0, 0]);
        clock.set(T0 + 10 * MINUTE_MS);
        t.record(&p);
        assert_eq!(
            t.snapshot().channels[0].per_minute,
            [200, 0, 0, 100, 0, 0, 0, 0, 0, 100]
        );
        // A long silence clears every slot, recorded or not.
        clock.set(T0 + 100 * MINUTE_MS);
        assert_eq!(t.snapshot().channels[0].per_minute, [0; MINUTES]);
        t.record(&p);
        let mut want = [0; MINUTES];
        want[MINUTES - 1] = 100;
        assert_eq!(t.snapshot().channels[0].per_minute, want);
        assert_eq!(t.snapshot().channels[0].bytes, 6 * 100, "totals stay");
    }

    #[test]
    fn a_channel_first_seen_late_has_zeros_before_it() {
        let (clock, t) = setup();
        clock.advance(2 * MINUTE_MS + 5);
        t.record(&packet_of_len("logs", 50));
        assert_eq!(t.snapshot().channels[0].per_minute, [0, 0, 50]);
    }

    #[test]
    fn bytes_last_minute_is_the_last_60_seconds() {
        let (clock, t) = setup();
        let p = packet_of_len("status", 100);
        t.record(&p); // second 0
        clock.advance(30 * SECOND_MS);
        t.record(&p); // second 30
        assert_eq!(t.snapshot().channels[0].bytes_last_minute, 200);
        clock.set(T0 + 59 * SECOND_MS + 999);
        assert_eq!(t.snapshot().channels[0].bytes_last_minute, 200);
        clock.set(T0 + 60 * SECOND_MS);
        assert_eq!(t.snapshot().channels[0].bytes_last_minute, 100);
        t.record(&p); // second 60
        assert_eq!(t.snapshot().channels[0].bytes_last_minute, 200);
        clock.set(T0 + 120 * SECOND_MS);
        assert_eq!(t.snapshot().channels[0].bytes_last_minute, 0);
        clock.set(T0 + 1000 * SECOND_MS);
        t.record(&p);
        assert_eq!(t.snapshot().channels[0].bytes_last_minute, 100);
    }

    #[test]
    fn channels_beyond_the_bound_are_only_counted() {
        let (_, t) = setup();
        for i in 0..MAX_CHANNELS + 3 {
            t.record(&Packet::new(format!("c{i:03}"), json!({})));
        }
        // A known channel still records once the bound is reached.
        t.record(&Packet::new("c000", json!({})));
        let s = t.snapshot();
        assert_eq!(s.channels.len(), MAX_CHANNELS);
        assert_eq!(s.unlisted_packets, 3);
        assert_eq!(s.channels[0].packets, 2);
        assert_eq!(doc(&t)["unlisted_packets"], 3);
    }

    #[test]
    fn counters_saturate() {
        let mut r = Ring::<3>::new(1, 0);
        r.add(0, u64::MAX);
        r.add(0, 5);
        assert_eq!(r.get(0), u64::MAX);
        // A slot older than the ring is ignored, never indexed wrongly.
        r.add(10, 1);
        r.add(2, 7);
        assert_eq!(r.get(2), 0);
        assert_eq!(r.get(10), 1);
    }
}
