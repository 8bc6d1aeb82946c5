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

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// A trace of `path` whose root lasts `dur` ms, with one `mongo` child per
/// entry of `children` (their durations).
fn trace(app: &str, path: &str, dur: u64, children: &[u64]) -> Value {
    let iso = |ms: u64| {
        // 2020-01-01T00:00:00Z + ms, as JS would print it.
        let s = ms / 1000;
        format!(
            "2020-01-01T00:{:02}:{:02}.{:03}Z",
            s / 60,
            s % 60,
            ms % 1000
        )
    };
    let mut spans = vec![json!({
        "name": path, "kind": "RPC_SERVER", "spanId": 1,
        "labels": {"http/path": path, "http/method": "GET"},
        "startTime": iso(0), "endTime": iso(dur),
    })];
    for d in children {
        spans.push(json!({
            "name": "mongo-find", "kind": "RPC_CLIENT",
            "labels": {"cmd": "{\"q\":1}"},
            "startTime": iso(1), "endTime": iso(1 + d),
        }));
    }
    json!({"data": {"spans": spans}, "process": {"pm_id": 1, "name": app, "rev": null, "server": "m"}})
}

fn routes_of(packet: &Packet) -> Vec<String> {
    packet.payload["data"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn flush_shape() {
    let t0 = Instant::now();
    let mut agg = aggregator(TransactionConfig::new("m"), t0);
    agg.aggregate(trace("api", "/users/1", 30, &[10]), ms(t0, 100));
    agg.aggregate(trace("api", "/users/2", 50, &[20]), ms(t0, 200));
    agg.aggregate(trace("api", "/users", 5, &[]), ms(t0, 300));
    agg.aggregate(trace("api", "/users", 7, &[]), ms(t0, 400));
    let out = agg.flush(ms(t0, 30_000));
    assert_eq!(out.len(), 1);
    let p = &out[0];
    assert_eq!(p.channel, "axm:transaction");
    assert_eq!(routes_of(p), ["/users/*", "/users"]);
    let meta = &p.payload["data"]["meta"];
    assert_eq!(meta["trace_count"], 4);
    assert_eq!(meta["http_percentiles"]["median"], 18.5);
    assert_eq!(meta["db_percentiles"]["mongo"], 15);
    // One-segment routes merge (JS lost every trace after the first).
    let users = &p.payload["data"]["routes"][1];
    assert_eq!(users["meta"]["count"], 2);
    assert_eq!(users["variances"][0]["count"], 2);
    // pm_id (truthy) is not part of the process of an app created by a trace.
    assert_eq!(
        p.payload["process"],
        json!({"name": "api", "rev": null, "server": "m"})
    );
    // Key order as the JS agent puts it on the wire (fclone reverses).
    let text = serde_json::to_string(&p.payload).unwrap();
    assert!(
        text.starts_with(r#"{"data":{"routes":[{"path":"/users/*","meta":{"p95":"#),
        "{text}"
    );
}

#[test]
fn variances_sorted_by_count_top_five() {
    let t0 = Instant::now();
    let mut agg = aggregator(TransactionConfig::new("m"), t0);
    // 7 variances (0..=6 children); variance k seen k+1 times.
    for k in 0..7u64 {
        for _ in 0..=k {
            let children: Vec<u64> = (0..k).map(|_| 3).collect();
            agg.aggregate(trace("api", "/a/b", 20, &children), ms(t0, 10));
        }
    }
    let out = agg.flush(ms(t0, 1000));
    let vars = out[0].payload["data"]["routes"][0]["variances"]
        .as_array()
        .unwrap();
    let counts: Vec<u64> = vars.iter().map(|v| v["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, [7, 6, 5, 4, 3]);
    assert_eq!(vars[0]["spans"].as_array().unwrap().len(), 7);
}

#[test]
fn learning_period_lasts_the_aggregation_duration() {
    let t0 = Instant::now();
    let mut cfg = TransactionConfig::new("srv");
    cfg.learning_duration = Duration::from_secs(600);
    let mut agg = aggregator(cfg, t0);
    agg.aggregate(trace("api", "/x", 10, &[]), ms(t0, 0));
    // Unknown apps are not reset.
    agg.on_process_event(
        &json!({"event": "online", "process": {"name": "other"}}),
        ms(t0, 1),
    );
    assert_eq!(agg.app_count(), 1);
    agg.on_process_event(
        &json!({"event": "online", "process": {"name": "api", "versioning": {"revision": "abc"}}}),
        ms(t0, 1000),
    );
    assert!(agg.is_learning("api", ms(t0, 1000)));
    assert!(agg.flush(ms(t0, 2000)).is_empty());
    assert!(agg.learning_tick(ms(t0, 5999)).is_empty());
    let l = agg.learning_tick(ms(t0, 6000));
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].channel, "axm:transaction:learning");
    assert_eq!(
        l[0].payload,
        json!({"data": {"learning_duration": 600, "elapsed": 5000},
               "process": {"name": "api", "rev": "abc", "server": "srv"}})
    );
    // Called every second: one packet per 5 s step, late calls do not pile up.
    assert!(agg.learning_tick(ms(t0, 7000)).is_empty());
    assert_eq!(agg.learning_tick(ms(t0, 12_500)).len(), 1);
    assert!(agg.learning_tick(ms(t0, 14_000)).is_empty());
    // Still learning after 0.6 s (JS ended it there) and after 599 s.
    assert!(agg.is_learning("api", ms(t0, 600_999)));
    assert!(agg.flush(ms(t0, 600_999)).is_empty());
    let out = agg.flush(ms(t0, 601_000));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].payload["data"]["meta"]["trace_count"], 0,
        "reset on online"
    );
    assert!(agg.learning_tick(ms(t0, 605_000)).is_empty());
}

#[test]
fn stop_and_delete_drop_the_app_exit_does_not() {
    let t0 = Instant::now();
    let mut agg = aggregator(TransactionConfig::new("m"), t0);
    agg.aggregate(trace("a", "/x", 10, &[1]), ms(t0, 0));
    agg.aggregate(trace("b", "/x", 10, &[1]), ms(t0, 0));
    let before = agg.histogram_count();
    assert!(before > 0);
    agg.on_process_event(
        &json!({"event": "exit", "process": {"name": "a"}}),
        ms(t0, 1),
    );
    assert_eq!(agg.app_count(), 2);
    agg.on_process_event(
        &json!({"event": "stop", "process": {"name": "a"}}),
        ms(t0, 2),
    );
    agg.on_process_event(
        &json!({"event": "delete", "process": {"name": "b"}}),
        ms(t0, 3),
    );
    assert_eq!(agg.app_count(), 0);
    assert_eq!(agg.histogram_count(), 0, "budgets returned");
    assert_eq!(agg.stored_bytes(), 0);
    assert!(agg.flush(ms(t0, 10)).is_empty());
}

#[test]
fn outliers_are_sent_and_capped() {
    let t0 = Instant::now();
    let mut cfg = TransactionConfig::new("m");
    cfg.max_outliers_per_flush = 2;
    let mut agg = aggregator(cfg, t0);
    for _ in 0..10 {
        assert!(agg
            .aggregate(trace("api", "/x", 10, &[2]), ms(t0, 0))
            .is_empty());
    }
    let out = agg.aggregate(trace("api", "/x", 500, &[2]), ms(t0, 1));
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!(o.channel, "axm:transaction:outlier");
    assert_eq!(o.payload["meta"]["value"], 500);
    assert_eq!(o.payload["meta"]["count"], 10);
    assert_eq!(o.payload["trace"][0]["mean"], 500);
    assert_eq!(o.payload["variance"].as_array().unwrap().len(), 2);
    assert_eq!(
        agg.aggregate(trace("api", "/x", 900, &[2]), ms(t0, 2))
            .len(),
        1
    );
    assert!(agg
        .aggregate(trace("api", "/x", 990, &[2]), ms(t0, 3))
        .is_empty());
    assert_eq!(agg.drops().outliers, 1);
    agg.flush(ms(t0, 4));
    assert_eq!(
        agg.aggregate(trace("api", "/x", 5000, &[2]), ms(t0, 5))
            .len(),
        1
    );
}

#[test]
fn caps_are_counted() {
    let t0 = Instant::now();
    let mut cfg = TransactionConfig::new("m");
    cfg.max_apps = 2;
    cfg.max_routes_per_app = 3;
    cfg.max_variances_per_route = 2;
    cfg.max_spans_per_trace = 4;
    let mut agg = aggregator(cfg, t0);
    for app in ["a", "b", "c"] {
        agg.aggregate(trace(app, "/x", 10, &[]), ms(t0, 0));
    }
    assert_eq!(agg.app_count(), 2);
    assert_eq!(agg.drops().apps, 1);
    for r in ["p", "q", "r", "s"] {
        agg.aggregate(trace("a", r, 10, &[]), ms(t0, 0));
    }
    assert_eq!(agg.route_keys("a"), ["x", "p", "q"]);
    assert_eq!(agg.drops().routes, 2);
    for n in 0..4 {
        let children: Vec<u64> = (0..n).map(|_| 1).collect();
        agg.aggregate(trace("b", "/v", 10, &children), ms(t0, 0));
    }
    assert_eq!(agg.drops().variances, 2);
    agg.aggregate(trace("b", "/many", 10, &[1; 10]), ms(t0, 0));
    assert_eq!(agg.drops().spans, 7);
    let out = agg.flush(ms(t0, 1));
    let b = out
        .iter()
        .find(|p| p.payload["process"]["name"] == "b")
        .unwrap();
    let many = b.payload["data"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/many")
        .unwrap();
    assert_eq!(many["variances"][0]["spans"].as_array().unwrap().len(), 4);
}

#[test]
fn histogram_and_byte_budgets_hold() {
    let t0 = Instant::now();
    let mut cfg = TransactionConfig::new("m");
    cfg.max_histograms = 10;
    let mut agg = aggregator(cfg.clone(), t0);
    for i in 0..20 {
        agg.aggregate(trace("a", &format!("/r{i}"), 10, &[1]), ms(t0, 0));
        assert!(agg.histogram_count() <= 10);
    }
    assert!(agg.drops().histograms > 0);

    cfg.max_histograms = 4096;
    cfg.max_stored_bytes = 300;
    let mut agg = aggregator(cfg, t0);
    for i in 0..20 {
        agg.aggregate(trace("a", &format!("/r{i}"), 10, &[1]), ms(t0, 0));
        assert!(agg.stored_bytes() <= 300);
    }
    assert!(agg.drops().variances > 0);
}

#[test]
fn labels_are_limited() {
    let t0 = Instant::now();
    let mut cfg = TransactionConfig::new("m");
    cfg.max_labels_per_span = 3;
    cfg.max_label_bytes = 8;
    cfg.censor = false;
    let mut agg = aggregator(cfg, t0);
    let mut p = trace("a", "/x", 10, &[]);
    p["data"]["spans"][0]["labels"] = json!({
        "http/path": "/x", "long": "ééééééé", "obj": {"k": "0123456789"}, "extra": 1
    });
    agg.aggregate(p, ms(t0, 0));
    assert_eq!(
        agg.drops().labels,
        3,
        "extra removed, long cut, obj removed"
    );
    let out = agg.flush(ms(t0, 1));
    let labels = &out[0].payload["data"]["routes"][0]["variances"][0]["spans"][0]["labels"];
    assert_eq!(labels, &json!({"long": "éééé", "http/path": "/x"}));
}

#[test]
fn censoring_can_be_disabled() {
    let t0 = Instant::now();
    for censor in [true, false] {
        let mut cfg = TransactionConfig::new("m");
        cfg.censor = censor;
        let mut agg = aggregator(cfg, t0);
        let mut p = trace("a", "/x", 10, &[]);
        p["data"]["spans"][0]["labels"]["q"] = json!("{\"a\":\"secret\"}");
        p["data"]["spans"][0]["labels"]["results"] = json!("rows");
        agg.aggregate(p, ms(t0, 0));
        let out = agg.flush(ms(t0, 1));
        let span = &out[0].payload["data"]["routes"][0]["variances"][0]["spans"][0];
        if censor {
            assert_eq!(span["labels"]["q"], "{\"a\": \"?\"}");
            assert!(span["labels"].get("results").is_none());
        } else {
            assert_eq!(span["labels"]["q"], "{\"a\":\"secret\"}");
            assert_eq!(span["labels"]["results"], "rows");
        }
    }
}

#[test]
fn odd_traces_are_ignored() {
    let t0 = Instant::now();
    let mut agg = aggregator(TransactionConfig::new("m"), t0);
    let bad = [
        json!(null),
        json!({"process": {"name": "a"}}),
        json!({"data": {"spans": {"0": {"labels": {}}}}, "process": {"name": "a"}}),
        json!({"data": {"spans": [null]}, "process": {"name": "a"}}),
        json!({"data": {"spans": [{"labels": {"http/path": 5}}]}, "process": {"name": "a"}}),
        json!({"data": {"spans": [{"labels": "str"}]}, "process": {"name": "a"}}),
        json!({"data": {"spans": [{"labels": {"http/path": "/x"}, "startTime": "soon", "endTime": 3}, 7]},
               "process": {"name": "a"}}),
    ];
    for p in bad {
        assert!(agg.aggregate(p, ms(t0, 0)).is_empty());
    }
    assert_eq!(agg.drops().invalid_traces, 6);
    assert_eq!(agg.drops().invalid_spans, 2);
    // The JS created the app before looking at the path; so does the port.
    assert_eq!(agg.app_count(), 1);
    let out = agg.flush(ms(t0, 1));
    assert_eq!(out[0].payload["data"]["routes"], json!([]));
    assert_eq!(out[0].payload["data"]["meta"]["trace_count"], 1);
}

#[test]
fn time_going_backwards_is_harmless() {
    let t0 = Instant::now();
    let mut cfg = TransactionConfig::new("m");
    cfg.learning_duration = Duration::from_secs(10);
    let mut agg = aggregator(cfg, t0);
    agg.aggregate(trace("a", "/x", 10, &[1]), ms(t0, 50_000));
    agg.on_process_event(
        &json!({"event": "online", "process": {"name": "a"}}),
        ms(t0, 60_000),
    );
    for t in [0, 70_000, 10, 59_000, 3_600_000 * 3, 5] {
        agg.aggregate(trace("a", "/x", 10, &[1]), ms(t0, t));
        agg.learning_tick(ms(t0, t));
        agg.flush(ms(t0, t));
    }
    // Before the origin counts as the origin.
    agg.flush(t0.checked_sub(Duration::from_millis(1)).unwrap_or(t0));
}

#[test]
fn meter_idle_for_days_is_cheap_and_zero() {
    let mut m = Meter::new(0);
    m.update(0, 100.0);
    assert!(m.rate(5_000, 1000.0) > 0.0);
    assert_eq!(m.rate(30 * 86_400_000, 1000.0), 0.0);
    assert_eq!(m.rate(u64::MAX, 1000.0), 0.0);
}

mod props {
    use super::*;
    use crate::push::test_support::any_json;
    use proptest::prelude::*;

    fn span_strategy() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just("/u/1"), Just("/u/2"), Just("/"), Just("a/b/"), Just("/x.y/3/z")],
            prop_oneof![Just("RPC_SERVER"), Just("RPC_CLIENT"), Just("")],
            prop_oneof![Just("redis"), Just("pg-q"), Just("outbound"), Just("n")],
            0u64..100,
            0u64..100,
            any_json(),
        )
            .prop_map(|(path, kind, name, a, b, extra)| {
                json!({
                    "name": name, "kind": kind, "extra": extra,
                    "labels": {"http/path": path, "http/method": "GET", "http/status_code": "200",
                               "stacktrace": "{\"stack_frame\":[{\"file_name\":\"/nope.js\",\"line_number\":1}]}"},
                    "startTime": a, "endTime": b,
                })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any packet, event and timing: no panic, and every bound holds.
        #[test]
        fn any_input_keeps_the_bounds(
            ops in prop::collection::vec((0u8..6, any_json(), prop::collection::vec(span_strategy(), 0..6),
                                          "[a-c]", 0u64..20_000), 0..40),
        ) {
            let t0 = Instant::now();
            let mut cfg = TransactionConfig::new("m");
            cfg.max_apps = 2;
            cfg.max_routes_per_app = 3;
            cfg.max_variances_per_route = 2;
            cfg.max_spans_per_trace = 3;
            cfg.max_histograms = 20;
            cfg.max_stored_bytes = 4000;
            cfg.learning_duration = Duration::from_secs(3);
            let mut agg = aggregator(cfg.clone(), t0);
            let mut now = 0;
            for (op, junk, spans, app, dt) in ops {
                now += dt;
                let at = ms(t0, now);
                match op {
                    0 => { agg.aggregate(junk, at); }
                    1 | 2 => {
                        let out = agg.aggregate(json!({"data": {"spans": spans}, "process": {"name": app}}), at);
                        for p in out { prop_assert_eq!(p.channel, "axm:transaction:outlier"); }
                    }
                    3 => {
                        let ev = ["online", "stop", "exit", "delete"][(now % 4) as usize];
                        agg.on_process_event(&json!({"event": ev, "process": {"name": app}}), at);
                        agg.on_process_event(&junk, at);
                    }
                    4 => {
                        for p in agg.flush(at) {
                            prop_assert!(p.payload["data"]["routes"].as_array().unwrap().len() <= 3);
                            for r in p.payload["data"]["routes"].as_array().unwrap() {
                                prop_assert!(r["variances"].as_array().unwrap().len() <= 2);
                            }
                        }
                    }
                    _ => { agg.learning_tick(at); }
                }
                prop_assert!(agg.app_count() <= cfg.max_apps);
                prop_assert!(agg.histogram_count() <= cfg.max_histograms);
                prop_assert!(agg.stored_bytes() <= cfg.max_stored_bytes);
                for a in ["a", "b", "c"] {
                    prop_assert!(agg.route_keys(a).len() <= cfg.max_routes_per_app);
                }
            }
        }

        #[test]
        fn censor_and_dates_accept_anything(s in "[\"':\\\\,{}\\[\\]a1 \\n\u{2028}é😀]{0,40}", d in ".{0,40}") {
            if let Some(c) = censor(&s) {
                prop_assert!(c.contains("\": \"?\""));
            }
            let _ = date_ms(Some(&Value::String(d)));
        }

        #[test]
        fn route_matching_accepts_anything(keys in prop::collection::vec("[a1*/.-]{0,8}", 0..6), path in "[a1*/.-]{1,8}") {
            let key = route_key(&path);
            let _ = match_route(&key, keys.iter().map(String::as_str));
        }
    }
}
