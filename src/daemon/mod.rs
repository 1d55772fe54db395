//! The start-up both servers share, and the two start-ups themselves: [`agent`] (`deckhand
//! agent`) and [`manager`] (`deckhand manager`). Each binds its gRPC listener first (a
//! taken port fails at once) and its metrics listener, derives the address it registers,
//! runs its tasks in one [`Tasks`] set, and stops on SIGINT/SIGTERM or on the first fatal
//! error of a task (an etcd session that cannot go on, a gRPC server that died).

pub mod agent;
pub mod manager;

use std::future::Future;
use std::net::SocketAddr;

use tokio::sync::mpsc;
use tonic::service::Routes;
use tracing::Instrument;

use crate::telemetry::MetricsError;
use crate::util::shutdown::{self, Tasks};
use crate::util::tls::TlsFiles;
use crate::wire::{self, ServeError};

/// A server's listeners, bound before anything else starts.
pub struct Listeners {
    pub rpc: wire::Bound,
    pub metrics: Option<crate::telemetry::Bound>,
    /// The gRPC address others dial (`http://` or `https://`).
    pub address: String,
}

impl Listeners {
    pub async fn bind<E: From<ServeError> + From<MetricsError>>(
        rpc: &str,
        metrics: Option<&str>,
        advertise: Option<&str>,
        tls: &TlsFiles,
    ) -> Result<Self, E> {
        let rpc = wire::bind(rpc).await?;
        let metrics = match metrics {
            Some(addr) => Some(crate::telemetry::bind(addr).await?),
            None => None,
        };
        let address = wire::advertised_uri(advertised(rpc.local_addr, advertise), tls);
        Ok(Self {
            rpc,
            metrics,
            address,
        })
    }
}

/// The address peers should dial: the listener's, with an unspecified IP replaced by the
/// hostname.
pub fn advertised(listen: SocketAddr, explicit: Option<&str>) -> String {
    match explicit {
        Some(a) => a.to_string(),
        None if listen.ip().is_unspecified() => {
            format!("{}:{}", crate::host::hostname(), listen.port())
        }
        None => listen.to_string(),
    }
}

/// How a server's gRPC is protected, for its start line.
pub fn tls_mode(tls: &TlsFiles) -> &'static str {
    match (tls.has_identity(), tls.has_ca()) {
        (false, _) => "off",
        (true, false) => "on",
        (true, true) => "mutual",
    }
}

/// Runs `task` in `tasks`; its error, if it ends with one, stops the server.
pub fn spawn_fatal<E, T, F>(
    tasks: &Tasks,
    name: &'static str,
    fatal: &mpsc::Sender<E>,
    span: &tracing::Span,
    task: F,
) where
    E: From<T> + Send + 'static,
    T: Send + 'static,
    F: Future<Output = Result<(), T>> + Send + 'static,
{
    let fatal = fatal.clone();
    tasks.spawn(
        name,
        async move {
            if let Err(e) = task.await {
                let _ = fatal.send(e.into()).await;
            }
        }
        .instrument(span.clone()),
    );
}

/// Serves `routes` (the services `names`, plus health and reflection) on `bound` until the
/// tasks stop.
pub fn serve<E: From<ServeError> + Send + 'static>(
    tasks: &Tasks,
    bound: wire::Bound,
    routes: Routes,
    names: &'static [&'static str],
    tls: &TlsFiles,
    fatal: &mpsc::Sender<E>,
    span: &tracing::Span,
) {
    let (stop, tls) = (tasks.token(), tls.clone());
    spawn_fatal(tasks, "grpc", fatal, span, async move {
        wire::serve(bound, routes, names, &tls, stop).await
    });
}

/// Waits for SIGINT/SIGTERM (`Ok`) or the first fatal error of a task.
pub async fn until_stopped<E>(
    fatal: &mut mpsc::Receiver<E>,
    span: &tracing::Span,
) -> Result<(), E> {
    tokio::select! {
        _ = shutdown::signal() => {
            span.in_scope(|| tracing::info!("signal received; shutting down"));
            Ok(())
        }
        Some(e) = fatal.recv() => Err(e),
    }
}
