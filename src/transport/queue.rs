//! A route's packets in order, with what they weigh: the queues are bounded
//! in bytes (and, while nothing carries them, in packets like the JS
//! agent's offline queue), never only in packet counts.
//!
//! Profiles are the exception: one heap snapshot can weigh tens of
//! megabytes, more than the whole byte budget, and a user asked for it; so
//! they are not weighed but bounded by count ([`MAX_PROFILES`]).

use std::collections::VecDeque;

use crate::common::Packet;

/// Profiles a queue holds at most (the oldest give way).
pub const MAX_PROFILES: usize = 2;

#[derive(Debug, Default)]
pub struct Queue {
    items: VecDeque<(Packet, usize)>,
    bytes: usize,
    profiles: usize,
}

fn is_profile(p: &Packet) -> bool {
    p.channel == "profiling"
}

/// What a packet counts for in the byte budget.
fn weight(p: &Packet) -> usize {
    if is_profile(p) {
        0
    } else {
        p.approx_bytes()
    }
}

impl Queue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// About the bytes queued ([`Packet::approx_bytes`]), profiles aside.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn profiles(&self) -> usize {
        self.profiles
    }

    pub fn push_back(&mut self, p: Packet) {
        let n = self.count_in(&p);
        self.items.push_back((p, n));
    }

    pub fn push_front(&mut self, p: Packet) {
        let n = self.count_in(&p);
        self.items.push_front((p, n));
    }

    fn count_in(&mut self, p: &Packet) -> usize {
        let n = weight(p);
        self.bytes += n;
        self.profiles += usize::from(is_profile(p));
        n
    }

    fn count_out(&mut self, p: &Packet, n: usize) {
        self.bytes -= n;
        self.profiles -= usize::from(is_profile(p));
    }

    pub fn pop_front(&mut self) -> Option<Packet> {
        let (p, n) = self.items.pop_front()?;
        self.count_out(&p, n);
        Some(p)
    }

    /// Whether the first packet satisfies `pred`.
    pub fn front_is(&self, pred: impl Fn(&Packet) -> bool) -> bool {
        self.items.front().is_some_and(|(p, _)| pred(p))
    }

    /// The oldest profile.
    pub fn pop_oldest_profile(&mut self) -> Option<Packet> {
        let i = self.items.iter().position(|(p, _)| is_profile(p))?;
        let (p, n) = self.items.remove(i)?;
        self.count_out(&p, n);
        Some(p)
    }

    /// Up to `max` packets and about `max_bytes` (at least one packet when
    /// any is queued), oldest first.
    pub fn take(&mut self, max: usize, max_bytes: usize) -> Vec<Packet> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max {
            match self.items.front() {
                Some((_, n)) if out.is_empty() || bytes + n <= max_bytes => {
                    bytes += n;
                    out.extend(self.pop_front());
                }
                _ => break,
            }
        }
        out
    }

    /// Removes the packets `drop` says, returning them (to be counted).
    pub fn remove_where(&mut self, mut drop: impl FnMut(&Packet) -> bool) -> Vec<Packet> {
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(self.items.len());
        for (p, n) in std::mem::take(&mut self.items) {
            if drop(&p) {
                self.count_out(&p, n);
                removed.push(p);
            } else {
                kept.push_back((p, n));
            }
        }
        self.items = kept;
        removed
    }

    pub fn drain(&mut self) -> Vec<Packet> {
        self.bytes = 0;
        self.profiles = 0;
        self.items.drain(..).map(|(p, _)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(i: u64) -> Packet {
        Packet::new("human:event", json!({ "i": i }))
    }

    #[test]
    fn keeps_order_and_weight() {
        let mut q = Queue::default();
        for i in 0..5 {
            q.push_back(ev(i));
        }
        let one = ev(0).approx_bytes();
        assert_eq!(q.bytes(), 5 * one);
        q.push_front(ev(9));
        let took = q.take(10, 2 * one);
        assert_eq!(
            took.iter()
                .map(|p| p.payload["i"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [9, 0]
        );
        assert_eq!(q.bytes(), 4 * one);
        // One packet bigger than the budget still goes (never stuck).
        assert_eq!(q.take(10, 0).len(), 1);
        let removed = q.remove_where(|p| p.payload["i"] == 2);
        assert_eq!(removed.len(), 1);
        assert_eq!(q.len(), 2);
        assert_eq!(q.drain().len(), 2);
        assert_eq!((q.bytes(), q.is_empty()), (0, true));
    }

    #[test]
    fn profiles_are_counted_not_weighed() {
        let mut q = Queue::default();
        q.push_back(Packet::new(
            "profiling",
            json!({"data": "x".repeat(1 << 20)}),
        ));
        q.push_back(ev(1));
        q.push_back(Packet::new("profiling", json!({"data": "y"})));
        assert_eq!((q.profiles(), q.bytes()), (2, ev(1).approx_bytes()));
        let p = q.pop_oldest_profile().unwrap();
        assert_eq!(p.payload["data"].as_str().unwrap().len(), 1 << 20);
        assert_eq!((q.profiles(), q.len()), (1, 2));
    }
}
