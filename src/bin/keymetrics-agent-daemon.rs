//! `keymetrics-agent-daemon`: the PM2.io agent daemon as a native process,
//! without Node. All the work is in the library ([`interactor::host::run`]);
//! `InteractorClient.daemonize` starts this binary when
//! `PM2_AGENT_NATIVE=true`.

#[cfg(unix)]
fn main() {
    std::process::exit(interactor::host::run());
}

#[cfg(not(unix))]
fn main() {
    eprintln!(
        "keymetrics-agent-daemon runs on Unix only; use the Node-hosted daemon (leave PM2_AGENT_NATIVE unset)"
    );
    std::process::exit(1);
}
