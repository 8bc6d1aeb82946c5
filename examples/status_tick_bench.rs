//! Micro-benchmark of one status tick's data work on captured
//! `getMonitorData` replies: parse, build the status, diff it against the
//! previous one (WS_JSON_PATCH) and serialise the patch.
//!
//! Capture two replies a second apart (`{"args":[<list>]}`, as PM2 sends
//! them) and run:
//!
//! ```sh
//! cargo run --release --example status_tick_bench -- a.json b.json [iterations]
//! ```

use std::time::Instant;

use interactor::pm2::snapshot::SnapshotReader;
use interactor::push::status::{build_status_from, HostIdentity, HostStats, StatusContext};
use interactor::transport::websocket::json_patch;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: status_tick_bench <reply-a.json> <reply-b.json> [iterations]");
        std::process::exit(2);
    }
    let replies: Vec<Vec<u8>> = args[..2]
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}")))
        .collect();
    let iterations: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let ctx = StatusContext {
        server_name: "bench-machine".into(),
        internal_ip: "10.0.0.1".into(),
        rev_con: false,
        pm2_version: Some("7.0.4".into()),
        agent_version: "7.0.4".into(),
        node_version: "v20.20.2".into(),
        unique_id: "99146de2-68e9-4160-b99e-d33f2f92716e".into(),
        interaction: Some(true),
        host: HostIdentity::detect(),
    };
    let stats = HostStats::read();
    let (mut parse, mut build, mut diff, mut ser) = (0u128, 0u128, 0u128, 0u128);
    let mut prev = None;
    let mut reader = SnapshotReader::new();
    let mut bytes = 0;
    for i in 0..iterations {
        let text = &replies[i as usize % 2];
        let t0 = Instant::now();
        let procs = reader.read(text).expect("parse");
        let t1 = Instant::now();
        let status = build_status_from(procs, &ctx, &stats);
        let t2 = Instant::now();
        let ops = prev.as_ref().map(|p| json_patch::compare(p, &status));
        let t3 = Instant::now();
        bytes = serde_json::to_string(&ops).map(|s| s.len()).unwrap_or(0);
        let t4 = Instant::now();
        prev = Some(status);
        parse += (t1 - t0).as_nanos();
        build += (t2 - t1).as_nanos();
        diff += (t3 - t2).as_nanos();
        ser += (t4 - t3).as_nanos();
    }
    let us = |ns: u128| ns as f64 / f64::from(iterations) / 1000.0;
    println!(
        "reply {} B, patch {bytes} B: parse {:.1} µs, build {:.1} µs, diff {:.1} µs, serialise {:.1} µs, total {:.1} µs per tick",
        replies[0].len(),
        us(parse),
        us(build),
        us(diff),
        us(ser),
        us(parse + build + diff + ser)
    );
}
