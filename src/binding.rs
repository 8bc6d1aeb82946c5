//! The napi exports: the only file that knows about Node. Everything here is
//! glue that converts arguments and hands work to the Rust core on napi's
//! tokio runtime.

use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use crate::socket::endpoint::Endpoint;
use crate::socket::req::ReqOptions;
use crate::socket::rpc::{RpcClient, RpcError};

#[napi_derive::module_init]
fn init() {}

/// The agent's version (the package version).
#[napi]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn endpoint(path: &str) -> Result<Endpoint> {
    Endpoint::parse(path).map_err(|e| Error::new(Status::InvalidArg, e.to_string()))
}

/// Whether something accepts connections on the axon socket at `path`
/// (the CLI's liveness probe of `interactor.sock`).
#[napi]
pub async fn ping_socket(path: String, timeout_ms: Option<u32>) -> Result<bool> {
    let ep = endpoint(&path)?;
    let t = Duration::from_millis(timeout_ms.unwrap_or(1000) as u64);
    Ok(matches!(tokio::time::timeout(t, ep.connect()).await, Ok(Ok(_))))
}

/// One pm2-axon-rpc call on a fresh connection: resolves with the reply's
/// arguments, rejects with the remote error's message.
#[napi(ts_args_type = "path: string, method: string, args: any[], timeoutMs?: number", ts_return_type = "Promise<any[]>")]
pub async fn rpc_call(path: String, method: String, args: Vec<Value>, timeout_ms: Option<u32>) -> Result<Vec<Value>> {
    let ep = endpoint(&path)?;
    let t = Duration::from_millis(timeout_ms.unwrap_or(5000) as u64);
    let client = RpcClient::connect(ep, ReqOptions { timeout: t, max_queued: 4, ..Default::default() });
    let res = client.call(&method, args).await;
    client.close().await;
    res.map_err(|e| match e {
        RpcError::Remote(r) => Error::new(Status::GenericFailure, r.message),
        other => Error::new(Status::GenericFailure, other.to_string()),
    })
}
