//! Transaction tracing: `axm:trace` packets of the apps aggregated per app
//! into routes and variances, as the JS agent's `TransactionAggregator`
//! (@pm2/agent 2.1.1 / 1.0.8) does, and flushed to PM2.io.
//!
//! What happens to a trace ([`TransactionAggregator::aggregate`]):
//! 1. label values are censored (JSON-ish values → `": "?"`, `results`,
//!    `result`, `values`, `spanId`, `parentSpanId` removed) unless disabled
//!    (`PM2_DEBUG`);
//! 2. spans whose `endTime` is `startTime` are dropped, the others get their
//!    duration (`mean`, ms);
//! 3. `RPC_SERVER` spans feed the app's latency histogram and HTTP meter;
//!    spans with `http/method` + `http/status_code` labels become
//!    `outbound_http`; spans named after `redis`, `mysql`, `pg`, `mongo` or
//!    `outbound_http` feed that kind's histogram and the DB meter;
//! 4. the path (`http/path` of the first span) picks a route, identifier
//!    segments collapsing to `*` (`/users/1` and `/users/2` → `/users/*`);
//! 5. the trace joins the route's variance with the same span sequence, or
//!    starts one (with the source context of its spans' stack traces). A
//!    request slower than its variance's p95 is sent as
//!    `axm:transaction:outlier`.
//!
//! Histograms are exponentially decaying reservoirs ([`Histogram`]) and
//! meters 1-minute EWMAs ([`Meter`]) with the JS parameters; both take the
//! time as an argument, and the reservoir its random numbers from a
//! [`RandomSource`], so that the JS values can be reproduced exactly
//! (fixtures in `src/push/testdata/transactions_*.json`, made by
//! `gen_transactions.js` from the JS code).
//!
//! JS bugs fixed on purpose (docs/js-agent-behaviour.md §6.10): the
//! learning period lasts `AGGREGATION_DURATION` seconds (JS used it as ms);
//! spans are compared
//! when looking for a variance (JS's loop never ran, so every trace of a
//! route went to its first variance); a one-segment path finds its route
//! (JS lost every trace after the first); a trailing `/` no longer resets
//! the route; a path must match every segment of a route (JS looked at the
//! last differing one only); outliers are sent (JS tested an undeclared
//! global); the variances sent are the 5 most frequent (JS sorted by an
//! undefined field). Inputs the JS would crash on are dropped.
//!
//! Bounds: apps, routes per app, variances per route, spans per trace,
//! labels per span, label sizes, live histograms, stored bytes, and
//! outliers per flush are capped ([`TransactionConfig`]); what a cap
//! refuses is counted in [`TransactionDrops`].
//!
//! # Wiring (src/daemon/workers.rs)
//! The aggregator lives behind a mutex shared by two tasks:
//! * the bus loop calls [`TransactionAggregator::on_process_event`] with
//!   every raw `process:event` packet (before the push pipeline takes it),
//!   and [`TransactionAggregator::aggregate`] with every
//!   [`PushAction::Trace`](super::PushAction::Trace), sending the outliers
//!   it returns;
//! * a timer task calls [`TransactionAggregator::flush`] every
//!   `TRACE_FLUSH_INTERVAL` and [`TransactionAggregator::learning_tick`]
//!   every second (it sends when an app's 5-second step is due).

mod histogram;
mod jsval;
mod meter;
mod paths;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::context::StackContext;
use super::js;
use crate::common::Packet;

pub use histogram::{Histogram, Mulberry32, RandomSource, RESERVOIR_SIZE};
pub use meter::Meter;
pub use paths::{is_identifier, match_route, route_key, RouteMatch};

/// Span names (substrings) counted as database calls, in the JS order.
pub const SPANS_DB: [&str; 5] = ["redis", "mysql", "pg", "mongo", "outbound_http"];
/// `axm:transaction:learning` is sent this often during the learning period.
pub const LEARNING_NOTIFY_INTERVAL: Duration = Duration::from_secs(5);
/// Variances per route in an `axm:transaction` packet (the most frequent).
pub const VARIANCES_SENT: usize = 5;

/// Limits and switches of the aggregator.
#[derive(Debug, Clone)]
pub struct TransactionConfig {
    /// `MACHINE_NAME`: `process.server` after a restart resets an app.
    pub server: String,
    /// `TRACE_FLUSH_INTERVAL`: how often the daemon calls
    /// [`TransactionAggregator::flush`] (30 s; 1 s under `NODE_ENV=local_test`
    /// or `PM2_DEBUG=true`, see `DaemonConfig::trace_flush_interval`).
    pub flush_interval: Duration,
    /// `AGGREGATION_DURATION`: after an app comes back `online`, its data is
    /// collected but not sent for this long (zero: no learning period).
    pub learning_duration: Duration,
    /// Censor label values (off with `PM2_DEBUG`).
    pub censor: bool,
    pub max_apps: usize,
    pub max_routes_per_app: usize,
    /// Variances kept per route ([`VARIANCES_SENT`] of them are sent).
    pub max_variances_per_route: usize,
    /// Spans of a trace beyond this are ignored.
    pub max_spans_per_trace: usize,
    /// Labels of a span beyond this are removed.
    pub max_labels_per_span: usize,
    /// Longer string labels are truncated, larger non-string ones removed.
    pub max_label_bytes: usize,
    /// A larger `stacktrace` label is not parsed (it is never stored).
    pub max_stacktrace_bytes: usize,
    /// Histograms alive at once, all apps together. A full reservoir is
    /// ~16 KiB, so this bounds their memory (4096 → 64 MiB at worst).
    pub max_histograms: usize,
    /// Bytes of span names and labels kept in variances, all apps together.
    pub max_stored_bytes: usize,
    /// Outliers sent per app between two flushes (the p95 of a young
    /// variance is easy to exceed: unbounded, a busy app would send one per
    /// slow request).
    pub max_outliers_per_flush: usize,
}

impl TransactionConfig {
    pub fn new(server: impl Into<String>) -> Self {
        TransactionConfig {
            server: server.into(),
            flush_interval: Duration::from_secs(30),
            learning_duration: Duration::from_secs(600),
            censor: true,
            max_apps: 256,
            max_routes_per_app: 100,
            max_variances_per_route: 20,
            max_spans_per_trace: 64,
            max_labels_per_span: 64,
            max_label_bytes: 4096,
            max_stacktrace_bytes: 64 * 1024,
            max_histograms: 4096,
            max_stored_bytes: 32 * 1024 * 1024,
            max_outliers_per_flush: 10,
        }
    }
}

/// What was refused or ignored, by reason (monotonic counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransactionDrops {
    /// Packets without spans, labels or a string `http/path`.
    pub invalid_traces: u64,
    /// Spans that are not objects or whose times are not dates.
    pub invalid_spans: u64,
    /// Traces of a new app beyond `max_apps`.
    pub apps: u64,
    /// Traces of a new route beyond `max_routes_per_app`.
    pub routes: u64,
    /// New variances beyond `max_variances_per_route` or `max_stored_bytes`.
    pub variances: u64,
    /// Spans beyond `max_spans_per_trace`.
    pub spans: u64,
    /// Labels removed or truncated.
    pub labels: u64,
    /// Histograms refused by `max_histograms` (the trace is partly counted).
    pub histograms: u64,
    /// Outliers not sent because of `max_outliers_per_flush`.
    pub outliers: u64,
}

struct Learning {
    start_ms: u64,
    next_notify_ms: u64,
}

struct StoredSpan {
    name: Option<Value>,
    labels: Option<Value>,
    kind: Option<Value>,
    start_time: Option<Value>,
    histogram: Histogram,
}

struct Variance {
    spans: Vec<StoredSpan>,
    histogram: Histogram,
}

struct RouteMeta {
    histogram: Histogram,
    meter: Meter,
}

struct Route {
    key: String,
    /// Created by the first trace with spans (JS: `aggregated.meta`).
    meta: Option<RouteMeta>,
    variances: Vec<Variance>,
}

struct App {
    name: String,
    process: Map<String, Value>,
    trace_count: u64,
    http_meter: Meter,
    db_meter: Meter,
    histogram: Histogram,
    db_histograms: [Option<Histogram>; 5],
    routes: Vec<Route>,
    learning: Option<Learning>,
    outliers_sent: usize,
    /// Live histograms and stored bytes owned, returned to the global
    /// budgets when the app is reset or dropped.
    histograms: usize,
    stored_bytes: usize,
}

impl App {
    fn new(name: String, process: Map<String, Value>, now_ms: u64) -> App {
        App {
            name,
            process,
            trace_count: 0,
            http_meter: Meter::new(now_ms),
            db_meter: Meter::new(now_ms),
            histogram: Histogram::new(),
            db_histograms: Default::default(),
            routes: Vec::new(),
            learning: None,
            outliers_sent: 0,
            histograms: 1,
            stored_bytes: 0,
        }
    }

    fn learning(&mut self, now_ms: u64, duration_ms: u64) -> bool {
        match &self.learning {
            Some(l) if now_ms.saturating_sub(l.start_ms) < duration_ms => true,
            Some(_) => {
                tracing::debug!(app = %self.name, "transaction learning period over");
                self.learning = None;
                false
            }
            None => false,
        }
    }
}

/// A span of the trace being aggregated.
struct Span {
    obj: Map<String, Value>,
    /// Duration in ms (`mean` in JS).
    mean: f64,
}

impl Span {
    fn labels(&self) -> Option<&Map<String, Value>> {
        self.obj.get("labels").and_then(Value::as_object)
    }
}

pub struct TransactionAggregator {
    cfg: TransactionConfig,
    origin: Instant,
    rng: Box<dyn RandomSource>,
    context: StackContext,
    /// In creation order (sent in JS key order, see [`paths::js_key_order`]).
    apps: Vec<App>,
    histograms: usize,
    stored_bytes: usize,
    drops: TransactionDrops,
}

impl TransactionAggregator {
    /// Reads source files from disk for stack trace context; random
    /// sampling seeded from entropy; `origin` = now.
    pub fn new(cfg: TransactionConfig) -> Self {
        Self::with_parts(
            cfg,
            Instant::now(),
            Box::new(Mulberry32::from_entropy()),
            StackContext::from_fs(),
        )
    }

    /// Everything injectable: the instant the aggregator's millisecond
    /// clock starts from, the random source of the reservoirs, the source
    /// reader of stack trace context.
    pub fn with_parts(
        cfg: TransactionConfig,
        origin: Instant,
        rng: Box<dyn RandomSource>,
        context: StackContext,
    ) -> Self {
        TransactionAggregator {
            cfg,
            origin,
            rng,
            context,
            apps: Vec::new(),
            histograms: 0,
            stored_bytes: 0,
            drops: TransactionDrops::default(),
        }
    }

    pub fn config(&self) -> &TransactionConfig {
        &self.cfg
    }

    pub fn drops(&self) -> TransactionDrops {
        self.drops
    }

    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// Histograms alive (bounded by `max_histograms`).
    pub fn histogram_count(&self) -> usize {
        self.histograms
    }

    /// Bytes of names/labels held by variances (bounded by `max_stored_bytes`).
    pub fn stored_bytes(&self) -> usize {
        self.stored_bytes
    }

    /// Routes of an app, by key (tests, diagnostics).
    pub fn route_keys(&self, app: &str) -> Vec<String> {
        self.apps
            .iter()
            .find(|a| a.name == app)
            .map(|a| a.routes.iter().map(|r| r.key.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether `app` is in its learning period at `now`.
    pub fn is_learning(&mut self, app: &str, now: Instant) -> bool {
        let now_ms = self.ms(now);
        let duration = duration_ms(self.cfg.learning_duration);
        self.apps
            .iter_mut()
            .find(|a| a.name == app)
            .is_some_and(|a| a.learning(now_ms, duration))
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn release(&mut self, app: &App) {
        self.histograms = self.histograms.saturating_sub(app.histograms);
        self.stored_bytes = self.stored_bytes.saturating_sub(app.stored_bytes);
    }

    /// A bus `process:event` packet (raw, as PM2 sends it): `online` of an
    /// app that has traces resets it and starts its learning period;
    /// `stop`/`delete` drop it. `exit` is ignored on purpose: PM2 emits it
    /// on every restart and reload too (a reload's old instances exit after
    /// the new ones are `online`), and JS kept the data until `stop`.
    pub fn on_process_event(&mut self, packet: &Value, now: Instant) {
        let now_ms = self.ms(now);
        let Some(event) = packet.get("event").and_then(Value::as_str) else {
            return;
        };
        let Some(process) = packet.get("process").filter(|p| js::truthy(Some(p))) else {
            return;
        };
        let name_value = process.get("name").cloned();
        let name = app_key(name_value.as_ref());
        let Some(index) = self.apps.iter().position(|a| a.name == name) else {
            return;
        };
        match event {
            "online" => {
                let rev = process
                    .get("versioning")
                    .and_then(|v| v.get("revision"))
                    .filter(|r| js::truthy(Some(r)))
                    .cloned()
                    .unwrap_or(Value::Null);
                let mut meta = Map::new();
                if let Some(n) = name_value {
                    meta.insert("name".into(), n);
                }
                meta.insert("rev".into(), rev);
                meta.insert("server".into(), Value::String(self.cfg.server.clone()));
                let mut fresh = App::new(name, meta, now_ms);
                if !self.cfg.learning_duration.is_zero() {
                    fresh.learning = Some(Learning {
                        start_ms: now_ms,
                        next_notify_ms: now_ms
                            .saturating_add(duration_ms(LEARNING_NOTIFY_INTERVAL)),
                    });
                }
                let old = std::mem::replace(&mut self.apps[index], fresh);
                self.release(&old);
                self.histograms += 1;
                tracing::debug!(app = %old.name, "app online: transaction aggregation reset");
            }
            "stop" | "delete" => {
                let old = self.apps.remove(index);
                self.release(&old);
                tracing::debug!(app = %old.name, event, "transaction aggregation dropped");
            }
            _ => {}
        }
    }

    /// One `axm:trace` packet (`{data: {spans: […]}, process: {…}}`, process
    /// normalised by the push pipeline). Returns the outliers to send.
    pub fn aggregate(&mut self, packet: Value, now: Instant) -> Vec<Packet> {
        let now_ms = self.ms(now);
        let Some((process, spans)) = self.validate(packet) else {
            self.drops.invalid_traces += 1;
            return vec![];
        };
        let name = app_key(process.get("name"));
        let app_index = match self.apps.iter().position(|a| a.name == name) {
            Some(i) => i,
            None => {
                if self.apps.len() >= self.cfg.max_apps {
                    if self.drops.apps == 0 {
                        tracing::warn!(max = self.cfg.max_apps, "too many apps with traces");
                    }
                    self.drops.apps += 1;
                    return vec![];
                }
                if self.histograms >= self.cfg.max_histograms {
                    self.drops.histograms += 1;
                    return vec![];
                }
                let mut process = process;
                // JS: `if (process.pm_id) delete process.pm_id` (0 stays).
                if js::truthy(process.get("pm_id")) {
                    process.shift_remove("pm_id");
                }
                self.apps.push(App::new(name, process, now_ms));
                self.histograms += 1;
                self.apps.len() - 1
            }
        };

        let path = match spans
            .first()
            .and_then(|s| s.get("labels"))
            .and_then(|l| l.as_object())
            .and_then(|l| l.get("http/path"))
        {
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            _ => {
                self.drops.invalid_traces += 1;
                return vec![];
            }
        };

        let mut spans = self.prepare_spans(spans);
        let duration = duration_ms(self.cfg.learning_duration);
        let TransactionAggregator {
            cfg,
            rng,
            context,
            apps,
            histograms,
            stored_bytes,
            drops,
            ..
        } = self;
        let mut budget = Budget {
            histograms,
            stored_bytes,
            drops,
            cfg,
        };
        let app = &mut apps[app_index];
        update_app_meta(app, &mut spans, now_ms, rng.as_mut(), &mut budget);
        app.trace_count += 1;

        let key = route_key(&path);
        let route_index = match match_route(&key, app.routes.iter().map(|r| r.key.as_str())) {
            RouteMatch::Existing(i) | RouteMatch::Wildcard(i) => i,
            RouteMatch::Rename { index, key } => {
                // JS deletes and re-adds the key: it moves to the end.
                let mut route = app.routes.remove(index);
                route.key = key;
                app.routes.push(route);
                app.routes.len() - 1
            }
            RouteMatch::New => {
                if app.routes.len() >= budget.cfg.max_routes_per_app {
                    if budget.drops.routes == 0 {
                        tracing::warn!(app = %app.name, max = budget.cfg.max_routes_per_app, "too many routes");
                    }
                    budget.drops.routes += 1;
                    return vec![];
                }
                app.routes.push(Route {
                    key,
                    meta: None,
                    variances: Vec::new(),
                });
                app.routes.len() - 1
            }
        };
        if spans.is_empty() {
            return vec![];
        }
        let learning = app.learning(now_ms, duration);
        merge_trace(
            app,
            route_index,
            spans,
            now_ms,
            learning,
            rng.as_mut(),
            context,
            &mut budget,
        )
        .into_iter()
        .collect()
    }

    /// `validateData`: an object with a truthy `data` object holding a
    /// non-empty `spans` array whose first span has truthy labels, and a
    /// truthy `process`.
    fn validate(&self, packet: Value) -> Option<(Map<String, Value>, Vec<Value>)> {
        let Value::Object(mut packet) = packet else {
            return None;
        };
        let process = match packet.shift_remove("process") {
            Some(Value::Object(p)) => p,
            // The pipeline always gives an object; anything else truthy has
            // no name (JS: key "undefined").
            Some(p) if js::truthy(Some(&p)) => Map::new(),
            _ => return None,
        };
        let Some(Value::Object(mut data)) = packet.shift_remove("data") else {
            return None;
        };
        let Some(Value::Array(spans)) = data.shift_remove("spans") else {
            return None;
        };
        let first = spans.first()?;
        if !js::truthy(first.get("labels")) {
            return None;
        }
        Some((process, spans))
    }

    /// Censoring, label limits, the equal-times filter, durations.
    fn prepare_spans(&mut self, spans: Vec<Value>) -> Vec<Span> {
        let mut out = Vec::with_capacity(spans.len().min(self.cfg.max_spans_per_trace));
        for span in spans {
            let Value::Object(mut obj) = span else {
                self.drops.invalid_spans += 1;
                continue;
            };
            if self.cfg.censor {
                censor_span(&mut obj);
            }
            if let Some(Value::Object(labels)) = obj.get_mut("labels") {
                self.drops.labels += limit_labels(labels, &self.cfg);
            }
            if jsval::strict_eq(obj.get("endTime"), obj.get("startTime")) {
                continue;
            }
            let (Some(start), Some(end)) = (
                jsval::date_ms(obj.get("startTime")),
                jsval::date_ms(obj.get("endTime")),
            ) else {
                // JS would carry a NaN duration that poisons min/max forever.
                self.drops.invalid_spans += 1;
                continue;
            };
            if out.len() >= self.cfg.max_spans_per_trace {
                self.drops.spans += 1;
                continue;
            }
            let mean = js_round(end - start);
            obj.shift_remove("endTime");
            obj.insert("mean".into(), js::js_number(mean));
            out.push(Span { obj, mean });
        }
        out
    }

    /// `axm:transaction` for every app not in its learning period (JS sends
    /// the cumulated aggregation each time; nothing is reset).
    pub fn flush(&mut self, now: Instant) -> Vec<Packet> {
        let now_ms = self.ms(now);
        let duration = duration_ms(self.cfg.learning_duration);
        let order = paths::js_key_order(self.apps.iter().map(|a| a.name.as_str()));
        let mut out = Vec::new();
        for i in order {
            let app = &mut self.apps[i];
            app.outliers_sent = 0;
            if app.learning(now_ms, duration) {
                continue;
            }
            out.push(Packet::new("axm:transaction", app_payload(app, now_ms)));
        }
        out
    }

    /// `axm:transaction:learning` for the apps in their learning period
    /// whose 5-second step is due (call it at least every second).
    pub fn learning_tick(&mut self, now: Instant) -> Vec<Packet> {
        let now_ms = self.ms(now);
        let duration = duration_ms(self.cfg.learning_duration);
        let step = duration_ms(LEARNING_NOTIFY_INTERVAL).max(1);
        let order = paths::js_key_order(self.apps.iter().map(|a| a.name.as_str()));
        let mut out = Vec::new();
        for i in order {
            let app = &mut self.apps[i];
            if !app.learning(now_ms, duration) {
                continue;
            }
            let Some(l) = app.learning.as_mut() else {
                continue;
            };
            if now_ms < l.next_notify_ms {
                continue;
            }
            let elapsed = now_ms.saturating_sub(l.start_ms);
            l.next_notify_ms = l
                .start_ms
                .saturating_add((elapsed / step + 1).saturating_mul(step));
            let mut data = Map::new();
            data.insert(
                "learning_duration".into(),
                js::js_number(self.cfg.learning_duration.as_secs_f64()),
            );
            data.insert("elapsed".into(), Value::from(elapsed));
            let mut payload = Map::new();
            payload.insert("data".into(), Value::Object(data));
            payload.insert("process".into(), Value::Object(app.process.clone()));
            out.push(Packet::new(
                "axm:transaction:learning",
                Value::Object(payload),
            ));
        }
        out
    }
}

/// The global budgets, borrowed apart from the app being updated.
struct Budget<'a> {
    histograms: &'a mut usize,
    stored_bytes: &'a mut usize,
    drops: &'a mut TransactionDrops,
    cfg: &'a TransactionConfig,
}

impl Budget<'_> {
    fn take_histograms(&mut self, app: &mut App, n: usize) -> bool {
        if self.histograms.saturating_add(n) > self.cfg.max_histograms {
            if self.drops.histograms == 0 {
                tracing::warn!(
                    max = self.cfg.max_histograms,
                    "transaction histograms at their cap: new routes/variances are not aggregated"
                );
            }
            self.drops.histograms += 1;
            return false;
        }
        *self.histograms += n;
        app.histograms += n;
        true
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An app's key: `packet.process.name` as a JS object key.
fn app_key(name: Option<&Value>) -> String {
    match name {
        None => "undefined".to_owned(),
        Some(v) => js::to_js_string(v),
    }
}

/// `Math.round`: halves go up.
fn js_round(x: f64) -> f64 {
    let f = x.floor();
    if x - f >= 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// `Math.round(rate(1000) * 100) / 100`.
fn meter_value(m: &mut Meter, now_ms: u64) -> Value {
    js::js_number(js_round(m.rate(now_ms, 1000.0) * 100.0) / 100.0)
}

fn num(v: Option<f64>) -> Value {
    v.map_or(Value::Null, js::js_number)
}

/// `censorSpans` for one span with labels.
fn censor_span(span: &mut Map<String, Value>) {
    if !js::truthy(span.get("labels")) {
        return;
    }
    span.shift_remove("spanId");
    span.shift_remove("parentSpanId");
    let Some(Value::Object(labels)) = span.get_mut("labels") else {
        return;
    };
    for k in ["results", "result", "values"] {
        labels.shift_remove(k);
    }
    for (k, v) in labels.iter_mut() {
        if k == "stacktrace" {
            continue;
        }
        if let Value::String(s) = v {
            if let Some(c) = jsval::censor(s) {
                *s = c;
            }
        }
    }
}

/// Applies the label limits; returns how many labels were removed or cut.
fn limit_labels(labels: &mut Map<String, Value>, cfg: &TransactionConfig) -> u64 {
    let mut changed = 0u64;
    if labels.len() > cfg.max_labels_per_span {
        // The first ones (in the app's order) are kept.
        let extra: Vec<String> = labels
            .keys()
            .skip(cfg.max_labels_per_span)
            .cloned()
            .collect();
        for k in extra {
            labels.shift_remove(&k);
            changed += 1;
        }
    }
    let mut remove = Vec::new();
    for (k, v) in labels.iter_mut() {
        let stacktrace = k == "stacktrace";
        let max = if stacktrace {
            cfg.max_stacktrace_bytes
        } else {
            cfg.max_label_bytes
        };
        match v {
            // Cut, a stack trace would no longer be JSON: removed instead.
            Value::String(s) if s.len() > max && stacktrace => remove.push(k.clone()),
            Value::String(s) if s.len() > max => {
                let mut cut = max;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                changed += 1;
            }
            Value::Array(_) | Value::Object(_) if json_len(v) > max => remove.push(k.clone()),
            _ => {}
        }
    }
    for k in remove {
        labels.shift_remove(&k);
        changed += 1;
    }
    changed
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// The per-span part of `aggregate`: app histogram and HTTP meter for
/// `RPC_SERVER` spans, the outbound-HTTP rename, DB meter and histograms.
fn update_app_meta(
    app: &mut App,
    spans: &mut [Span],
    now_ms: u64,
    rng: &mut dyn RandomSource,
    budget: &mut Budget<'_>,
) {
    for span in spans.iter_mut() {
        if !js::truthy(span.obj.get("name")) || !js::truthy(span.obj.get("kind")) {
            continue;
        }
        if span.obj.get("kind").and_then(Value::as_str) == Some("RPC_SERVER") {
            app.histogram.update(span.mean, now_ms, rng);
            app.http_meter.update(now_ms, 1.0);
            continue;
        }
        let outbound = span.labels().is_some_and(|l| {
            js::truthy(l.get("http/method")) && js::truthy(l.get("http/status_code"))
        });
        if outbound {
            let old = span.obj.get("name").cloned().unwrap_or(Value::Null);
            if let Some(Value::Object(labels)) = span.obj.get_mut("labels") {
                labels.insert("service".into(), old);
            }
            span.obj
                .insert("name".into(), Value::String("outbound_http".into()));
        }
        // A non-string name would make JS throw; it is just not a DB call.
        let Some(name) = span.obj.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Some(kind) = SPANS_DB.iter().position(|db| name.contains(db)) else {
            continue;
        };
        app.db_meter.update(now_ms, 1.0);
        if app.db_histograms[kind].is_none() && budget.take_histograms(app, 1) {
            app.db_histograms[kind] = Some(Histogram::new());
        }
        if let Some(h) = app.db_histograms[kind].as_mut() {
            h.update(span.mean, now_ms, rng);
        }
    }
}

/// `compareList` (fixed: it really compares): same length, and per span
/// the same name and kind (`===`), labels both present or both absent, and
/// the same labels `.length` (which objects do not have, as in JS).
fn same_spans(stored: &[StoredSpan], spans: &[Span]) -> bool {
    stored.len() == spans.len()
        && stored.iter().zip(spans).all(|(a, b)| {
            let b_labels = b.obj.get("labels");
            let (a_has, b_has) = (js::truthy(a.labels.as_ref()), js::truthy(b_labels));
            jsval::strict_eq(a.name.as_ref(), b.obj.get("name"))
                && jsval::strict_eq(a.kind.as_ref(), b.obj.get("kind"))
                && a_has == b_has
                && (!a_has
                    || jsval::strict_eq(
                        jsval::js_length(a.labels.as_ref()).as_ref(),
                        jsval::js_length(b_labels).as_ref(),
                    ))
        })
}

/// `parseStacktrace`: a span's `stacktrace` label (JSON with a
/// `stack_frame` list) becomes `source/file` + `source/context` labels;
/// the `stacktrace` label itself is removed.
fn parse_stacktraces(spans: &mut [Span], context: &mut StackContext) {
    for span in spans.iter_mut() {
        let Some(Value::Object(labels)) = span.obj.get_mut("labels") else {
            continue;
        };
        if let Some(Value::String(raw)) = labels.get("stacktrace") {
            let found = serde_json::from_str::<Value>(raw).ok().and_then(|st| {
                match st.get("stack_frame") {
                    Some(Value::Array(frames)) => context.parse_frames(frames),
                    _ => None,
                }
            });
            if let Some(cs) = found {
                labels.insert("source/file".into(), Value::String(cs.callsite));
                labels.insert("source/context".into(), Value::String(cs.context));
            }
        }
        labels.shift_remove("stacktrace");
    }
}

/// `mergeTrace`: route histogram and meter, then the variance (new, or
/// merged with an outlier check).
#[allow(clippy::too_many_arguments)]
fn merge_trace(
    app: &mut App,
    route_index: usize,
    mut spans: Vec<Span>,
    now_ms: u64,
    learning: bool,
    rng: &mut dyn RandomSource,
    context: &mut StackContext,
    budget: &mut Budget<'_>,
) -> Option<Packet> {
    let first = spans[0].mean;
    if app.routes[route_index].meta.is_none() {
        if !budget.take_histograms(app, 1) {
            return None;
        }
        app.routes[route_index].meta = Some(RouteMeta {
            histogram: Histogram::new(),
            meter: Meter::new(now_ms),
        });
    }
    let route = &mut app.routes[route_index];
    if let Some(meta) = route.meta.as_mut() {
        meta.histogram.update(first, now_ms, rng);
        meta.meter.update(now_ms, 1.0);
    }

    if let Some(vi) = route
        .variances
        .iter()
        .position(|v| same_spans(&v.spans, &spans))
    {
        let mut outlier = None;
        let variance = &route.variances[vi];
        let p95 = variance.histogram.percentile(0.95);
        if !learning && first > p95.unwrap_or(0.0) {
            if app.outliers_sent < budget.cfg.max_outliers_per_flush {
                app.outliers_sent += 1;
                parse_stacktraces(&mut spans, context);
                outlier = Some(outlier_packet(&spans, variance, &app.process));
            } else {
                budget.drops.outliers += 1;
            }
        }
        let route = &mut app.routes[route_index];
        let variance = &mut route.variances[vi];
        variance.histogram.update(first, now_ms, rng);
        for (stored, span) in variance.spans.iter_mut().zip(&spans) {
            stored.histogram.update(span.mean, now_ms, rng);
        }
        return outlier;
    }

    // A new variance.
    if route.variances.len() >= budget.cfg.max_variances_per_route {
        if budget.drops.variances == 0 {
            tracing::warn!(app = %app.name, route = %route.key, "too many variances for a route");
        }
        budget.drops.variances += 1;
        return None;
    }
    parse_stacktraces(&mut spans, context);
    let means: Vec<f64> = spans.iter().map(|s| s.mean).collect();
    let stored: Vec<StoredSpan> = spans
        .into_iter()
        .map(|mut s| StoredSpan {
            name: s.obj.shift_remove("name"),
            labels: s.obj.shift_remove("labels"),
            kind: s.obj.shift_remove("kind"),
            start_time: s.obj.shift_remove("startTime"),
            histogram: Histogram::new(),
        })
        .collect();
    let bytes: usize = stored
        .iter()
        .map(|s| {
            [&s.name, &s.labels, &s.kind, &s.start_time]
                .iter()
                .map(|v| v.as_ref().map_or(0, json_len))
                .sum::<usize>()
        })
        .sum();
    if budget.stored_bytes.saturating_add(bytes) > budget.cfg.max_stored_bytes {
        if budget.drops.variances == 0 {
            tracing::warn!(
                max = budget.cfg.max_stored_bytes,
                "transaction variances at their size cap"
            );
        }
        budget.drops.variances += 1;
        return None;
    }
    if !budget.take_histograms(app, 1 + stored.len()) {
        return None;
    }
    *budget.stored_bytes += bytes;
    app.stored_bytes += bytes;
    let mut variance = Variance {
        spans: stored,
        histogram: Histogram::new(),
    };
    // JS order (it matters for the random draws): the variance, then each span.
    variance.histogram.update(first, now_ms, rng);
    for (stored, mean) in variance.spans.iter_mut().zip(means) {
        stored.histogram.update(mean, now_ms, rng);
    }
    app.routes[route_index].variances.push(variance);
    None
}

/// A JS object literal: entries in source order, `undefined` ones left out.
fn object<const N: usize>(entries: [(&str, Option<Value>); N]) -> Map<String, Value> {
    entries
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect()
}

/// `prepareAggregationforShipping` for one app. Objects that JS passes
/// through `fclone` come out with their keys reversed, as on the wire.
fn app_payload(app: &mut App, now_ms: u64) -> Value {
    let p = app.histogram.percentiles(&[0.5, 0.95, 0.99]);
    let mut meta = jsval::fclone_map(&object([
        ("trace_count", Some(Value::from(app.trace_count))),
        ("http_meter", Some(meter_value(&mut app.http_meter, now_ms))),
        ("db_meter", Some(meter_value(&mut app.db_meter, now_ms))),
        (
            "http_percentiles",
            Some(Value::Object(object([
                ("median", Some(num(p[0]))),
                ("p95", Some(num(p[1]))),
                ("p99", Some(num(p[2]))),
            ]))),
        ),
        ("db_percentiles", Some(Value::Object(Map::new()))),
    ]));
    if let Some(Value::Object(db)) = meta.get_mut("db_percentiles") {
        for (name, h) in SPANS_DB.iter().zip(&app.db_histograms) {
            if let Some(h) = h {
                db.insert((*name).to_owned(), num(h.percentile(0.5)));
            }
        }
    }

    let order = paths::js_key_order(app.routes.iter().map(|r| r.key.as_str()));
    let mut routes = Vec::new();
    for i in order {
        let route = &mut app.routes[i];
        let Some(rmeta) = route.meta.as_mut() else {
            continue;
        };
        if route.variances.is_empty() {
            continue;
        }
        // Most frequent first; stable, so ties keep their age order.
        route
            .variances
            .sort_by_key(|v| std::cmp::Reverse(v.histogram.count()));
        let rp = rmeta.histogram.percentiles(&[0.5, 0.95]);
        let route_meta = jsval::fclone_map(&object([
            ("min", Some(num(rmeta.histogram.min()))),
            ("max", Some(num(rmeta.histogram.max()))),
            ("count", Some(Value::from(rmeta.histogram.count()))),
            ("meter", Some(meter_value(&mut rmeta.meter, now_ms))),
            ("median", Some(num(rp[0]))),
            ("p95", Some(num(rp[1]))),
        ]));
        let variances: Vec<Value> = route
            .variances
            .iter()
            .take(VARIANCES_SENT)
            .map(variance_value)
            .collect();
        let path = if route.key == "/" {
            "/".to_owned()
        } else {
            format!("/{}", route.key)
        };
        routes.push(Value::Object(object([
            ("path", Some(Value::String(path))),
            ("meta", Some(Value::Object(route_meta))),
            ("variances", Some(Value::Array(variances))),
        ])));
    }
    Value::Object(object([
        (
            "data",
            Some(Value::Object(object([
                ("routes", Some(Value::Array(routes))),
                ("meta", Some(Value::Object(meta))),
            ]))),
        ),
        ("process", Some(Value::Object(app.process.clone()))),
    ]))
}

fn variance_value(v: &Variance) -> Value {
    let p = v.histogram.percentiles(&[0.5, 0.95]);
    let mut out = jsval::fclone_map(&object([
        ("spans", Some(Value::Array(vec![]))),
        ("count", Some(Value::from(v.histogram.count()))),
        ("min", Some(num(v.histogram.min()))),
        ("max", Some(num(v.histogram.max()))),
        ("median", Some(num(p[0]))),
        ("p95", Some(num(p[1]))),
    ]));
    let spans: Vec<Value> = v
        .spans
        .iter()
        .map(|s| {
            Value::Object(jsval::fclone_map(&object([
                ("name", s.name.clone()),
                ("labels", s.labels.clone()),
                ("kind", s.kind.clone()),
                ("startTime", s.start_time.clone()),
                ("min", Some(num(s.histogram.min()))),
                ("max", Some(num(s.histogram.max()))),
                ("median", Some(num(s.histogram.percentile(0.5)))),
            ])))
        })
        .collect();
    out.insert("spans".into(), Value::Array(spans));
    Value::Object(out)
}

/// `axm:transaction:outlier`: the slow trace, its variance and the
/// variance's statistics before this trace.
fn outlier_packet(spans: &[Span], variance: &Variance, process: &Map<String, Value>) -> Packet {
    let h = &variance.histogram;
    let p = h.percentiles(&[0.5, 0.75, 0.95, 0.99]);
    let trace: Vec<Value> = spans
        .iter()
        .map(|s| Value::Object(jsval::fclone_map(&s.obj)))
        .collect();
    let var_spans: Vec<Value> = variance
        .spans
        .iter()
        .map(|s| {
            Value::Object(jsval::fclone_map(&object([
                ("labels", s.labels.clone()),
                ("kind", s.kind.clone()),
                ("name", s.name.clone()),
                ("startTime", s.start_time.clone()),
                (
                    "percentiles",
                    Some(Value::Object(object([
                        ("p5", Some(num(p[0]))),
                        ("p95", Some(num(p[2]))),
                    ]))),
                ),
            ])))
        })
        .collect();
    let meta = object([
        ("value", Some(js::js_number(spans[0].mean))),
        (
            "percentiles",
            Some(Value::Object(object([
                ("p5", Some(num(p[0]))),
                ("p75", Some(num(p[1]))),
                ("p95", Some(num(p[2]))),
                ("p99", Some(num(p[3]))),
            ]))),
        ),
        ("min", Some(num(h.min()))),
        ("max", Some(num(h.max()))),
        ("count", Some(Value::from(h.count()))),
    ]);
    Packet::new(
        "axm:transaction:outlier",
        Value::Object(object([
            ("trace", Some(Value::Array(trace))),
            ("variance", Some(Value::Array(var_spans))),
            ("meta", Some(Value::Object(meta))),
            ("process", Some(Value::Object(process.clone()))),
        ])),
    )
}
