//! Client of the PM2 daemon: RPC on `rpc.sock` (methods rediscovered after
//! every reconnect) and the event bus on `pub.sock` (a sub-emitter on `*`).
//! Both sockets reconnect on axon's schedule, so a restarted PM2 is picked
//! up again without the agent doing anything.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

pub mod snapshot;

use crate::protocol::amp;
use crate::socket::endpoint::Endpoint;
use crate::socket::req::ReqOptions;
use crate::socket::rpc::{RpcClient, RpcError};
use crate::socket::sub_emitter::{SubEmitter, Subscriber};

/// Default deadline of an RPC call to PM2 (axon has none).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Pm2Client {
    rpc: RpcClient,
    bus: SubEmitter,
}

impl Pm2Client {
    pub fn connect(rpc_sock: &Path, pub_sock: &Path) -> Pm2Client {
        let rpc = RpcClient::connect(
            Endpoint::local(rpc_sock),
            ReqOptions {
                lazy_json: true,
                timeout: RPC_TIMEOUT,
                max_queued: 256,
                max_pending: 256,
                ..Default::default()
            },
        );
        let bus = SubEmitter::connect(Endpoint::local(pub_sock), amp::DEFAULT_MAX_FRAME);
        Pm2Client { rpc, bus }
    }

    /// Calls a PM2 method with positional arguments (exact arity matters:
    /// PM2 appends its callback after them).
    pub async fn call(&self, method: &str, args: Vec<Value>) -> Result<Vec<Value>, RpcError> {
        self.rpc.call(method, args).await
    }

    /// `getMonitorData({})`: every process with its `pm2_env` and `monit`.
    pub async fn get_monitor_data(&self) -> Result<Vec<Value>, RpcError> {
        let reply = self
            .call("getMonitorData", vec![Value::Object(Default::default())])
            .await?;
        match reply.into_iter().next() {
            Some(Value::Array(procs)) => Ok(procs),
            _ => Err(RpcError::Malformed(
                "getMonitorData did not return a list".into(),
            )),
        }
    }

    /// `getMonitorData({})` reduced to what `status` and the push pipeline
    /// read. PM2's reply carries every app's whole environment (often
    /// hundreds of KB each second); `reader` skims it without building a
    /// JSON tree and parses only the fields that changed since its last
    /// read.
    pub async fn monitor_snapshot(
        &self,
        reader: &mut snapshot::SnapshotReader,
    ) -> Result<Vec<snapshot::ProcSnapshot>, RpcError> {
        let text = self
            .rpc
            .call_text("getMonitorData", vec![Value::Object(Default::default())])
            .await?;
        reader.read(&text)
    }

    /// Every bus event (`*`), in a queue of `capacity` events; when the
    /// consumer falls behind, events are dropped and counted.
    pub fn subscribe_all(&self, capacity: usize) -> Subscriber {
        self.bus.subscribe("*", capacity)
    }

    /// RPC connected and methods discovered.
    pub fn is_ready(&self) -> bool {
        self.rpc.methods().is_some()
    }

    pub fn is_connected(&self) -> bool {
        self.rpc.socket().is_connected()
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    pub fn bus(&self) -> &SubEmitter {
        &self.bus
    }

    pub async fn close(&self) {
        self.bus.close();
        self.rpc.close().await;
    }
}
