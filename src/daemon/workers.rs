//! The daemon's running parts once verified. Data flows one way through
//! them:
//!
//! ```text
//! PM2 (rpc.sock, pub.sock) ─► status loop / bus loop ─► push pipeline ─► Hub ─► transporters ─► PM2.io
//! PM2.io ─► transporters ─► inbound channel ─► reverse ─► PM2 (rpc.sock), replies ─► Hub
//! ```
//!
//! Every queue between the stages is bounded: the bus subscription, the
//! inbound channel, the transporters' own queues, and the number of remote
//! actions running at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};

use crate::common::drops::Drops;
use crate::common::{Endpoints, Packet};
use crate::config::transporters::Kind;
use crate::config::DaemonConfig;
use crate::inspect::traffic::Traffic;
use crate::net::NetOptions;
use crate::pm2::snapshot::{ProcSnapshot, SnapshotReader};
use crate::pm2::Pm2Client;
use crate::push::events::{EventPipeline, PushAction, PushConfig};
use crate::push::host_sampler::HostSampler;
use crate::push::profiling::{self, read_profile, ProfilePolicy};
use crate::push::status::{build_status_from, internal_ip, CpuMeta, HostIdentity, StatusContext};
use crate::push::streaming::LogStreaming;
use crate::push::transactions::{TransactionAggregator, TransactionConfig};
use crate::reverse::{BoxFuture, Pm2Api, Reverse, ReverseConfig};
use crate::socket::rpc::RpcError;
use crate::transport::axon::{Axon, AxonOptions};
use crate::transport::hub::Hub;
use crate::transport::link::{Link, LinkOptions};
use crate::transport::plan;
use crate::transport::route::{Role, Route};
use crate::transport::spool::SpoolConfig;
use crate::transport::websocket::{WebSocket, WebSocketOptions};
use crate::transport::Transporter;

/// Bus events waiting for the push pipeline; a log flood beyond this is
/// dropped (and counted) rather than buffered.
const BUS_QUEUE: usize = 8192;
/// Bus events handled in one go (then the writers get their turn).
const BUS_BATCH: usize = 256;
/// Commands from PM2.io waiting to be handled.
const INBOUND_QUEUE: usize = 256;
/// Remote actions running at once.
const MAX_CONCURRENT_ACTIONS: usize = 32;
/// Deadline of the `getMonitorData` call of each status tick.
const STATUS_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// The JS agent re-reads the internal IP every 61 ticks.
const INTERNAL_IP_REFRESH_TICKS: u32 = 61;
/// How often learning-period notifications are looked at (they are due
/// every 5 s per app).
const LEARNING_TICK: Duration = Duration::from_secs(1);

/// Called when a worker task dies of a panic: the daemon rescues itself.
pub type FatalHandler = Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Arc<DaemonConfig>,
    pm2: Pm2Client,
    /// The transporters in use, replaced when a re-verification changes
    /// which ones apply.
    hub: Mutex<Arc<Hub>>,
    /// Everything dropped, per channel and reason (`getInfos.drops`).
    drops: Arc<Drops>,
    inbound_tx: mpsc::Sender<Packet>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Notified when a transporter starts carrying: a status goes out at
    /// once rather than at the next tick.
    status_now: Arc<Notify>,
    /// The inspector's recorder, given to every hub built.
    tap: Option<Arc<Traffic>>,
}

impl Workers {
    /// Starts the PM2 client and the loops; connects the transporters when
    /// the agent is active (`endpoints` given). `tap` records every packet
    /// handed to the transporters (the inspector).
    pub fn start(
        cfg: Arc<DaemonConfig>,
        endpoints: Option<Endpoints>,
        on_fatal: FatalHandler,
        tap: Option<Arc<Traffic>>,
    ) -> Workers {
        let pm2 = Pm2Client::connect(&cfg.paths.rpc_sock, &cfg.paths.pub_sock);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let workers = Workers {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                pm2: pm2.clone(),
                hub: Mutex::new(Arc::new(Hub::default())),
                drops: Arc::default(),
                inbound_tx,
                tasks: Mutex::new(vec![]),
                status_now: Arc::new(Notify::new()),
                tap,
            }),
        };
        if let Some(eps) = &endpoints {
            workers.connect_transports(eps);
        }
        let streaming = LogStreaming::new();
        let pipeline = Arc::new(Mutex::new(EventPipeline::new(
            PushConfig {
                machine_name: cfg.identity.machine_name.clone(),
                public_key: cfg.identity.public_key.clone(),
                enable_context_on_error: cfg.enable_context_on_error,
                logs_buffer: cfg.logs_buffer,
                context_on_error: cfg.context_on_error,
            },
            streaming.clone(),
        )));
        let reverse = Arc::new(Reverse::new(
            Arc::new(pm2.clone()),
            ReverseConfig::new(
                cfg.identity.machine_name.clone(),
                cfg.identity.public_key.clone(),
            ),
            streaming,
        ));
        let transactions = Arc::new(Mutex::new(TransactionAggregator::new(TransactionConfig {
            flush_interval: cfg.trace_flush_interval,
            learning_duration: cfg.aggregation_duration,
            censor: cfg.trace_censoring,
            ..TransactionConfig::new(cfg.identity.machine_name.clone())
        })));
        // The bus loop tells the transactions loop when traces bring a new
        // app (until then it has no learning period to watch).
        let new_app = Arc::new(Notify::new());
        let mut tasks = vec![
            (
                "status loop",
                tokio::spawn(status_loop(workers.clone(), pipeline.clone())),
            ),
            (
                "bus loop",
                tokio::spawn(bus_loop(
                    workers.clone(),
                    pipeline,
                    transactions.clone(),
                    new_app.clone(),
                )),
            ),
            (
                "transactions loop",
                tokio::spawn(transactions_loop(workers.clone(), transactions, new_app)),
            ),
            (
                "inbound loop",
                tokio::spawn(inbound_loop(workers.clone(), reverse, inbound_rx)),
            ),
        ];
        if cfg.watchdog {
            tasks.push((
                "watchdog",
                tokio::spawn(super::watchdog::run(cfg.clone(), pm2.clone())),
            ));
        }
        let tasks = supervise(tasks, on_fatal);
        *lock(&workers.inner.tasks) = tasks;
        workers
    }

    fn hub(&self) -> Arc<Hub> {
        lock(&self.inner.hub).clone()
    }

    fn send(&self, packet: Packet) {
        self.hub().send(packet);
    }

    /// Connects the transporters that apply to `endpoints` (config.json,
    /// `AGENT_*` env, fallbacks), rebuilding them when a re-verification
    /// changes which ones apply. Unchanged endpoints are a no-op.
    pub fn connect_transports(&self, endpoints: &Endpoints) {
        let cfg = &self.inner.cfg;
        let plan = plan::plan(&cfg.transporters, endpoints);
        if let Some(note) = &plan.note {
            tracing::info!("{note}");
        }
        let mut hub = lock(&self.inner.hub);
        if hub.shape() != plan.shape() {
            let next = Arc::new(
                Hub::build(
                    &plan,
                    &|kind, route, role| self.build_transporter(kind, route, role),
                    cfg.packet_queue_size,
                    cfg.queue_bytes,
                    &self.inner.drops,
                    &|i| {
                        cfg.spool.as_ref().map(|s| {
                            let mut c = SpoolConfig::new(s.dir.join(format!("route-{i}")));
                            c.max_bytes = s.max_bytes;
                            c.max_age = s.max_age;
                            // Whole segments are dropped when full: keep them
                            // small next to the bound.
                            c.segment_bytes = (s.max_bytes / 8).clamp(4096, 1 << 20);
                            c
                        })
                    },
                )
                .with_tap(self.inner.tap.clone()),
            );
            hub.replace_with(&next);
            *hub = next;
        }
        hub.apply(&plan);
    }

    fn build_transporter(
        &self,
        kind: Kind,
        route: Arc<Route>,
        role: Role,
    ) -> Option<Arc<dyn Transporter>> {
        let cfg = &self.inner.cfg;
        route.signal_carrier(self.inner.status_now.clone());
        let link = LinkOptions {
            proof_timeout: cfg.proof_timeout,
            ..LinkOptions::default()
        };
        let inbound = self.inner.inbound_tx.clone();
        let built = match kind {
            Kind::WebSocket => {
                let options = WebSocketOptions {
                    net: NetOptions::from_env(),
                    json_patch: cfg.ws_json_patch,
                    gzip: cfg.ws_gzip,
                    ..WebSocketOptions::default()
                }
                .with_dead_peer_timeout(cfg.dead_peer_timeout);
                let ws = WebSocket::new(cfg.identity.clone(), options);
                Link::spawn(ws, link, route, role, inbound)
                    .map(|t| Arc::new(t) as Arc<dyn Transporter>)
            }
            Kind::Axon => {
                let options = AxonOptions {
                    system_metadata: cfg.system_metadata(),
                    status_interval: cfg.status_interval,
                    dead_peer_timeout: cfg.dead_peer_timeout,
                    ..AxonOptions::default()
                };
                let axon = Axon::new(cfg.identity.clone(), options);
                Link::spawn(axon, link, route, role, inbound)
                    .map(|t| Arc::new(t) as Arc<dyn Transporter>)
            }
        };
        match built {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!("cannot create the {} transporter: {e}", kind.key());
                None
            }
        }
    }

    pub fn disconnect_transports(&self) {
        self.hub().disconnect();
    }

    pub fn is_connected(&self) -> bool {
        self.hub().is_connected()
    }

    pub fn active_transporters(&self) -> Vec<String> {
        self.hub()
            .active_transporters()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    pub fn last_error(&self) -> Option<String> {
        let hub = self.hub();
        if hub.is_connected() {
            return None;
        }
        hub.last_error()
    }

    /// Everything dropped so far, per channel and reason.
    pub fn drops_infos(&self) -> Value {
        self.inner.drops.to_json()
    }

    /// Each transporter's state, for `getInfos.transport`.
    pub fn transport_infos(&self) -> Value {
        self.hub().infos()
    }

    /// Stops the loops, disconnects the transporters and PM2.
    pub async fn stop(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        self.hub().disconnect();
        self.inner.pm2.close().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Watches the worker tasks: one that panics is logged with its name and
/// the panic message, and the daemon is asked to rescue itself (a silently
/// dead status loop would leave the dashboard frozen while the agent looks
/// alive). Returns abort handles for every task, supervisor included.
fn supervise(
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    on_fatal: FatalHandler,
) -> Vec<AbortHandle> {
    let mut aborts: Vec<AbortHandle> = tasks.iter().map(|(_, h)| h.abort_handle()).collect();
    let supervisor = tokio::spawn(async move {
        let (mut names, mut pending): (Vec<_>, Vec<_>) = tasks.into_iter().unzip();
        while !pending.is_empty() {
            let (res, i, rest) = futures_util::future::select_all(pending).await;
            let name = names.remove(i);
            pending = rest;
            match res {
                Err(e) if e.is_panic() => {
                    let why = format!(
                        "{name} panicked: {}",
                        super::panic_message(&*e.into_panic())
                    );
                    tracing::error!("{why}");
                    on_fatal(why);
                    return;
                }
                Err(_) => {} // aborted on stop
                Ok(()) => tracing::debug!("{name} ended"),
            }
        }
    });
    aborts.push(supervisor.abort_handle());
    aborts
}

/// Every STATUS_INTERVAL: PM2's process list → pipeline bookkeeping →
/// `status`. A tick is skipped while PM2 is unreachable (status is never
/// queued, so nothing is lost that would still be true later).
async fn status_loop(workers: Workers, pipeline: Arc<Mutex<EventPipeline>>) {
    let cfg = workers.inner.cfg.clone();
    // Node's own `os.cpus()` when the JS wrapper passed it (the exact
    // `cpuMeta` of DataRetriever.js); the OS otherwise.
    let host = HostIdentity::detect_with(CpuMeta::from_node_cpus(&cfg.host.cpus));
    let mut ctx = StatusContext {
        server_name: cfg.identity.machine_name.clone(),
        internal_ip: internal_ip(),
        rev_con: false,
        pm2_version: Some(cfg.identity.pm2_version.clone()),
        agent_version: cfg.identity.agent_version.clone(),
        node_version: cfg.host.node_version.clone(),
        unique_id: unique_server_id(),
        // The seed-era backends read `interaction` (PM2's own interactor
        // sent PM2_REVERSE_INTERACT, true by default); this agent always
        // accepts remote actions.
        interaction: Some(true),
        host,
    };
    let mut tick = tokio::time::interval(cfg.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ip_countdown = INTERNAL_IP_REFRESH_TICKS;
    let mut host_stats = HostSampler::new();
    let mut reader = SnapshotReader::new();
    let inject_panic = cfg.fault_injection.as_deref() == Some("panic:status");
    let mut pm2_ready = workers.inner.pm2.rpc().readiness();
    loop {
        // A tick, or sooner: PM2 just became reachable, or a transporter
        // just started carrying (the dashboard sees the server at once).
        // Either restarts the interval, so ticks stay one interval apart.
        tokio::select! {
            _ = tick.tick() => {}
            _ = workers.inner.status_now.notified() => tick.reset(),
            Ok(()) = pm2_ready.changed() => {
                if pm2_ready.borrow_and_update().is_none() {
                    continue;
                }
                tick.reset();
            }
        }
        if inject_panic {
            panic!("fault injection: panic in the status loop");
        }
        if !workers.inner.pm2.is_ready() {
            tracing::trace!("PM2 not ready; no status this tick");
            continue;
        }
        ip_countdown -= 1;
        if ip_countdown == 0 {
            ip_countdown = INTERNAL_IP_REFRESH_TICKS;
            ctx.internal_ip = internal_ip();
        }
        let snapshot = workers.inner.pm2.monitor_snapshot(&mut reader);
        let procs = match tokio::time::timeout(STATUS_RPC_TIMEOUT, snapshot).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!("getMonitorData failed: {e}");
                continue;
            }
            Err(_) => {
                tracing::debug!("getMonitorData timed out");
                continue;
            }
        };
        let tracked: Vec<Value> = procs.iter().map(ProcSnapshot::pipeline_view).collect();
        lock(&pipeline).on_status_tick(&tracked);
        let stats = host_stats.sample(std::time::Instant::now());
        workers.send(Packet::new(
            "status",
            build_status_from(procs, &ctx, &stats),
        ));
        // The tail of any burst of drops reaches agent.log too.
        workers.inner.drops.report_due();
    }
}

/// PM2's bus → push pipeline (and transaction aggregator) → transporters.
async fn bus_loop(
    workers: Workers,
    pipeline: Arc<Mutex<EventPipeline>>,
    transactions: Arc<Mutex<TransactionAggregator>>,
    new_app: Arc<Notify>,
) {
    let mut sub = workers.inner.pm2.subscribe_all(BUS_QUEUE);
    let mut reported_drops = 0;
    let mut batch = Vec::with_capacity(BUS_BATCH);
    while sub.recv_many(&mut batch, BUS_BATCH).await > 0 {
        for ev in batch.drain(..) {
            bus_event(&workers, &pipeline, &transactions, &new_app, ev);
        }
        let dropped = sub.dropped();
        if dropped > reported_drops {
            workers.inner.drops.record(
                "bus",
                "PM2 bus subscription full: the agent could not keep up",
                dropped - reported_drops,
            );
            reported_drops = dropped;
        }
    }
}

/// One bus event through the pipeline (and the transaction aggregator).
fn bus_event(
    workers: &Workers,
    pipeline: &Mutex<EventPipeline>,
    transactions: &Arc<Mutex<TransactionAggregator>>,
    new_app: &Notify,
    ev: crate::socket::sub_emitter::Event,
) {
    let packet = ev
        .args
        .into_iter()
        .next()
        .and_then(|a| a.into_value())
        .unwrap_or(Value::Null);
    // The raw event (the pipeline only forwards a normalised copy).
    if ev.topic == "process:event" {
        lock(transactions).on_process_event(&packet, std::time::Instant::now());
    }
    let actions = lock(pipeline).handle(&ev.topic, packet);
    for action in actions {
        match action {
            PushAction::Send(p) => workers.send(p),
            PushAction::Profile { path, meta } => {
                let w = workers.clone();
                tokio::spawn(async move {
                    // Only from where PM2 and its apps write dumps, at most
                    // the profiling module's size limit.
                    let policy = ProfilePolicy::new(
                        &w.inner.cfg.paths.pm2_home,
                        profiling::MAX_PROFILE_BYTES,
                    );
                    match read_profile(&path, meta, &policy).await {
                        Ok(p) => w.send(p),
                        Err(e) => profiling::report(&e, &w.inner.drops),
                    }
                });
            }
            PushAction::Trace(trace) => {
                let (outliers, added) = {
                    let mut t = lock(transactions);
                    let before = t.app_count();
                    let outliers = t.aggregate(trace, std::time::Instant::now());
                    (outliers, t.app_count() > before)
                };
                if added {
                    new_app.notify_one();
                }
                for p in outliers {
                    workers.send(p);
                }
            }
        }
    }
}

/// `axm:transaction` every TRACE_FLUSH_INTERVAL (first one an interval
/// after start, like the JS `setInterval`), learning notifications when due.
/// The learning check runs every second only once traces brought an app:
/// an agent without tracing does not wake up for it.
async fn transactions_loop(
    workers: Workers,
    transactions: Arc<Mutex<TransactionAggregator>>,
    new_app: Arc<Notify>,
) {
    let period = lock(&transactions)
        .config()
        .flush_interval
        .max(Duration::from_millis(100));
    let start = tokio::time::Instant::now();
    let mut flush = tokio::time::interval_at(start + period, period);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut learning = tokio::time::interval_at(start + LEARNING_TICK, LEARNING_TICK);
    learning.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let has_apps = lock(&transactions).app_count() > 0;
        let packets = tokio::select! {
            _ = flush.tick() => lock(&transactions).flush(std::time::Instant::now()),
            _ = learning.tick(), if has_apps => lock(&transactions).learning_tick(std::time::Instant::now()),
            _ = new_app.notified(), if !has_apps => {
                learning.reset_after(Duration::ZERO);
                continue;
            }
        };
        for p in packets {
            workers.send(p);
        }
    }
}

/// PM2.io's commands → reverse → replies to PM2.io.
async fn inbound_loop(
    workers: Workers,
    reverse: Arc<Reverse>,
    mut inbound: mpsc::Receiver<Packet>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_ACTIONS));
    while let Some(packet) = inbound.recv().await {
        if !Reverse::handles(&packet.channel) {
            tracing::debug!(channel = %packet.channel, "inbound channel ignored");
            continue;
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (w, r) = (workers.clone(), reverse.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(reply) = r.handle(&packet.channel, packet.payload).await {
                w.send(reply);
            }
        });
    }
}

impl Pm2Api for Pm2Client {
    fn call<'a>(
        &'a self,
        method: &'a str,
        args: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, String>> {
        Box::pin(async move {
            Pm2Client::call(self, method, args)
                .await
                .map_err(|e| match e {
                    RpcError::Remote(r) => r.message,
                    other => other.to_string(),
                })
        })
    }
}

/// `UNIQUE_SERVER_ID`: a random v4-style UUID per agent process.
fn unique_server_id() -> String {
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&crate::entropy::entropy_u64().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
