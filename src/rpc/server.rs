//! Serving and dialing gRPC: every deckhand server also answers `grpc.health.v1` and server
//! reflection, binds before it reports ready (so a taken port is a clear error at start),
//! and stops when the shutdown token is cancelled.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::ServingStatus;

use super::pb::FILE_DESCRIPTOR_SET;

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
/// cancelled. `service_names` are reported SERVING by the health service.
pub async fn serve(
    bound: Bound,
    routes: Routes,
    service_names: &[&str],
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
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(bound.listener), async move {
            stop.cancelled().await
        })
        .await
        .map_err(|source| ServeError::Serve { addr, source })
}

/// A lazily connecting channel to a deckhand gRPC server at `HOST:PORT` (or a full URI).
pub fn channel(addr: &str, request_timeout: Duration) -> Result<Channel, ServeError> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| ServeError::Address {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}
