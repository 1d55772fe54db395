//! Prometheus metrics of the agent and the manager, and the HTTP endpoint that serves them
//! (`--metrics-listen-addr`, off unless given).
//!
//! Instruments that count what happens (heartbeats, pulls, placements, …) are process-wide
//! statics, like the tracing subscriber: one daemon runs per process, and code deep in a
//! runtime can count without a handle threaded through every constructor. What describes
//! a state (kernels by state, host, GPUs, slots, per-kernel usage, agents) is read at scrape
//! time by a [`Collector`](prometheus_client::collector::Collector) from what the daemon
//! keeps anyway (the last heartbeat's snapshot, the kernel table, the agent table), so a
//! scrape does no sampling of its own and a series goes away with what it describes.
//!
//! - [`agent`]: the agent's families and its collector;
//! - [`host`]: host, slots and GPUs (DCGM exporter names) from the heartbeat snapshot;
//! - [`manager`]: the manager's families and its collector;
//! - [`etcd`]: the etcd session's connection state (both daemons).
//!
//! The exposition is the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), which
//! `promtool check metrics` and every scraper read.

pub mod counters;
pub mod etcd;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::util::shutdown::Tasks;

/// Buckets (seconds) of the latency histograms: 5 ms to 10 min.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0,
];

/// Why the metrics endpoint could not start; always names the flag.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("--metrics-listen-addr `{addr}`: cannot listen: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Checks a `--metrics-listen-addr` value (`HOST:PORT`, the host an IP address or a name
/// that resolves), for clap: a bad one is refused before anything starts.
pub fn parse_listen_addr(s: &str) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
    port.parse::<u16>()
        .map_err(|_| format!("`{s}`: port `{port}` is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err(format!(
            "`{s}`: the host is missing (0.0.0.0:{port} listens on every address)"
        ));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("`{s}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))?;
    Ok(s.to_string())
}

/// A bound, not yet serving metrics listener.
pub struct Bound {
    listener: TcpListener,
    pub local_addr: SocketAddr,
}

/// Binds the metrics listener; a taken port fails the daemon's start, naming the flag.
pub async fn bind(addr: &str) -> Result<Bound, MetricsError> {
    let bad = |source| MetricsError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bad)?;
    let local_addr = listener.local_addr().map_err(bad)?;
    Ok(Bound {
        listener,
        local_addr,
    })
}

/// `GET /metrics` of `registry`, merged with the daemon's other read-only pages.
pub fn router(registry: Registry, pages: Router) -> Router {
    let registry = Arc::new(registry);
    pages.route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { exposition(&registry) }
        }),
    )
}

fn exposition(registry: &Registry) -> Response {
    let mut text = String::with_capacity(16 * 1024);
    match prometheus_text::encode(&mut text, registry) {
        Ok(()) => ([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        )
            .into_response(),
    }
}

/// Serves `router` on `bound` as the owned task `metrics`, stopped with the daemon; logs
/// where (under the daemon's `span`).
pub fn spawn(tasks: &Tasks, bound: Bound, router: Router, span: tracing::Span) {
    let stop = tasks.token();
    let work = async move {
        let addr = bound.local_addr;
        tracing::info!(address = %addr, "serving metrics on http://{addr}/metrics");
        let served = axum::serve(bound.listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(address = %addr, "metrics endpoint stopped: {e}");
        }
    };
    tasks.spawn("metrics", tracing::Instrument::instrument(work, span));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_checked_before_anything_starts() {
        assert!(parse_listen_addr("127.0.0.1:9100").is_ok());
        assert!(parse_listen_addr("0.0.0.0:0").is_ok());
        assert!(parse_listen_addr("[::1]:9100").is_ok());
        assert!(parse_listen_addr("localhost:9100").is_ok());
        for bad in [
            "9100",
            "127.0.0.1:http",
            "127.0.0.1:70000",
            ":9100",
            "no such host!:1",
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad} accepted");
        }
    }
}
