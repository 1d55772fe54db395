//! Simulated ("hollow") agents for `bench fleet`, like Kubernetes' hollow nodes: many
//! agents in one process, each with what the manager and etcd see of a real one — its own
//! etcd session (connection, lease, registration, config and manager watches: the real
//! [`Session`]), its own `AgentService` on a loopback port (the real [`AgentRpc`] over a
//! real [`Supervisor`]), its kernel events ([`reporter`]) and its own heartbeats over its
//! own gRPC connection to the manager, at the configured interval.
//!
//! What is simulated: kernels run on the in-memory runtime (`MemoryRuntime`; 1,000 hosts
//! cannot exist here), the host status is one sample of this machine shared by all, and
//! the heartbeat loop is the benchmark's own — it builds the request as the agent's does
//! (slots from the one slot calculation, kernel usage from the supervisor) and times each
//! round trip; the first beat goes out at once, later ones at a random phase of the
//! interval, as agents started at different times would.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::agent::convert;
use crate::agent::service::AgentRpc;
use crate::agent::status::{slots, Snapshot};
use crate::agent::{reporter, settings};
use crate::cluster::{
    AgentRecord, EtcdOptions, Keys, ManagerRecord, Mirror, Owner, Registration, Session,
};
use crate::config::ClusterConfig;
use crate::kernel::slots::Capacity;
use crate::kernel::{Supervisor, SupervisorOptions};
use crate::runtime::memory::{self, MemoryRuntime};
use crate::runtime::Runtimes;
use crate::util::shutdown::Tasks;
use crate::util::tls::TlsFiles;
use crate::wire::channel;
use crate::wire::pb::agent_service_server::AgentServiceServer;
use crate::wire::pb::manager_service_client::ManagerServiceClient;
use crate::wire::pb::{AgentIdentity, CreateKernelRequest, HeartbeatRequest, KernelSpec};

/// What every simulated agent shares, and what they measure.
pub struct Fleet {
    pub etcd: EtcdOptions,
    pub keys: Keys,
    pub namespace: String,
    /// Registries of the simulated agents' supervisors live under it.
    pub dir: PathBuf,
    pub kernels_per_agent: u32,
    pub host: crate::host::HostStatus,
    /// Round trips of accepted heartbeats since the last [`take`](Self::take).
    rtts: Mutex<Vec<Duration>>,
    failed: AtomicU64,
    tasks: Tasks,
}

impl Fleet {
    pub fn new(etcd: EtcdOptions, namespace: &str, dir: PathBuf, kernels_per_agent: u32) -> Self {
        let host = crate::host::HostSampler::new(&dir).sample();
        Self {
            etcd,
            keys: Keys::new(namespace),
            namespace: namespace.to_string(),
            dir,
            kernels_per_agent,
            host,
            rtts: Mutex::new(Vec::new()),
            failed: AtomicU64::new(0),
            tasks: Tasks::new(),
        }
    }

    /// Heartbeat round trips and failed heartbeats since the last call.
    pub fn take(&self) -> (Vec<Duration>, u64) {
        let rtts = std::mem::take(&mut *self.rtts.lock());
        (rtts, self.failed.swap(0, Ordering::Relaxed))
    }

    /// Stops every simulated agent: leases revoked, servers closed.
    pub async fn stop(&self) {
        self.tasks.shutdown();
        if tokio::time::timeout(Duration::from_secs(30), self.tasks.wait())
            .await
            .is_err()
        {
            eprintln!("bench: some simulated agents did not stop within 30s");
        }
    }

    /// Starts simulated agent `id`; returns once its tasks run.
    pub async fn spawn_agent(self: &Arc<Self>, id: String) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a simulated agent's gRPC port")?;
        let address = listener.local_addr()?.to_string();
        let owner = Owner {
            instance_id: uuid::Uuid::new_v4().to_string(),
            ..Owner::current()
        };
        let defaults = ClusterConfig::default();
        let started = chrono::Utc::now();
        let identity = crate::agent::identity(&id, &self.namespace, &address, started, &owner);
        let record = AgentRecord {
            id: id.clone(),
            address,
            version: crate::VERSION.into(),
            arch: identity.arch.clone(),
            started_at: started.to_rfc3339(),
            started_at_ms: identity.started_at_ms,
            region: defaults.region.clone(),
            scaling_group: defaults.scaling_group.clone(),
            owner: owner.clone(),
        };
        let (value_tx, value) = watch::channel(serde_json::to_string(&record)?);
        let (ttl_tx, ttl) = watch::channel(defaults.lease_ttl);
        let (ready_tx, ready) = watch::channel(true);
        let mut session = Session::new(
            self.etcd.clone(),
            Registration {
                what: format!("simulated agent `{id}`"),
                key: self.keys.agent(&id),
                owner: owner.clone(),
                value,
                ttl,
                ready,
            },
        );
        let global = settings::Source {
            etcd_prefix: self.keys.config(),
            mirror: session.mirror(self.keys.config()),
        };
        let local = settings::Source {
            etcd_prefix: self.keys.agent_config(&id),
            mirror: session.mirror(self.keys.agent_config(&id)),
        };
        let managers = session.mirror(self.keys.managers());
        let (etcd_cfg_tx, etcd_cfg) = watch::channel(Arc::new(defaults.clone()));
        let (etcd_loaded_tx, etcd_loaded) = watch::channel(false);
        let (cfg_tx, cfg) = watch::channel(Arc::new(on_memory(&defaults)));
        let (loaded_tx, loaded) = watch::channel(false);
        let (mgr_tx, mgr) = watch::channel(String::new());
        let (cap_tx, capacity) = watch::channel(Arc::new(Capacity {
            cpu_count: self.host.cpu_count,
            memory_total: self.host.memory_total_bytes,
            gpus: Vec::new(),
            ..Default::default()
        }));
        let sup = Supervisor::new(SupervisorOptions {
            runtimes: Runtimes::new(Arc::new(MemoryRuntime::new())),
            agent_id: id.clone(),
            state_dir: self.dir.join(&id),
            config: cfg.clone(),
            capacity,
            creation_concurrency: 4,
            event_capacity: 1000,
        })?;
        let stop = self.tasks.token();
        self.tasks
            .spawn("sim-kernels", sup.clone().run(stop.clone()));
        {
            let stop = stop.clone();
            self.tasks.spawn("sim-etcd-session", async move {
                // The senders live as long as the session reads them.
                let _keep = (value_tx, ttl_tx, ready_tx, cap_tx);
                if let Err(e) = session.run(stop).await {
                    eprintln!("bench: simulated agent's etcd session ended: {e}");
                }
            });
        }
        self.tasks.spawn(
            "sim-config",
            settings::run(global, local, etcd_cfg_tx, etcd_loaded_tx, stop.clone()),
        );
        self.tasks.spawn(
            "sim-config-memory",
            keep_on_memory(etcd_cfg, etcd_loaded, cfg_tx, loaded_tx, stop.clone()),
        );
        let svc = AgentRpc {
            identity: identity.clone(),
            config: cfg.clone(),
            snapshot: watch::channel(Arc::new(Snapshot {
                host: self.host.clone(),
                ..Default::default()
            }))
            .1,
            current_manager: mgr.clone(),
            kernels: sup.clone(),
            // Simulated agents have no GPUs and keep no health marks.
            health: crate::host::gpu::health::GpuHealth::open(None),
        };
        {
            let stop = stop.clone();
            self.tasks.spawn("sim-grpc", async move {
                let served = tonic::transport::Server::builder()
                    .add_service(AgentServiceServer::new(svc))
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        stop.cancelled(),
                    )
                    .await;
                if let Err(e) = served {
                    eprintln!("bench: a simulated agent's gRPC server failed: {e}");
                }
            });
        }
        self.tasks.spawn(
            "sim-events",
            reporter::run(
                sup.clone(),
                mgr,
                id.clone(),
                owner.instance_id.clone(),
                TlsFiles::default(),
                stop.clone(),
            ),
        );
        let me = self.clone();
        self.tasks.spawn("sim-heartbeat", async move {
            let beat = me.heartbeats(identity, sup, cfg, loaded, managers, mgr_tx, stop.clone());
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = beat => {}
            }
        });
        Ok(())
    }

    /// Creates the agent's kernels once its config is loaded, then heartbeats until
    /// stopped (see the module docs).
    #[allow(clippy::too_many_arguments)]
    async fn heartbeats(
        self: Arc<Self>,
        identity: AgentIdentity,
        sup: Supervisor,
        cfg: watch::Receiver<Arc<ClusterConfig>>,
        mut loaded: watch::Receiver<bool>,
        mut managers: watch::Receiver<Mirror>,
        mgr_tx: watch::Sender<String>,
        stop: CancellationToken,
    ) {
        if loaded.wait_for(|l| *l).await.is_err() {
            return;
        }
        for _ in 0..self.kernels_per_agent {
            let spec = KernelSpec {
                kernel_id: uuid::Uuid::new_v4().to_string(),
                image: "simulated/kernel:latest".into(),
                command: vec!["sleep".into(), "infinity".into()],
                cpus: 0.1,
                memory: "64m".into(),
                ..Default::default()
            };
            let req = CreateKernelRequest {
                spec: Some(spec),
                array: None,
            };
            let made = match convert::create_request(req) {
                Ok(r) => sup.create(r).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = made {
                eprintln!("bench: a simulated kernel could not start: {e}");
            }
        }
        let addr = loop {
            let first = managers
                .borrow_and_update()
                .kvs
                .values()
                .find_map(|v| serde_json::from_str::<ManagerRecord>(v).ok())
                .map(|r| r.address);
            if let Some(a) = first {
                break a;
            }
            if managers.changed().await.is_err() {
                return;
            }
        };
        let period = cfg.borrow().heartbeat_interval;
        let Ok(ch) = channel(
            &addr,
            period.clamp(Duration::from_millis(500), Duration::from_secs(5)),
            &TlsFiles::default(),
        ) else {
            return;
        };
        let mut client = ManagerServiceClient::new(ch);
        mgr_tx.send_replace(addr);
        let phase = period.mul_f64(f64::from(uuid::Uuid::new_v4().as_u128() as u16) / 65536.0);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let gpus = crate::host::GpuInventory::default();
        let mut sequence = 0u64;
        let mut first = true;
        while !stop.is_cancelled() {
            if !first {
                ticker.tick().await;
            }
            first = false;
            let c = cfg.borrow().clone();
            sequence += 1;
            let req = HeartbeatRequest {
                agent: Some(identity.clone()),
                host: Some(self.host.clone().into()),
                gpus: Some(gpus.clone().into()),
                slots: Some(slots(&self.host, &gpus, &c, sup.allocated())),
                heartbeat_interval_ms: period.as_millis() as u64,
                sequence,
                kernels: convert::usages(sup.usage()),
                runtimes: convert::runtime_infos(sup.runtime_loads()),
                progress: convert::progresses(sup.progress()),
            };
            let t0 = std::time::Instant::now();
            match client.heartbeat(req).await {
                Ok(_) => self.rtts.lock().push(t0.elapsed()),
                Err(_) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The config a simulated agent runs with: the cluster's, except that its kernels run on
/// the in-memory runtime, its only one, whatever `agent/default_runtime` says.
fn on_memory(cfg: &ClusterConfig) -> ClusterConfig {
    ClusterConfig {
        default_runtime: memory::NAME.into(),
        ..cfg.clone()
    }
}

/// Republishes the config the settings from etcd produce as [`on_memory`] of it, and
/// `loaded` once the config it was loaded with has been republished.
async fn keep_on_memory(
    mut from: watch::Receiver<Arc<ClusterConfig>>,
    mut from_loaded: watch::Receiver<bool>,
    out: watch::Sender<Arc<ClusterConfig>>,
    loaded: watch::Sender<bool>,
    stop: CancellationToken,
) {
    loop {
        // `loaded` first: the settings publish the config before they say it is loaded,
        // so a config read after `loaded` reads true is the loaded one.
        let is_loaded = *from_loaded.borrow_and_update();
        let cfg = on_memory(&from.borrow_and_update());
        out.send_if_modified(|cur| {
            let changed = **cur != cfg;
            if changed {
                *cur = Arc::new(cfg);
            }
            changed
        });
        if is_loaded {
            loaded.send_if_modified(|l| !std::mem::replace(l, true));
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = from.changed() => if r.is_err() { return },
            r = from_loaded.changed() => if r.is_err() { return },
        }
    }
}
