//! The start-up and shutdown of the reference manager, `deckhand manager`: registers it
//! under `nodes/managers/<id>`, mirrors the agent registrations into its table, and serves
//! `ManagerService` and `ClusterService`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::{serve, spawn_fatal, tls_mode, until_stopped, Listeners};
use crate::cluster::keys::validate_name;
use crate::cluster::{
    EtcdOptions, Keys, ManagerRecord, Owner, Registration, Session, SessionError,
};
use crate::util::shutdown::Tasks;
use crate::util::tls::TlsFiles;
use crate::wire::pb::cluster_service_server::ClusterServiceServer;
use crate::wire::pb::manager_service_server::ManagerServiceServer;
use crate::wire::ServeError;

use crate::manager::service::ManagerRpc;
use crate::manager::table::AgentTable;
use crate::manager::{kernels, status_page};

/// Resolved options of `deckhand manager`.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    pub etcd: EtcdOptions,
    /// TLS of the gRPC server and of the forwarding clients to agents (`--tls-*`).
    pub tls: TlsFiles,
    pub namespace: String,
    pub manager_id: String,
    pub listen: String,
    pub advertise_addr: Option<String>,
    /// How long a GONE agent stays listed.
    pub gone_retention: Duration,
    /// TTL of the manager's registration lease.
    pub lease_ttl: Duration,
    /// Where `GET /metrics` and the status page are served (`--metrics-listen-addr`);
    /// none: not served.
    pub metrics_listen_addr: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{0}")]
    InvalidOption(String),
    #[error(transparent)]
    Rpc(#[from] ServeError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::MetricsError),
}

pub async fn run(opts: ManagerOptions) -> Result<(), ManagerError> {
    validate_name("namespace", &opts.namespace).map_err(ManagerError::InvalidOption)?;
    validate_name("manager id", &opts.manager_id).map_err(ManagerError::InvalidOption)?;
    let span =
        tracing::info_span!("manager", manager_id = %opts.manager_id, namespace = %opts.namespace);
    let Listeners {
        rpc: bound,
        metrics: metrics_bound,
        address,
    } = Listeners::bind::<ManagerError>(
        &opts.listen,
        opts.metrics_listen_addr.as_deref(),
        opts.advertise_addr.as_deref(),
        &opts.tls,
    )
    .await?;
    let keys = Keys::new(&opts.namespace);
    let owner = Owner::current();
    let record = ManagerRecord {
        id: opts.manager_id.clone(),
        address: address.clone(),
        version: crate::VERSION.into(),
        started_at: chrono::Utc::now().to_rfc3339(),
        owner: owner.clone(),
    };
    let (_value_tx, value_rx) = watch::channel(serde_json::to_string(&record).unwrap_or_default());
    let (_ttl_tx, ttl_rx) = watch::channel(opts.lease_ttl);
    let (_ready_tx, ready_rx) = watch::channel(true);
    let mut session = Session::new(
        opts.etcd.clone(),
        Registration {
            what: format!(
                "manager id `{}` in namespace `{}`",
                opts.manager_id, opts.namespace
            ),
            key: keys.manager(&opts.manager_id),
            owner,
            value: value_rx,
            ttl: ttl_rx,
            ready: ready_rx,
        },
    );
    let mut agents = session.mirror(keys.agents());
    let table = Arc::new(Mutex::new(AgentTable::new(opts.gone_retention)));

    let tasks = Tasks::new();
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<ManagerError>(4);
    let stop = tasks.token();
    spawn_fatal(&tasks, "etcd-session", &fatal_tx, &span, async move {
        session.run(stop).await
    });
    {
        let table = table.clone();
        let stop = tasks.token();
        tasks.spawn(
            "agent-registrations",
            async move {
                loop {
                    let mirror = agents.borrow_and_update().clone();
                    if mirror.loaded {
                        table.lock().sync_registrations(&mirror, Instant::now());
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = agents.changed() => if r.is_err() { return },
                    }
                }
            }
            .instrument(span.clone()),
        );
    }
    {
        let svc = ManagerRpc {
            manager_id: opts.manager_id.clone(),
            namespace: opts.namespace.clone(),
            table,
            kernels: Arc::new(Mutex::new(kernels::KernelDirectory::default())),
            events: tokio::sync::broadcast::channel(1024).0,
            channels: Arc::default(),
            tls: opts.tls.clone(),
            etcd: opts.etcd.clone(),
            tasks: tasks.clone(),
        };
        if let Some(bound) = metrics_bound {
            let page = status_page::StatusPage::new(svc.clone());
            tasks.spawn(
                "status-events",
                page.clone().follow(tasks.token()).instrument(span.clone()),
            );
            let registry = crate::manager::metrics::registry(svc.table.clone());
            let router = crate::telemetry::router(registry, page.router());
            crate::telemetry::spawn(&tasks, bound, router, span.clone());
        }
        let limit = crate::wire::MAX_MESSAGE;
        let routes = tonic::service::Routes::new(
            ManagerServiceServer::new(svc.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            ClusterServiceServer::new(svc)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        );
        let names = &["deckhand.v1.ManagerService", "deckhand.v1.ClusterService"];
        serve(&tasks, bound, routes, names, &opts.tls, &fatal_tx, &span);
    }
    let mode = tls_mode(&opts.tls);
    span.in_scope(|| tracing::info!(address = %address, tls = mode, "manager started"));
    let outcome = until_stopped(&mut fatal_rx, &span).await;
    tasks.shutdown();
    tasks.wait().await;
    outcome
}
