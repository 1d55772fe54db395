//! Serving and dialing gRPC: every deckhand server also answers `grpc.health.v1` and server
//! reflection, binds before it reports ready (so a taken port is a clear error at start),
//! and stops when the shutdown token is cancelled. With TLS files ([`TlsFiles`]) a server
//! serves TLS (mutual TLS when they hold a CA) and a channel dials `https`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::ServingStatus;

use super::pb::FILE_DESCRIPTOR_SET;
use crate::util::tls::{append_sources, error_chain, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("gRPC server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("invalid gRPC address `{addr}`: {reason}")]
    Address { addr: String, reason: String },
    #[error("gRPC TLS setup failed: {0}")]
    Tls(String),
}

/// A bound, not yet serving gRPC listener.
pub struct Bound {
    listener: TcpListener,
    pub local_addr: SocketAddr,
}

/// Binds `addr` (`HOST:PORT`; port 0 picks a free one).
pub async fn bind(addr: &str) -> Result<Bound, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    Ok(Bound {
        listener,
        local_addr,
    })
}

/// Serves `routes` plus health and reflection on a bound listener until `stop` is
/// cancelled. `service_names` are reported SERVING by the health service. With an identity
/// in `tls` every connection is TLS; with a CA too, clients must present a certificate
/// signed by it.
pub async fn serve(
    bound: Bound,
    routes: Routes,
    service_names: &[&str],
    tls: &TlsFiles,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in service_names {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let addr = bound.local_addr;
    let mut routes = routes;
    routes = routes.add_service(health_service).add_service(reflection);
    let mut server = Server::builder();
    if let Some(config) = tls.server_config() {
        server = server
            .tls_config(config)
            .map_err(|e| ServeError::Tls(error_chain(&e)))?;
    }
    // Requests are handled under the span `serve` runs in (the daemon's, carrying its
    // agent or manager id), so every line a handler logs names the daemon.
    let span = tracing::Span::current();
    server
        .trace_fn(move |_| span.clone())
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(bound.listener), async move {
            stop.cancelled().await
        })
        .await
        .map_err(|source| ServeError::Serve { addr, source })
}

/// A gRPC status for messages: its message, plus the transport error behind it (why a TLS
/// handshake was refused is said only there).
pub fn status_text(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    append_sources(&mut text, std::error::Error::source(status));
    text
}

/// The address peers should dial for a server on `address` (`HOST:PORT`): `https://…`
/// when it serves TLS, as is otherwise (an explicit scheme is kept).
pub fn advertised_uri(address: String, tls: &TlsFiles) -> String {
    if tls.has_identity() && !address.contains("://") {
        format!("https://{address}")
    } else {
        address
    }
}

/// A lazily connecting channel to a deckhand gRPC server at `HOST:PORT` (or a full URI).
/// Without a scheme it dials `https` when `tls` is enabled, else plain `http`; an explicit
/// `https://` without TLS files verifies the server against the system's roots.
pub fn channel(
    addr: &str,
    request_timeout: Duration,
    tls: &TlsFiles,
) -> Result<Channel, ServeError> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else if tls.is_enabled() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let bad = |reason: String| ServeError::Address {
        addr: addr.to_string(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| bad(error_chain(&e)))?;
    if uri.starts_with("https://") {
        let config = tls
            .client_config()
            .unwrap_or_else(|| tonic::transport::ClientTlsConfig::new().with_native_roots());
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| ServeError::Tls(error_chain(&e)))?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}
