//! The start-up and shutdown of the node daemon, `deckhand agent`.
//!
//! Wiring, in start order: the gRPC listener is bound first (a taken port fails at once),
//! then one etcd [`Session`] registers the agent and mirrors its config layers and the
//! manager list; the `settings` task turns the layers into a [`ClusterConfig`]; the
//! `heartbeat` task reports to a manager; the gRPC server answers `AgentService`. Every
//! task is owned by one [`Tasks`] set and stopped on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::cluster::keys::validate_name;
use crate::cluster::{AgentRecord, EtcdOptions, Keys, Owner, Registration, Session, SessionError};
use crate::config::ClusterConfig;
use crate::host::HostSampler;
use crate::kernel::slots::Capacity;
use crate::kernel::{Supervisor, SupervisorOptions};
use crate::runtime::docker::{Docker, DockerRuntime};
use crate::runtime::vastai::VastRuntime;
use crate::runtime::Runtimes;
use crate::util::shutdown::Tasks;
use crate::util::tls::TlsFiles;
use crate::wire::pb::agent_service_server::AgentServiceServer;
use crate::wire::ServeError;

use super::{serve, spawn_fatal, tls_mode, until_stopped, Listeners};
use crate::agent::heartbeat::Heartbeat;
use crate::agent::service::AgentRpc;
use crate::agent::status::{Snapshot, StatusCollector};
use crate::agent::{drain, gpu_health, identity, peers, reporter, settings};

/// Resolved local options of `deckhand agent`.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub etcd: EtcdOptions,
    /// TLS of the gRPC server and of the clients to managers (`--tls-*`); empty: plaintext.
    pub tls: TlsFiles,
    pub namespace: String,
    pub agent_id: String,
    pub scratch_root: PathBuf,
    pub rpc_listen_addr: String,
    /// The address registered for the manager; derived from the listener when absent.
    pub advertise_addr: Option<String>,
    /// Where `GET /metrics` is served (`--metrics-listen-addr`); none: not served.
    pub metrics_listen_addr: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    InvalidOption(String),
    #[error("cannot create scratch root {path}: {source}")]
    ScratchRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Rpc(#[from] ServeError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{0}")]
    Docker(#[from] crate::runtime::docker::EngineError),
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::MetricsError),
}

/// Runs the agent until a signal or a fatal error.
pub async fn run(opts: AgentOptions) -> Result<(), AgentError> {
    validate_name("namespace", &opts.namespace).map_err(AgentError::InvalidOption)?;
    validate_name("agent id", &opts.agent_id).map_err(AgentError::InvalidOption)?;
    std::fs::create_dir_all(&opts.scratch_root).map_err(|source| AgentError::ScratchRoot {
        path: opts.scratch_root.clone(),
        source,
    })?;
    let span = tracing::info_span!("agent", agent_id = %opts.agent_id, namespace = %opts.namespace);

    let Listeners {
        rpc: bound,
        metrics: metrics_bound,
        address,
    } = Listeners::bind::<AgentError>(
        &opts.rpc_listen_addr,
        opts.metrics_listen_addr.as_deref(),
        opts.advertise_addr.as_deref(),
        &opts.tls,
    )
    .await?;
    let owner = Owner::current();
    let started = chrono::Utc::now();
    let keys = Keys::new(&opts.namespace);
    let defaults = ClusterConfig::default();

    let identity = identity(&opts.agent_id, &opts.namespace, &address, started, &owner);
    let base = AgentRecord {
        id: identity.agent_id.clone(),
        address: address.clone(),
        version: crate::VERSION.into(),
        arch: identity.arch.clone(),
        started_at: started.to_rfc3339(),
        started_at_ms: identity.started_at_ms,
        region: String::new(),
        scaling_group: String::new(),
        owner: owner.clone(),
    };
    let record = move |cfg: &ClusterConfig| AgentRecord {
        region: cfg.region.clone(),
        scaling_group: cfg.scaling_group.clone(),
        ..base.clone()
    };
    let to_json = |r: AgentRecord| serde_json::to_string(&r).unwrap_or_default();
    let (value_tx, value_rx) = watch::channel(to_json(record(&defaults)));
    let (ttl_tx, ttl_rx) = watch::channel(defaults.lease_ttl);
    let (ready_tx, ready_rx) = watch::channel(false);
    let mut session = Session::new(
        opts.etcd.clone(),
        Registration {
            what: format!(
                "agent id `{}` in namespace `{}`",
                opts.agent_id, opts.namespace
            ),
            key: keys.agent(&opts.agent_id),
            owner: owner.clone(),
            value: value_rx,
            ttl: ttl_rx,
            ready: ready_rx,
        },
    );
    let global = settings::Source {
        etcd_prefix: keys.config(),
        mirror: session.mirror(keys.config()),
    };
    let local = settings::Source {
        etcd_prefix: keys.agent_config(&opts.agent_id),
        mirror: session.mirror(keys.agent_config(&opts.agent_id)),
    };
    let managers = session.mirror(keys.managers());
    let drain_key = session.mirror(keys.agent_drain(&opts.agent_id));

    let (fatal_tx, mut fatal_rx) = mpsc::channel::<AgentError>(4);
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(defaults));
    let (loaded_tx, loaded_rx) = watch::channel(false);
    let mut loaded_for_registration = loaded_rx.clone();
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (mgr_tx, mgr_rx) = watch::channel(String::new());
    let (cap_tx, cap_rx) = watch::channel(Arc::new(Capacity::default()));
    let scratch_error = |source| AgentError::ScratchRoot {
        path: opts.scratch_root.clone(),
        source,
    };
    let tasks = Tasks::new();
    let docker = Docker::connect().await?;
    let docker_runtime = DockerRuntime::new(
        docker,
        &opts.namespace,
        &opts.agent_id,
        &opts.scratch_root,
        Arc::new(peers::GrpcPeers::new(opts.tls.clone())),
        tasks.clone(),
    )
    .map_err(scratch_error)?;
    docker_runtime.read_swarm().await;
    let kernels = Supervisor::new(SupervisorOptions {
        runtimes: Runtimes::new(Arc::new(docker_runtime)).with(Arc::new(VastRuntime::new(
            cfg_rx.clone(),
            &opts.namespace,
            &opts.agent_id,
            &opts.scratch_root,
        ))),
        agent_id: opts.agent_id.clone(),
        state_dir: opts.scratch_root.clone(),
        creation_concurrency: cfg_rx.borrow().kernel.creation_concurrency,
        config: cfg_rx.clone(),
        capacity: cap_rx,
        event_capacity: crate::kernel::events::DEFAULT_CAPACITY,
    })
    .map_err(scratch_error)?;
    tasks.spawn(
        "kernels",
        kernels.clone().run(tasks.token()).instrument(span.clone()),
    );
    tasks.spawn(
        "drain",
        drain::run(
            kernels.clone(),
            drain_key,
            opts.agent_id.clone(),
            tasks.token(),
        )
        .instrument(span.clone()),
    );
    tasks.spawn(
        "kernel-events",
        reporter::run(
            kernels.clone(),
            mgr_rx.clone(),
            opts.agent_id.clone(),
            owner.instance_id.clone(),
            opts.tls.clone(),
            tasks.token(),
        )
        .instrument(span.clone()),
    );

    tasks.spawn(
        "config",
        settings::run(global, local, cfg_tx, loaded_tx, tasks.token()).instrument(span.clone()),
    );
    {
        // Region, scaling group and lease TTL come from the config: keep the registration
        // in step with it.
        let mut cfg_rx = cfg_rx.clone();
        let stop = tasks.token();
        tasks.spawn(
            "registration-values",
            async move {
                loop {
                    let cfg = cfg_rx.borrow_and_update().clone();
                    value_tx.send_if_modified(|v| {
                        let next = to_json(record(&cfg));
                        let changed = *v != next;
                        *v = next;
                        changed
                    });
                    ttl_tx
                        .send_if_modified(|t| std::mem::replace(t, cfg.lease_ttl) != cfg.lease_ttl);
                    // `loaded` is set after the first loaded config was published, so the
                    // values above already come from etcd when registration may proceed.
                    let loaded = *loaded_for_registration.borrow_and_update();
                    ready_tx.send_if_modified(|r| !std::mem::replace(r, loaded) && loaded);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = cfg_rx.changed() => if r.is_err() { return },
                        r = loaded_for_registration.changed() => if r.is_err() { return },
                    }
                }
            }
            .instrument(span.clone()),
        );
    }
    let stop = tasks.token();
    spawn_fatal(&tasks, "etcd-session", &fatal_tx, &span, async move {
        session.run(stop).await
    });
    let health = crate::host::gpu::health::GpuHealth::open(Some(
        crate::host::gpu::health::GpuHealth::file_in(&opts.scratch_root),
    ));
    gpu_health::spawn(
        &tasks,
        health.clone(),
        cfg_rx.clone(),
        loaded_rx.clone(),
        kernels.clone(),
        span.clone(),
    );
    tasks.spawn(
        "heartbeat",
        Heartbeat {
            identity: identity.clone(),
            config: cfg_rx.clone(),
            config_loaded: loaded_rx,
            managers,
            collector: StatusCollector::new(HostSampler::new(&opts.scratch_root))
                .with_health(health.clone()),
            snapshot: snap_tx,
            capacity: cap_tx,
            current_manager: mgr_tx,
            kernels: kernels.clone(),
            tls: opts.tls.clone(),
        }
        .run(tasks.token())
        .instrument(span.clone()),
    );
    if let Some(bound) = metrics_bound {
        let collector = crate::agent::metrics::AgentCollector {
            kernels: kernels.clone(),
            snapshot: snap_rx.clone(),
        };
        let registry = crate::agent::metrics::registry(collector);
        let router = crate::telemetry::router(registry, axum::Router::new());
        crate::telemetry::spawn(&tasks, bound, router, span.clone());
    }
    let shutdown_config = cfg_rx.clone();
    let shutdown_manager = mgr_rx.clone();
    let shutdown_kernels = kernels.clone();
    {
        let svc = AgentRpc {
            identity,
            config: cfg_rx,
            snapshot: snap_rx,
            current_manager: mgr_rx,
            kernels,
            health,
        };
        let routes = tonic::service::Routes::new(
            AgentServiceServer::new(svc)
                .max_decoding_message_size(crate::wire::MAX_MESSAGE)
                .max_encoding_message_size(crate::wire::MAX_MESSAGE),
        );
        let names = &["deckhand.v1.AgentService"];
        serve(&tasks, bound, routes, names, &opts.tls, &fatal_tx, &span);
    }
    let mode = tls_mode(&opts.tls);
    span.in_scope(|| tracing::info!(address = %address, version = crate::VERSION, tls = mode, "agent started"));

    let outcome = until_stopped(&mut fatal_rx, &span).await;
    if outcome.is_ok() {
        if shutdown_config.borrow().kernel.stop_on_shutdown {
            span.in_scope(|| {
                tracing::info!("stopping every kernel first (agent/on_shutdown = stop)")
            });
            shutdown_kernels.stop_all().await;
        }
        // Give the reporter a moment to hand the last events to the manager (if one is known).
        // Read the watch in its own statement: its guard must not live across the await.
        let manager_known = !shutdown_manager.borrow().is_empty();
        let flushed = !manager_known
            || tokio::time::timeout(
                std::time::Duration::from_secs(3),
                shutdown_kernels.events().delivered(),
            )
            .await
            .is_ok();
        if !flushed {
            span.in_scope(|| tracing::warn!("some kernel events were not delivered before exit; the kernels' states stay in the registry"));
        }
    }
    tasks.shutdown();
    tasks.wait().await;
    outcome
}
