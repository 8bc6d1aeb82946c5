//! Checks against values computed by the JS implementation
//! (`src/push/testdata/gen_transactions.js` → `transactions_*.json`), and
//! the bounds.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::jsval::{censor, date_ms};
use super::paths::js_key_order;
use super::*;
use crate::push::context::{SourceCache, SourceReader};

const UNITS: &str = include_str!("../testdata/transactions_units.json");
const SCENARIO: &str = include_str!("../testdata/transactions_scenario.json");

fn units() -> Value {
    serde_json::from_str(UNITS).unwrap()
}

struct Files(Vec<(String, String)>);

impl SourceReader for Files {
    fn read(&self, path: &Path, _max: u64) -> Option<Vec<u8>> {
        self.0
            .iter()
            .find(|(p, _)| Path::new(p) == path)
            .map(|(_, c)| c.clone().into_bytes())
    }
}

fn context(files: Vec<(String, String)>) -> StackContext {
    StackContext::new(SourceCache::new(Box::new(Files(files))))
}

fn aggregator(cfg: TransactionConfig, t0: Instant) -> TransactionAggregator {
    TransactionAggregator::with_parts(cfg, t0, Box::new(Mulberry32::new(7)), context(vec![]))
}

#[test]
fn mulberry32_matches_js() {
    // First draws of the generator the fixtures stub Math.random with.
    let mut r = Mulberry32::new(1);
    let first: Vec<f64> = (0..3).map(|_| r.next_f64()).collect();
    assert_eq!(
        first,
        [0.6270739405881613, 0.002735721180215478, 0.5274470399599522]
    );
}

#[test]
fn censoring_matches_js() {
    let u = units();
    let cases = u["censor"].as_array().unwrap();
    assert!(cases.len() > 400);
    for c in cases {
        let (input, want) = (c[0].as_str().unwrap(), c[1].as_str().unwrap());
        let got = censor(input).unwrap_or_else(|| input.to_owned());
        assert_eq!(got, want, "censor({input:?})");
    }
}

#[test]
fn identifiers_match_js() {
    let u = units();
    for c in u["identifier"].as_array().unwrap() {
        let s = c[0].as_str().unwrap();
        assert_eq!(
            is_identifier(s),
            c[1].as_bool().unwrap(),
            "isIdentifier({s:?})"
        );
    }
}

#[test]
fn dates_match_js() {
    let u = units();
    let mut wrong = Vec::new();
    for c in u["dates"].as_array().unwrap() {
        let got = date_ms(Some(&c[0]));
        let want = c[1].as_f64();
        // V8's legacy (non-ISO) parser: not supported, the span is dropped.
        if c[0] == "2016-1-1" {
            assert_eq!(got, None);
            continue;
        }
        if got != want {
            wrong.push(format!("new Date({}) = {want:?}, got {got:?}", c[0]));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn route_matching_matches_js() {
    let u = units();
    let mut differing = 0;
    for case in u["match_path"].as_array().unwrap() {
        if case["original_differs"] == json!(true) {
            differing += 1;
        }
        let mut keys: Vec<String> = Vec::new();
        for step in case["steps"].as_array().unwrap() {
            let path = step["path"].as_str().unwrap();
            let matched = if path.is_empty() {
                // JS: `if (!path) return false` → always "new" (same key).
                if !keys.iter().any(|k| k.is_empty()) {
                    keys.push(String::new());
                }
                None
            } else {
                match match_route(path, keys.iter().map(String::as_str)) {
                    RouteMatch::Existing(i) | RouteMatch::Wildcard(i) => Some(keys[i].clone()),
                    RouteMatch::Rename { index, key } => {
                        keys.remove(index);
                        keys.push(key.clone());
                        Some(key)
                    }
                    RouteMatch::New => {
                        keys.push(path.to_owned());
                        None
                    }
                }
            };
            let want = step["matched"].as_str().map(str::to_owned);
            assert_eq!(matched, want, "matchPath({path:?}) in {case}");
            let ordered: Vec<&str> = js_key_order(keys.iter().map(String::as_str))
                .into_iter()
                .map(|i| keys[i].as_str())
                .collect();
            let want_keys: Vec<&str> = step["routes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            assert_eq!(ordered, want_keys, "routes after {path:?} in {case}");
        }
    }
    // The fixes are visible in the data (the unpatched JS disagrees there).
    assert!(differing > 0);
}

#[test]
fn histogram_percentiles_match_js() {
    let u = units();
    for case in u["histograms"].as_array().unwrap() {
        let mut rng = Mulberry32::new(case["seed"].as_u64().unwrap() as u32);
        let mut h = Histogram::new();
        let updates = case["updates"].as_array().unwrap();
        let mut checkpoints = case["checkpoints"].as_array().unwrap().iter().peekable();
        for (i, u) in updates.iter().enumerate() {
            h.update(u[0].as_f64().unwrap(), u[1].as_u64().unwrap(), &mut rng);
            while let Some(cp) =
                checkpoints.next_if(|cp| cp["after"].as_u64() == Some(i as u64 + 1))
            {
                let p = h.percentiles(&[0.5, 0.75, 0.95, 0.99, 0.999]);
                let what = format!("seed {} after {}", case["seed"], i + 1);
                assert_eq!(h.count(), cp["count"].as_u64().unwrap(), "{what}");
                assert_eq!(h.min(), cp["min"].as_f64(), "{what}");
                assert_eq!(h.max(), cp["max"].as_f64(), "{what}");
                for (k, got) in ["p50", "p75", "p95", "p99", "p999"].iter().zip(p) {
                    assert_eq!(got, cp[k].as_f64(), "{what} {k}");
                }
                assert!(h.reservoir_len() <= RESERVOIR_SIZE);
            }
        }
        assert!(checkpoints.next().is_none(), "all checkpoints reached");
    }
}

#[test]
fn ewma_rates_match_js() {
    let u = units();
    for case in u["ewma"].as_array().unwrap() {
        let mut m = Meter::new(0);
        let mut rates = case["rates"].as_array().unwrap().iter();
        for op in case["ops"].as_array().unwrap() {
            let at = op[0].as_u64().unwrap();
            if op[1] == "update" {
                m.update(at, op.get(2).and_then(Value::as_f64).unwrap_or(1.0));
            } else {
                let want = rates.next().unwrap();
                assert_eq!(want[0].as_u64(), Some(at));
                let raw = m.rate(at, 1000.0);
                assert_eq!(raw, want[1].as_f64().unwrap(), "rate at {at}");
                assert_eq!(
                    js::js_number(js_round(raw * 100.0) / 100.0),
                    want[2],
                    "rounded rate at {at}"
                );
            }
        }
        assert!(rates.next().is_none());
    }
}

/// The whole aggregator against the JS one fed the same bus traffic at the
/// same (fake) times, down to the JSON text of every packet.
#[test]
fn scenario_matches_js() {
    let s: Value = serde_json::from_str(SCENARIO).unwrap();
    let files = s["files"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let mut cfg = TransactionConfig::new(s["server"].as_str().unwrap());
    cfg.learning_duration = Duration::from_secs(s["learning_duration_s"].as_u64().unwrap());
    cfg.max_outliers_per_flush = usize::MAX;
    let t0 = Instant::now();
    let mut agg =
        TransactionAggregator::with_parts(cfg, t0, Box::new(Mulberry32::new(2024)), context(files));
    let at = |ms: u64| t0 + Duration::from_millis(ms);

    let expected = s["expected"].as_array().unwrap();
    // Learning notifications fire from timers between the steps.
    let mut tick_times: Vec<u64> = expected
        .iter()
        .filter(|e| e["channel"] == "axm:transaction:learning")
        .map(|e| e["at"].as_u64().unwrap())
        .collect();
    let mut got: Vec<(u64, String, String)> = Vec::new();
    let mut record = |t: u64, packets: Vec<Packet>| {
        for p in packets {
            got.push((t, p.channel, serde_json::to_string(&p.payload).unwrap()));
        }
    };
    for step in s["steps"].as_array().unwrap() {
        let t = step["at"].as_u64().unwrap();
        while let Some(&tick) = tick_times.first().filter(|&&x| x <= t) {
            record(tick, agg.learning_tick(at(tick)));
            tick_times.remove(0);
        }
        record(t, agg.learning_tick(at(t)));
        match step["op"].as_str().unwrap() {
            "trace" => {
                let out = agg.aggregate(step["packet"].clone(), at(t));
                record(t, out);
            }
            "event" => agg.on_process_event(&step["packet"], at(t)),
            "flush" => {
                let out = agg.flush(at(t));
                record(t, out);
            }
            other => panic!("unknown step {other}"),
        }
    }
    let want: Vec<(u64, String, String)> = expected
        .iter()
        .map(|e| {
            (
                e["at"].as_u64().unwrap(),
                e["channel"].as_str().unwrap().to_owned(),
                serde_json::to_string(&e["payload"]).unwrap(),
            )
        })
        .collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "packet #{i}");
    }
    assert_eq!(got.len(), want.len());
    assert_eq!(agg.drops().invalid_traces, 1, "the trace without http/path");
}
