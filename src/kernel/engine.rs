//! The kernel engine: one table of kernels (and job arrays) per agent, driven by RPCs and
//! by Docker events. Every state change goes through [`KernelState::apply`], is persisted
//! under the scratch root, and becomes a numbered event.
//!
//! Concurrency: the table sits behind one `std` mutex held only for bookkeeping (never
//! across an await); Docker calls run outside it. Container creation is bounded by a
//! semaphore (`agent/kernel_creation_concurrency`); container deaths arrive on one Docker
//! event stream, not by polling. No thread or task lives per kernel, except a log copier
//! for kernels that asked for output files.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cgroup::CgroupPaths;
use super::container;
use super::events::EventLog;
use super::record::{masked, state_pb, HostPort, ProcessData, Record, Slots};
use super::scratch::{self, PathError, Scratch};
use super::spec::{self, ArrayRange, GpuRequest, Spec, SpecError};
use super::state::{KernelState, Transition};
use crate::agent::status::Snapshot;
use crate::config::cluster::CacheUsage;
use crate::config::schema::show_bytes;
use crate::config::ClusterConfig;
use crate::rpc::pb;
use crate::runtime::docker::{
    Chunk, ChunkStream, ContainerEvent, ContainerStatus, Docker, EngineError,
};
use crate::runtime::images::{Images, Progress, PullOptions, PullState};

mod recovery;

/// What a kernel operation can fail with; each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("kernel `{0}` is not on this agent")]
    NotFound(String),
    #[error("kernel `{0}` already exists with a different spec")]
    Conflict(String),
    #[error("{0}")]
    WrongState(String),
    #[error("{0}")]
    Exhausted(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Internal(String),
}

impl From<KernelError> for tonic::Status {
    fn from(e: KernelError) -> Self {
        use tonic::Status;
        let msg = e.to_string();
        match e {
            KernelError::Spec(s) if s.forbidden => Status::failed_precondition(msg),
            KernelError::Spec(_) => Status::invalid_argument(msg),
            KernelError::NotFound(_) => Status::not_found(msg),
            KernelError::Conflict(_) => Status::already_exists(msg),
            KernelError::WrongState(_) => Status::failed_precondition(msg),
            KernelError::Exhausted(_) => Status::resource_exhausted(msg),
            KernelError::Path(PathError::Refused(..)) => Status::invalid_argument(msg),
            KernelError::Path(PathError::Io(_, ref io))
                if io.kind() == std::io::ErrorKind::NotFound =>
            {
                Status::not_found(msg)
            }
            KernelError::Path(_) => Status::internal(msg),
            KernelError::Engine(EngineError::Unavailable(_)) => Status::unavailable(msg),
            KernelError::Engine(EngineError::NotFound(_)) => Status::not_found(msg),
            KernelError::Engine(_) => Status::internal(msg),
            KernelError::Internal(_) => Status::internal(msg),
        }
    }
}

/// Largest file `DownloadFile` returns in one message (below gRPC's 4 MiB default).
pub const MAX_DOWNLOAD: u64 = 3 << 20;

/// Largest file `UploadFile` takes in one message.
pub const MAX_UPLOAD: usize = 8 << 20;

/// The gRPC message size limit of both servers: an upload and its envelope. A larger
/// message is refused from its length prefix (OUT_OF_RANGE), before it is read into memory.
pub const MAX_MESSAGE: usize = MAX_UPLOAD + (64 << 10);

/// Slots, host ports, and whether the GPUs are real NVML devices.
type Allocation = (Slots, Vec<HostPort>, bool);

struct Entry {
    rec: Record,
    state: watch::Sender<KernelState>,
    cgroup: Option<CgroupPaths>,
    /// Set once the launch task owns this kernel (array tasks wait unlaunched).
    launched: bool,
}

struct ArrayRun {
    fingerprint: u64,
    range: ArrayRange,
    /// Task ids not launched yet, in index order.
    pending: VecDeque<String>,
}

#[derive(Default)]
struct Table {
    kernels: BTreeMap<String, Entry>,
    arrays: BTreeMap<String, ArrayRun>,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Kernels(Arc<Inner>);

struct Inner {
    docker: Docker,
    images: Arc<Images>,
    namespace: String,
    agent_id: String,
    scratch: Scratch,
    config: watch::Receiver<Arc<ClusterConfig>>,
    capacity: watch::Receiver<Arc<Snapshot>>,
    table: Mutex<Table>,
    events: EventLog,
    permits: Semaphore,
    initial_permits: usize,
    tasks: TaskTracker,
    stop: CancellationToken,
}

pub struct EngineOptions {
    pub docker: Docker,
    pub namespace: String,
    pub agent_id: String,
    pub scratch: Scratch,
    pub config: watch::Receiver<Arc<ClusterConfig>>,
    pub capacity: watch::Receiver<Arc<Snapshot>>,
    pub creation_concurrency: usize,
    pub event_capacity: usize,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Kernels {
    pub fn new(o: EngineOptions) -> Self {
        let table = Table {
            kernels: BTreeMap::new(),
            arrays: BTreeMap::new(),
        };
        let (records, bad) = o.scratch.load_all();
        for b in bad {
            tracing::warn!("kernel registry: unreadable record {b}");
        }
        let images = Images::new(
            o.docker.clone(),
            o.scratch.root().join(".deckhand/images.json"),
        );
        let k = Self(Arc::new(Inner {
            images,
            docker: o.docker,
            namespace: o.namespace,
            agent_id: o.agent_id,
            scratch: o.scratch,
            config: o.config,
            capacity: o.capacity,
            table: Mutex::new(table),
            events: EventLog::new(o.event_capacity),
            permits: Semaphore::new(o.creation_concurrency.max(1)),
            initial_permits: o.creation_concurrency.max(1),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }));
        // Records of an earlier run: keep them (with their allocations) so nothing is
        // double-assigned; their containers are reconciled by the event loop's first sync.
        {
            let mut t = k.lock();
            for rec in records {
                let state = watch::channel(rec.state).0;
                t.kernels.insert(
                    rec.id.clone(),
                    Entry {
                        rec,
                        state,
                        cgroup: None,
                        launched: true,
                    },
                );
            }
        }
        k.rebuild_arrays();
        k
    }

    pub fn events(&self) -> &EventLog {
        &self.0.events
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn config(&self) -> Arc<ClusterConfig> {
        self.0.config.borrow().clone()
    }

    /// Runs the Docker event loop until `stop`; kernels' background work is awaited too.
    pub async fn run(self, stop: CancellationToken) {
        let me = self.clone();
        self.spawn(async move { me.follow_concurrency().await });
        let me = self.clone();
        self.spawn(async move { me.collect_images().await });
        let events = self.clone().event_loop(stop.clone());
        events.await;
        self.0.stop.cancel();
        self.0.tasks.close();
        self.0.tasks.wait().await;
    }

    /// Resizes the creation semaphore when `agent/kernel_creation_concurrency` changes:
    /// more permits at once; fewer by taking permits out as running creations finish.
    async fn follow_concurrency(self) {
        let mut cfg = self.0.config.clone();
        let mut current = self.0.initial_permits;
        loop {
            let want = cfg.borrow_and_update().kernel.creation_concurrency.max(1);
            if want > current {
                self.0.permits.add_permits(want - current);
            } else if want < current {
                match self.0.permits.acquire_many((current - want) as u32).await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
            }
            if want != current {
                tracing::info!(
                    from = current,
                    to = want,
                    "kernel creation concurrency changed"
                );
                current = want;
            }
            if cfg.changed().await.is_err() {
                return;
            }
        }
    }

    /// Removes images no kernel used for `docker/image_gc_after` (when set), checking every
    /// tenth of that period (at most a minute apart) and when the setting changes.
    async fn collect_images(self) {
        let mut cfg = self.0.config.clone();
        loop {
            let after = cfg.borrow_and_update().docker.image_gc_after;
            if let Some(after) = after {
                let in_use: BTreeSet<String> = self
                    .lock()
                    .kernels
                    .values()
                    .map(|e| e.rec.spec.image.clone())
                    .collect();
                self.0.images.collect(after, &in_use).await;
            }
            let wait = after.map_or(Duration::from_secs(3600), |a| {
                (a / 10).clamp(Duration::from_millis(500), Duration::from_secs(60))
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = cfg.changed() => if r.is_err() { return },
            }
        }
    }

    fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = self.0.stop.clone();
        self.0.tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = f => {}
            }
        });
    }

    // ---------------------------------------------------------------- create

    /// Creates one kernel (returns once it is RUNNING, HELD or final) or a job array
    /// (returns at once with its tasks).
    pub async fn create(
        &self,
        req: pb::CreateKernelRequest,
    ) -> Result<Vec<pb::KernelInfo>, KernelError> {
        let Some(shown) = req.spec.as_ref() else {
            return Err(SpecError::invalid("spec", "missing").into());
        };
        self.wait_for_capacity().await;
        let cfg = self.config();
        let spec = spec::validate(shown, &cfg.kernel)?;
        let fingerprint = fingerprint(&req);
        let id = shown.kernel_id.clone();
        if let Some(a) = &req.array {
            let range = spec::validate_array(a)?;
            return self.create_array(shown, spec, range, fingerprint);
        }
        let mut rx = {
            let mut t = self.lock();
            if let Some(e) = t.kernels.get(&id) {
                if e.rec.fingerprint != fingerprint {
                    return Err(KernelError::Conflict(id));
                }
                e.state.subscribe()
            } else {
                if t.arrays.contains_key(&id) {
                    return Err(KernelError::Conflict(id));
                }
                let alloc = self.allocate(&t, &spec, &cfg)?;
                let rec = self.new_record(&id, shown, spec, fingerprint, None, 0, Some(alloc))?;
                let rx = self.insert(&mut t, rec, true);
                let me = self.clone();
                let kid = id.clone();
                self.spawn(async move { me.launch(kid).await });
                rx
            }
        };
        let _ = rx
            .wait_for(|s| {
                !matches!(
                    s,
                    KernelState::Preparing | KernelState::Pulling | KernelState::Creating
                )
            })
            .await;
        Ok(vec![self.info(&id)?])
    }

    /// Waits (briefly) for the first host sample, so slots are known.
    async fn wait_for_capacity(&self) {
        let mut rx = self.0.capacity.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.host.cpu_count > 0),
        )
        .await;
    }

    /// A new PREPARING record; `alloc` is `None` for array tasks, which get their slots
    /// when their turn comes.
    #[allow(clippy::too_many_arguments)]
    fn new_record(
        &self,
        id: &str,
        shown: &pb::KernelSpec,
        spec: Spec,
        fingerprint: u64,
        array_id: Option<String>,
        task_index: u32,
        alloc: Option<Allocation>,
    ) -> Result<Record, KernelError> {
        let (slots, ports, real_gpus) = match alloc {
            Some((s, p, r)) => (Some(s), p, r),
            None => (None, Vec::new(), false),
        };
        Ok(Record {
            id: id.to_string(),
            name: shown.name.clone(),
            slug: shown.slug.clone(),
            array_id,
            task_index,
            array_range: None,
            shown_spec: masked(shown),
            fingerprint,
            spec,
            real_gpus,
            state: KernelState::Preparing,
            container_id: String::new(),
            exit_code: None,
            signal: String::new(),
            oom_killed: false,
            reason: String::new(),
            created_at_ms: now_ms(),
            started_at_ms: 0,
            finished_at_ms: 0,
            granted: slots.clone(),
            slots,
            restart_count: 0,
            ports,
            scratch_dir: self.0.scratch.kernel_dir(id)?.display().to_string(),
            process_data: None,
        })
    }

    /// Adds a record, persists it and reports its first state.
    fn insert(&self, t: &mut Table, rec: Record, launched: bool) -> watch::Receiver<KernelState> {
        self.persist(&rec);
        self.emit(&rec);
        let (tx, rx) = watch::channel(rec.state);
        t.kernels.insert(
            rec.id.clone(),
            Entry {
                rec,
                state: tx,
                cgroup: None,
                launched,
            },
        );
        rx
    }

    fn create_array(
        &self,
        shown: &pb::KernelSpec,
        spec: Spec,
        range: ArrayRange,
        fingerprint: u64,
    ) -> Result<Vec<pb::KernelInfo>, KernelError> {
        let id = shown.kernel_id.clone();
        let cfg = self.config();
        {
            let mut t = self.lock();
            if let Some(a) = t.arrays.get(&id) {
                if a.fingerprint != fingerprint {
                    return Err(KernelError::Conflict(id));
                }
            } else {
                if t.kernels.contains_key(&id) {
                    return Err(KernelError::Conflict(id));
                }
                // One task must fit on this agent at all (not necessarily now).
                self.check_fits_total(&spec, &cfg)?;
                let mut pending = VecDeque::new();
                for index in range.indices() {
                    let task_id = format!("{id}.{index}");
                    let (task_shown, task_spec) = task_spec(shown, &spec, index);
                    let mut rec = self.new_record(
                        &task_id,
                        &task_shown,
                        task_spec,
                        fingerprint,
                        Some(id.clone()),
                        index,
                        None,
                    )?;
                    rec.array_range = Some(range);
                    self.insert(&mut t, rec, false);
                    pending.push_back(task_id);
                }
                t.arrays.insert(
                    id.clone(),
                    ArrayRun {
                        fingerprint,
                        range,
                        pending,
                    },
                );
            }
        }
        self.pump(&id);
        self.list_matching(&id)
    }

    /// Launches queued tasks of an array while it is under its parallelism cap and the
    /// agent has room.
    fn pump(&self, array_id: &str) {
        let cfg = self.config();
        let mut launch = Vec::new();
        {
            let mut t = self.lock();
            let Some(run) = t.arrays.get(array_id) else {
                return;
            };
            let cap = run.range.max_parallel;
            let prefix = format!("{array_id}.");
            let mut running = t
                .kernels
                .iter()
                .filter(|(k, e)| k.starts_with(&prefix) && e.launched && !e.rec.state.is_final())
                .count() as u32;
            loop {
                if cap > 0 && running >= cap {
                    break;
                }
                let Some(task_id) = t
                    .arrays
                    .get_mut(array_id)
                    .and_then(|r| r.pending.pop_front())
                else {
                    break;
                };
                let Some(e) = t.kernels.get(&task_id) else {
                    continue;
                };
                if e.rec.state != KernelState::Preparing {
                    continue;
                }
                let spec = e.rec.spec.clone();
                match self.allocate(&t, &spec, &cfg) {
                    Ok((slots, ports, real)) => {
                        let e = t.kernels.get_mut(&task_id).expect("checked above");
                        e.rec.granted = Some(slots.clone());
                        e.rec.slots = Some(slots);
                        e.rec.ports = ports;
                        e.rec.real_gpus = real;
                        e.launched = true;
                        self.persist(&e.rec);
                        running += 1;
                        launch.push(task_id);
                    }
                    Err(_) => {
                        // No room now: retried when another kernel ends.
                        if let Some(r) = t.arrays.get_mut(array_id) {
                            r.pending.push_front(task_id);
                        }
                        break;
                    }
                }
            }
        }
        for id in launch {
            let me = self.clone();
            self.spawn(async move { me.launch(id).await });
        }
    }

    /// After any kernel ended: arrays may start their next tasks.
    fn pump_all(&self) {
        let ids: Vec<String> = self.lock().arrays.keys().cloned().collect();
        for id in ids {
            self.pump(&id);
        }
    }

    // ---------------------------------------------------------------- slots

    fn totals(&self, cfg: &ClusterConfig) -> (f64, u64, Vec<(String, bool)>) {
        let snap = self.0.capacity.borrow().clone();
        let cpu = (f64::from(snap.host.cpu_count) - cfg.reserved.cpu).max(0.0);
        let mem = snap
            .host
            .memory_total_bytes
            .saturating_sub(cfg.reserved.memory);
        let gpus = snap
            .gpus
            .devices
            .iter()
            .filter(|d| d.error.is_empty())
            .map(|d| (d.uuid.clone(), !d.fake))
            .collect();
        (cpu, mem, gpus)
    }

    fn check_fits_total(&self, spec: &Spec, cfg: &ClusterConfig) -> Result<(), KernelError> {
        self.allocate(&Table::default(), spec, cfg).map(|_| ())
    }

    /// Chooses slots, GPUs and host ports for `spec` from what `t` leaves free.
    fn allocate(
        &self,
        t: &Table,
        spec: &Spec,
        cfg: &ClusterConfig,
    ) -> Result<Allocation, KernelError> {
        let (cpu_total, mem_total, gpus) = self.totals(cfg);
        let mut cpu_used = 0.0;
        let mut mem_used = 0u64;
        let mut gpus_used: HashSet<&str> = HashSet::new();
        let mut ports_used: HashSet<u16> = HashSet::new();
        for e in t.kernels.values() {
            if let Some(s) = &e.rec.slots {
                cpu_used += s.cpu;
                mem_used += s.memory;
                gpus_used.extend(s.gpus.iter().map(String::as_str));
            }
            ports_used.extend(e.rec.ports.iter().map(|p| p.host));
        }
        let cpu_free = (cpu_total - cpu_used).max(0.0);
        if spec.cpus > cpu_free + 1e-9 {
            return Err(KernelError::Exhausted(format!(
                "cpu: {} requested, {cpu_free} of {cpu_total} free on this agent",
                spec.cpus
            )));
        }
        let memory = spec.memory.unwrap_or(0);
        let mem_free = mem_total.saturating_sub(mem_used);
        if memory > mem_free {
            return Err(KernelError::Exhausted(format!(
                "memory: {} requested, {} of {} free on this agent",
                show_bytes(memory),
                show_bytes(mem_free),
                show_bytes(mem_total)
            )));
        }
        let free: Vec<&(String, bool)> = gpus
            .iter()
            .filter(|(id, _)| !gpus_used.contains(id.as_str()))
            .collect();
        let chosen: Vec<&(String, bool)> = match &spec.gpus {
            GpuRequest::None => Vec::new(),
            GpuRequest::All => {
                if gpus.is_empty() {
                    return Err(KernelError::Exhausted(
                        "gpus: `all` requested, this agent has no GPUs".into(),
                    ));
                }
                if free.len() < gpus.len() {
                    return Err(KernelError::Exhausted(format!(
                        "gpus: `all` requested, {} of {} are in use",
                        gpus.len() - free.len(),
                        gpus.len()
                    )));
                }
                free
            }
            GpuRequest::Count(n) => {
                let n = *n as usize;
                if n > gpus.len() {
                    return Err(KernelError::Exhausted(format!(
                        "gpus: {n} requested, this agent has {}",
                        gpus.len()
                    )));
                }
                if n > free.len() {
                    return Err(KernelError::Exhausted(format!(
                        "gpus: {n} requested, {} of {} free",
                        free.len(),
                        gpus.len()
                    )));
                }
                free.into_iter().take(n).collect()
            }
            GpuRequest::Ids(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    let Some(g) = gpus.iter().find(|(g, _)| g == id) else {
                        return Err(SpecError::invalid(
                            "gpus",
                            format!("`{id}` is not a GPU of this agent"),
                        )
                        .into());
                    };
                    if gpus_used.contains(id.as_str()) {
                        return Err(KernelError::Exhausted(format!(
                            "gpus: `{id}` is in use by another kernel"
                        )));
                    }
                    out.push(g);
                }
                out
            }
        };
        let real = !chosen.is_empty() && chosen.iter().all(|(_, real)| *real);
        let (lo, hi) = cfg.kernel.port_range;
        let mut ports = Vec::new();
        // Ports asked for by number first, so a chosen one never takes them.
        let held_by_kernels = ports_used.clone();
        ports_used.extend(spec.ports.iter().map(|p| p.host).filter(|h| *h != 0));
        let mut next = lo;
        for (i, p) in spec.ports.iter().enumerate() {
            let host = if p.host != 0 {
                let taken_by_kernel = held_by_kernels.contains(&p.host);
                if taken_by_kernel || !port_bindable(&p.host_ip, p.host, &p.protocol) {
                    return Err(KernelError::Exhausted(format!(
                        "ports[{i}].host_port: {}/{} is in use on this host{}",
                        p.host,
                        p.protocol,
                        if taken_by_kernel {
                            " (by another kernel)"
                        } else {
                            ""
                        }
                    )));
                }
                p.host
            } else {
                loop {
                    if next > hi || next == 0 {
                        return Err(KernelError::Exhausted(format!(
                            "ports: no free host port left in config/container/port_range {lo}-{hi}"
                        )));
                    }
                    let candidate = next;
                    next = next.wrapping_add(1);
                    if !ports_used.contains(&candidate)
                        && port_bindable(&p.host_ip, candidate, &p.protocol)
                    {
                        break candidate;
                    }
                }
            };
            ports_used.insert(host);
            ports.push(HostPort {
                container: p.container,
                host,
                protocol: p.protocol.clone(),
                host_ip: p.host_ip.clone(),
            });
        }
        Ok((
            Slots {
                cpu: spec.cpus,
                memory,
                gpus: chosen.into_iter().map(|(id, _)| id.clone()).collect(),
            },
            ports,
            real,
        ))
    }

    /// CPU, memory and GPU slots held by live kernels.
    pub fn allocated(&self) -> pb::SlotAmounts {
        let t = self.lock();
        let mut a = pb::SlotAmounts::default();
        for e in t.kernels.values() {
            if let Some(s) = &e.rec.slots {
                a.cpu += s.cpu;
                a.memory_bytes += s.memory;
                a.gpus += s.gpus.len() as u32;
            }
        }
        a
    }

    /// CPU and memory of every running kernel, from its cgroup.
    pub fn usage(&self) -> Vec<pb::KernelUsage> {
        let t = self.lock();
        t.kernels
            .values()
            .filter_map(|e| usage_of(e).map(|u| (e, u)))
            .map(|(_, u)| u)
            .collect()
    }

    // ---------------------------------------------------------------- lifecycle

    /// Applies `tr` to kernel `id`; on a final state gives its slots back (once), and
    /// persists and reports the change.
    fn transition(
        &self,
        t: &mut Table,
        id: &str,
        tr: Transition,
        update: impl FnOnce(&mut Record),
    ) -> Result<KernelState, KernelError> {
        let e = t
            .kernels
            .get_mut(id)
            .ok_or_else(|| KernelError::NotFound(id.into()))?;
        let next = e
            .rec
            .state
            .apply(tr)
            .map_err(|err| KernelError::WrongState(err.to_string()))?;
        e.rec.state = next;
        update(&mut e.rec);
        if next.is_final() {
            e.rec.slots = None;
            e.cgroup = None;
            if e.rec.finished_at_ms == 0 {
                e.rec.finished_at_ms = now_ms();
            }
            // Docker may stamp a very short-lived container's FinishedAt before its
            // StartedAt; a kernel never ends before it started.
            e.rec.finished_at_ms = e.rec.finished_at_ms.max(e.rec.started_at_ms);
        }
        self.persist(&e.rec);
        self.emit(&e.rec);
        e.state.send_replace(next);
        if next.is_final() {
            let me = self.clone();
            // Outside the lock: arrays may start their next task.
            self.spawn(async move { me.pump_all() });
        }
        Ok(next)
    }

    fn persist(&self, rec: &Record) {
        if let Err(e) = self.0.scratch.save(rec) {
            tracing::error!(kernel_id = %rec.id, error = %e, "cannot persist kernel record");
        }
    }

    fn emit(&self, rec: &Record) {
        tracing::info!(kernel_id = %rec.id, state = %rec.state, reason = %rec.reason, "kernel");
        self.0.events.push(pb::KernelEvent {
            seq: 0,
            kernel_id: rec.id.clone(),
            state: state_pb(rec.state) as i32,
            reason: rec.reason.clone(),
            at_ms: now_ms(),
            exit_code: rec.exit_code,
            agent_id: self.0.agent_id.clone(),
            pull: None,
        });
    }

    /// Reports something about a kernel that is not a state change (a pull's progress, a
    /// fallback taken), with its current state.
    fn note(&self, id: &str, reason: String, pull: Option<pb::PullProgress>) {
        let Ok(rec) = self.record(id) else { return };
        // Progress is only informative: while no manager takes events, it may fill at most a
        // tenth of the log, so it never pushes out state changes.
        let log = &self.0.events;
        if pull.is_some() && log.backlog() > log.capacity() / 10 {
            return;
        }
        if pull.is_none() {
            tracing::info!(kernel_id = %id, state = %rec.state, "{reason}");
        }
        self.0.events.push(pb::KernelEvent {
            seq: 0,
            kernel_id: rec.id,
            state: state_pb(rec.state) as i32,
            reason,
            at_ms: now_ms(),
            exit_code: rec.exit_code,
            agent_id: self.0.agent_id.clone(),
            pull,
        });
    }

    fn record(&self, id: &str) -> Result<Record, KernelError> {
        self.lock()
            .kernels
            .get(id)
            .map(|e| e.rec.clone())
            .ok_or_else(|| KernelError::NotFound(id.into()))
    }

    /// Marks a kernel FAILED with `reason` (unless it already ended).
    fn fail(&self, id: &str, reason: String) {
        let mut t = self.lock();
        let _ = self.transition(&mut t, id, Transition::Fail, |r| r.reason = reason);
    }

    async fn launch(self, id: String) {
        let permit = self.0.permits.acquire().await;
        if permit.is_err() {
            return;
        }
        if let Err(e) = self.launch_inner(&id).await {
            let reason = e.to_string();
            tracing::warn!(kernel_id = %id, error = %reason, "kernel could not start");
            let cid = self.record(&id).map(|r| r.container_id).unwrap_or_default();
            self.fail(&id, reason);
            if !cid.is_empty() {
                // No half-made container stays behind.
                let _ = self.0.docker.remove(&cid, true).await;
            }
        }
    }

    async fn launch_inner(&self, id: &str) -> Result<(), KernelError> {
        let rec = self.record(id)?;
        if rec.state != KernelState::Preparing {
            return Ok(()); // cancelled while queued
        }
        let cfg = self.config();
        let docker = &self.0.docker;
        self.fetch_image(&rec, &cfg).await?;
        let rec = self.prepare_process_data(id, &rec, &cfg).await?;
        let files = config_files(&rec, &self.0.agent_id);
        let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (*n, c.clone())).collect();
        self.0
            .scratch
            .prepare(id, cfg.kernel.uid, cfg.kernel.gid, &files)?;
        let body = container::body(&rec, &self.0.namespace, &self.0.agent_id, &cfg.docker);
        let name = container::container_name(&self.0.namespace, id);
        let cid = match docker.create(&name, body.clone()).await {
            Err(EngineError::Conflict(_)) => {
                // A container of this name left from a crash before it was recorded.
                docker.remove(&name, true).await?;
                docker.create(&name, body).await?
            }
            other => other.map_err(|e| name_network(e, &rec, &cfg))?,
        };
        let held = rec.spec.hold;
        let cancelled = {
            let mut t = self.lock();
            let cancelled = t
                .kernels
                .get(id)
                .map(|e| e.rec.state.is_final())
                .unwrap_or(true);
            if !cancelled {
                let cid2 = cid.clone();
                self.transition(&mut t, id, Transition::Created { held }, |r| {
                    r.container_id = cid2
                })?;
            }
            cancelled
        };
        if cancelled {
            docker.remove(&cid, true).await?;
            return Ok(());
        }
        if held {
            return Ok(());
        }
        self.start_container(id).await
    }

    /// Makes the kernel's image available as its cache policy says: `cache_first` uses a
    /// local image, `remote_first` pulls and falls back to a local one (saying so),
    /// `require_pull` always pulls. Concurrent kernels share one pull per image.
    async fn fetch_image(&self, rec: &Record, cfg: &ClusterConfig) -> Result<(), KernelError> {
        let image = &rec.spec.image;
        let policy = rec.spec.cache_usage.unwrap_or(cfg.docker.cache_usage);
        let local = self.0.images.local_id(image).await?;
        // An image pinned by digest cannot have changed: pulling it again only proves the
        // registry answers, which is what `require_pull` asks for.
        let pinned = image.contains('@') && policy != CacheUsage::RequirePull;
        if local.is_some() && (policy == CacheUsage::CacheFirst || pinned) {
            self.0.images.touch([image.as_str()]);
            return Ok(());
        }
        {
            let mut t = self.lock();
            self.transition(&mut t, &rec.id, Transition::PullStarted, |_| {})?;
        }
        // A pull that ended after this kernel was asked for serves it.
        let asked = Instant::now()
            .checked_sub(Duration::from_millis(
                (now_ms() - rec.created_at_ms).max(0) as u64
            ))
            .unwrap_or_else(Instant::now);
        let opts = PullOptions {
            registry: cfg.docker.registry_for(image).cloned(),
            timeout: cfg.docker.pull_timeout,
            inactivity_timeout: cfg.docker.pull_inactivity_timeout,
        };
        let pull = self.0.images.pull(image, asked, opts.clone());
        let mut result = self.follow_pull(&rec.id, image, pull).await;
        if result.is_ok() && self.0.images.local_id(image).await?.is_none() {
            // A pull that served this kernel, but its image is gone since (collected or
            // pruned): pull again.
            let pull = self.0.images.pull(image, Instant::now(), opts);
            result = self.follow_pull(&rec.id, image, pull).await;
        }
        match result {
            Ok(()) => {}
            Err(e) => match (policy, local) {
                (CacheUsage::RemoteFirst, Some(local_id)) => {
                    let short = local_id.trim_start_matches("sha256:");
                    self.note(
                        &rec.id,
                        format!(
                            "{e}; using the local image {} (docker/cache_usage = remote_first)",
                            &short[..short.len().min(12)]
                        ),
                        None,
                    );
                }
                _ => return Err(KernelError::Internal(e)),
            },
        }
        self.0.images.touch([image.as_str()]);
        let mut t = self.lock();
        self.transition(&mut t, &rec.id, Transition::PullFinished, |_| {})?;
        Ok(())
    }

    /// Reports a pull's progress on the kernel until the pull ends or the kernel does.
    async fn follow_pull(
        &self,
        id: &str,
        image: &str,
        mut pull: watch::Receiver<PullState>,
    ) -> Result<(), String> {
        let mut state = match self.lock().kernels.get(id) {
            Some(e) => e.state.subscribe(),
            None => return Err("the kernel was removed".into()),
        };
        let mut shown = Progress::default();
        loop {
            let now = pull.borrow_and_update().clone();
            if now.progress != shown || (now.done.is_some() && shown == Progress::default()) {
                shown = now.progress;
                self.note(
                    id,
                    String::new(),
                    Some(pb::PullProgress {
                        image: image.to_string(),
                        bytes_done: shown.bytes_done,
                        bytes_total: shown.bytes_total,
                        layers_done: shown.layers_done,
                        layers_total: shown.layers_total,
                        eta_ms: shown.eta_ms,
                    }),
                );
            }
            if let Some(done) = now.done {
                return done.map_err(|e| e.to_string());
            }
            tokio::select! {
                r = pull.changed() => if r.is_err() {
                    return Err(format!("the pull of `{image}` ended without a result"));
                },
                _ = state.wait_for(|s| s.is_final()) => {
                    return Err("the kernel ended while its image was pulled".into());
                }
            }
        }
    }

    /// Decides where the kernel's process data lives (when it has a `process_id`) and makes
    /// sure it exists: a named volume shared by the process's kernels, or a host directory
    /// under the scratch root.
    async fn prepare_process_data(
        &self,
        id: &str,
        rec: &Record,
        cfg: &ClusterConfig,
    ) -> Result<Record, KernelError> {
        let pid = &rec.spec.process_id;
        if pid.is_empty() {
            return Ok(rec.clone());
        }
        let data = if cfg.docker.shared_process_volume {
            let name = format!("deckhand-{}-process-{pid}", self.0.namespace);
            let mountpoint = self
                .0
                .docker
                .create_volume(&name, &self.0.namespace, &self.0.agent_id, pid)
                .await?;
            // A new volume belongs to root; the kernels run as the kernel uid.
            let path = Path::new(&mountpoint);
            if std::fs::metadata(path).is_ok_and(|m| m.uid() == 0) {
                if let Err(e) =
                    std::os::unix::fs::chown(path, Some(cfg.kernel.uid), Some(cfg.kernel.gid))
                {
                    tracing::warn!(volume = %name, "cannot hand the process volume to the kernel uid: {e}");
                }
            }
            ProcessData::Volume(name)
        } else {
            let dir = self
                .0
                .scratch
                .process_dir(pid, cfg.kernel.uid, cfg.kernel.gid)
                .map_err(|e| {
                    KernelError::Internal(format!("cannot create the process data dir: {e}"))
                })?;
            ProcessData::Dir(dir.display().to_string())
        };
        let recorded = {
            let mut t = self.lock();
            t.kernels.get_mut(id).map(|e| {
                e.rec.process_data = Some(data.clone());
                self.persist(&e.rec);
                e.rec.clone()
            })
        };
        match recorded {
            Some(rec) => Ok(rec),
            None => {
                // Removed while its data was being made: do not leave the data behind.
                self.release_process_data(pid, &data).await;
                Err(KernelError::NotFound(id.into()))
            }
        }
    }

    /// Removes a process's data once no kernel of this agent refers to it any more.
    /// Removes a process's data once no kernel of this agent belongs to the process any
    /// more — including kernels still queued or pulling, which have not mounted it yet.
    async fn release_process_data(&self, process_id: &str, data: &ProcessData) {
        let still_used = self.lock().kernels.values().any(|e| {
            e.rec.spec.process_id == process_id || e.rec.process_data.as_ref() == Some(data)
        });
        if still_used {
            return;
        }
        let result = match data {
            ProcessData::Volume(name) => self
                .0
                .docker
                .remove_volume(name)
                .await
                .map_err(|e| e.to_string()),
            ProcessData::Dir(dir) => std::fs::remove_dir_all(dir).map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => {
                tracing::info!(process_data = ?data, "process data removed with its last kernel")
            }
            Err(e) => tracing::warn!(process_data = ?data, "cannot remove process data: {e}"),
        }
    }

    async fn start_container(&self, id: &str) -> Result<(), KernelError> {
        let rec = self.record(id)?;
        let input = match self.input_file(&rec)? {
            Some(path) => Some((path, self.0.docker.attach_stdin(&rec.container_id).await?)),
            None => None,
        };
        self.0
            .docker
            .start(&rec.container_id)
            .await
            .map_err(|e| name_network(e, &rec, &self.config()))?;
        if let Some((path, stdin)) = input {
            self.spawn(feed_input(rec.id.clone(), path, stdin));
        }
        let st = self.0.docker.inspect(&rec.container_id).await?;
        {
            let mut t = self.lock();
            if let Some(e) = t.kernels.get(id) {
                // The container may already have exited and been reported.
                if e.rec.state == KernelState::Creating {
                    let started = if st.started_at_ms > 0 {
                        st.started_at_ms
                    } else {
                        now_ms()
                    };
                    self.transition(&mut t, id, Transition::Started, |r| {
                        r.started_at_ms = started
                    })?;
                    if let Some(e) = t.kernels.get_mut(id) {
                        e.cgroup = CgroupPaths::of_pid(st.pid);
                    }
                }
            }
        }
        if !rec.spec.output_path.is_empty() || !rec.spec.error_path.is_empty() {
            let me = self.clone();
            let rec2 = rec.clone();
            self.spawn(async move { me.copy_output(rec2).await });
        }
        Ok(())
    }

    /// The host file a kernel's stdin comes from (DRMAA2 `inputPath`), if it has one: an
    /// absolute path (checked by spec validation) or a file in its work dir, which must
    /// exist by now (INVALID_ARGUMENT naming `input_path` otherwise).
    fn input_file(&self, rec: &Record) -> Result<Option<PathBuf>, KernelError> {
        let p = &rec.spec.input_path;
        if p.is_empty() {
            return Ok(None);
        }
        if Path::new(p).is_absolute() {
            return Ok(Some(PathBuf::from(p)));
        }
        let work = self.0.scratch.work_dir(&rec.id)?;
        match scratch::resolve_inside(&work, p, true) {
            Ok(path) if path.is_file() => Ok(Some(path)),
            _ => Err(SpecError::invalid(
                "input_path",
                format!("`{p}` is not a file in the kernel's work dir; upload it with `deckhand files put` first"),
            )
            .into()),
        }
    }

    /// Writes the kernel's stdout/stderr to its output/error files as they come.
    async fn copy_output(self, rec: Record) {
        let work = PathBuf::from(&rec.scratch_dir).join("work");
        let open = |p: &str| {
            let path = if Path::new(p).is_absolute() {
                PathBuf::from(p)
            } else {
                work.join(p)
            };
            async move {
                if let Some(parent) = path.parent() {
                    let _ = tokio::fs::create_dir_all(parent).await;
                }
                tokio::fs::File::create(&path).await.ok()
            }
        };
        let same = rec.spec.error_path == rec.spec.output_path;
        let mut out = if rec.spec.output_path.is_empty() {
            None
        } else {
            open(&rec.spec.output_path).await
        };
        let mut err = if rec.spec.error_path.is_empty() || same {
            None
        } else {
            open(&rec.spec.error_path).await
        };
        let mut logs = self.0.docker.logs(&rec.container_id, true, 0);
        while let Some(Ok(Chunk { data, stderr })) = logs.next().await {
            let target = match (stderr, same) {
                (false, _) | (true, true) => out.as_mut(),
                (true, false) => err.as_mut(),
            };
            if let Some(f) = target {
                let _ = f.write_all(&data).await;
            }
        }
        for f in [out.as_mut(), err.as_mut()].into_iter().flatten() {
            let _ = f.flush().await;
        }
        let cfg = self.config();
        for p in [&rec.spec.output_path, &rec.spec.error_path] {
            if !p.is_empty() && !Path::new(p).is_absolute() {
                let _ = scratch::hand_over(&work.join(p), cfg.kernel.uid, cfg.kernel.gid);
            }
        }
    }

    // ---------------------------------------------------------------- Docker events

    async fn event_loop(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        let mut down_logged = false;
        let mut recovered = false;
        loop {
            let mut stream = Box::pin(self.0.docker.events(&self.0.namespace, &self.0.agent_id));
            if !recovered {
                let r = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = self.recover() => r,
                };
                match r {
                    Ok(r) => {
                        recovered = true;
                        tracing::info!(
                            kernels = self.lock().kernels.len(),
                            relaunched = r.relaunched.len(),
                            adopted = r.adopted.len(),
                            scratch_recreated = r.scratch_recreated.len(),
                            orphan_dirs_removed = r.orphan_dirs_removed.len(),
                            "kernels recovered"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "recovery waits for the Docker engine"),
                }
            }
            // Containers may have changed while we were not listening.
            let synced = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.resync() => r,
            };
            match synced {
                Ok(()) => {
                    if down_logged {
                        tracing::info!(
                            "Docker engine reachable again; kernel states resynchronised"
                        );
                        down_logged = false;
                    }
                    backoff = Duration::from_millis(250);
                }
                Err(e) => {
                    if !down_logged {
                        tracing::warn!(error = %e, "Docker engine unreachable; retrying");
                        down_logged = true;
                    }
                }
            }
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = stream.next() => n,
                };
                match next {
                    Some(Ok(ev)) => self.on_event(ev).await,
                    Some(Err(e)) => {
                        if !down_logged {
                            tracing::warn!(error = %e, "Docker event stream broke; reconnecting");
                            down_logged = true;
                        }
                        break;
                    }
                    None => break,
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Brings every live kernel in line with its container.
    async fn resync(&self) -> Result<(), EngineError> {
        let live: Vec<(String, String)> = self
            .lock()
            .kernels
            .values()
            .filter(|e| !e.rec.state.is_final() && !e.rec.container_id.is_empty())
            .map(|e| (e.rec.id.clone(), e.rec.container_id.clone()))
            .collect();
        for (kid, cid) in live {
            let st = self.0.docker.inspect(&cid).await?;
            let action = if !st.exists {
                "destroy"
            } else if st.running || st.restarting {
                let mut t = self.lock();
                if let Some(e) = t.kernels.get_mut(&kid) {
                    if e.cgroup.is_none() {
                        e.cgroup = CgroupPaths::of_pid(st.pid);
                    }
                    let state = e.rec.state;
                    if state == KernelState::Terminating {
                        // A stop that was cut short (agent restart, engine outage): again,
                        // with the kernel's own grace period.
                        let me = self.clone();
                        let (cid, grace) = (cid.clone(), e.rec.spec.stop_grace_period);
                        tracing::info!(kernel_id = %kid, "finishing an interrupted stop");
                        self.spawn(async move {
                            if let Err(e) = me.0.docker.stop(&cid, grace).await {
                                tracing::warn!(container = %cid, error = %e, "finishing an interrupted stop failed");
                            }
                        });
                    }
                    if st.paused && state == KernelState::Running {
                        let _ = self.transition(&mut t, &kid, Transition::Suspend, |_| {});
                    } else if !st.paused && state == KernelState::Suspended {
                        let _ = self.transition(&mut t, &kid, Transition::Resume, |_| {});
                    }
                    drop(t);
                    // Restarts that happened while nobody listened.
                    if st.restarting && state == KernelState::Running {
                        self.on_restart(&kid, st.exit_code, &st);
                    } else if !st.restarting && state == KernelState::Restarting {
                        self.restarted_running(&kid, &st);
                    }
                }
                continue;
            } else if st.started_at_ms > 0 {
                "die"
            } else {
                continue; // created, never started (held)
            };
            self.on_event(ContainerEvent {
                container_id: cid,
                kernel_id: kid,
                action: action.into(),
                exit_code: Some(st.exit_code),
            })
            .await;
        }
        Ok(())
    }

    async fn on_event(&self, ev: ContainerEvent) {
        let belongs = {
            let t = self.lock();
            t.kernels.get(&ev.kernel_id).is_some_and(|e| {
                e.rec.container_id == ev.container_id || e.rec.container_id.is_empty()
            })
        };
        if !belongs {
            return;
        }
        let id = ev.kernel_id.as_str();
        match ev.action.as_str() {
            "die" => {
                let st = self
                    .0
                    .docker
                    .inspect(&ev.container_id)
                    .await
                    .unwrap_or_default();
                if st.exists && (st.running || st.restarting) {
                    // Its restart policy starts it again: RESTARTING until it runs.
                    let code = ev.exit_code.unwrap_or(st.exit_code);
                    self.on_restart(id, code, &st);
                    return;
                }
                let code = if st.exists {
                    st.exit_code
                } else {
                    ev.exit_code.unwrap_or(-1)
                };
                let mut t = self.lock();
                let Some(e) = t.kernels.get(id) else {
                    return;
                };
                if e.rec.state.is_final() {
                    return;
                }
                let oom = st.oom_killed || e.rec.oom_killed;
                let stopping = e.rec.state == KernelState::Terminating;
                let restarts = st.restart_count.max(e.rec.restart_count);
                let policy = restart_policy_shown(&e.rec.spec);
                if e.rec.state == KernelState::Creating {
                    let started = st.started_at_ms;
                    let _ = self.transition(&mut t, id, Transition::Started, |r| {
                        r.started_at_ms = started
                    });
                }
                let success = code == 0 && !oom;
                let signal = if (129..=159).contains(&code) {
                    signal_name((code - 128) as i32)
                } else {
                    String::new()
                };
                let mut reason = if oom {
                    "out of memory: the kernel was OOM-killed".to_string()
                } else if stopping {
                    format!("stopped on request (exit code {code})")
                } else if !st.error.is_empty() {
                    st.error.clone()
                } else if code == 0 {
                    "exited".to_string()
                } else {
                    format!("exited with code {code}")
                };
                if restarts > 0 && !stopping {
                    reason.push_str(&format!(
                        " after {restarts} restarts (restart policy `{policy}` gave up)"
                    ));
                }
                let finished = st.finished_at_ms;
                let _ = self.transition(&mut t, id, Transition::Exited { success }, |r| {
                    r.restart_count = restarts;
                    r.exit_code = Some(code as i32);
                    r.signal = signal;
                    r.oom_killed = oom;
                    r.reason = reason;
                    r.finished_at_ms = finished;
                });
            }
            // Back from a restart by its restart policy (a first start is recorded by the
            // launch itself).
            "start"
                if self.lock().kernels.get(id).map(|e| e.rec.state)
                    == Some(KernelState::Restarting) =>
            {
                let st = self
                    .0
                    .docker
                    .inspect(&ev.container_id)
                    .await
                    .unwrap_or_default();
                if st.running && !st.restarting {
                    self.restarted_running(id, &st);
                }
            }
            "oom" => {
                if let Some(e) = self.lock().kernels.get_mut(id) {
                    e.rec.oom_killed = true;
                }
            }
            "pause" => {
                let mut t = self.lock();
                if t.kernels.get(id).map(|e| e.rec.state) == Some(KernelState::Running) {
                    let _ = self.transition(&mut t, id, Transition::Suspend, |_| {});
                }
            }
            "unpause" => {
                let mut t = self.lock();
                if t.kernels.get(id).map(|e| e.rec.state) == Some(KernelState::Suspended) {
                    let _ = self.transition(&mut t, id, Transition::Resume, |_| {});
                }
            }
            "destroy" => {
                let mut t = self.lock();
                let live = t.kernels.get(id).is_some_and(|e| !e.rec.state.is_final());
                if live {
                    let _ = self.transition(&mut t, id, Transition::Fail, |r| {
                        r.reason = "the container was removed outside deckhand".into()
                    });
                }
            }
            _ => {}
        }
    }

    /// The container exited and Docker's restart policy restarts it: RESTARTING (DRMAA2
    /// QUEUED) with the exit code and the restart count; slots stay held. If it already
    /// runs again, RUNNING at once.
    fn on_restart(&self, id: &str, code: i64, st: &ContainerStatus) {
        {
            let mut t = self.lock();
            let Some(e) = t.kernels.get(id) else { return };
            if e.rec.state == KernelState::Creating {
                let started = st.started_at_ms;
                let _ = self.transition(&mut t, id, Transition::Started, |r| {
                    r.started_at_ms = started
                });
            }
            let Some(e) = t.kernels.get(id) else { return };
            if e.rec.state == KernelState::Running {
                let policy = restart_policy_shown(&e.rec.spec);
                let count = st.restart_count.max(e.rec.restart_count + 1);
                let _ = self.transition(&mut t, id, Transition::Restarted, |r| {
                    r.exit_code = Some(code as i32);
                    r.restart_count = count;
                    r.reason = format!(
                        "exited with code {code}; restart policy `{policy}` starts it again (restart {count})"
                    );
                });
                if let Some(e) = t.kernels.get_mut(id) {
                    e.cgroup = None;
                }
            }
        }
        if st.running && !st.restarting {
            self.restarted_running(id, st);
        }
    }

    /// A restarting kernel runs again.
    fn restarted_running(&self, id: &str, st: &ContainerStatus) {
        let mut t = self.lock();
        if t.kernels.get(id).map(|e| e.rec.state) != Some(KernelState::Restarting) {
            return;
        }
        let count = st.restart_count;
        let _ = self.transition(&mut t, id, Transition::Started, |r| {
            r.restart_count = r.restart_count.max(count);
            r.reason = format!("running again after restart {}", r.restart_count);
        });
        if let Some(e) = t.kernels.get_mut(id) {
            e.cgroup = CgroupPaths::of_pid(st.pid);
        }
    }

    // ---------------------------------------------------------------- queries

    pub fn info(&self, id: &str) -> Result<pb::KernelInfo, KernelError> {
        let t = self.lock();
        let e = t
            .kernels
            .get(id)
            .ok_or_else(|| KernelError::NotFound(id.into()))?;
        Ok(e.rec.info(&self.0.agent_id, usage_of(e)))
    }

    pub fn list(&self) -> Vec<pb::KernelInfo> {
        let t = self.lock();
        let mut out: Vec<pb::KernelInfo> = t
            .kernels
            .values()
            .map(|e| e.rec.info(&self.0.agent_id, usage_of(e)))
            .collect();
        super::record::sort_kernels(&mut out);
        out
    }

    /// The kernel itself, or every task of the array `id`.
    fn targets(&self, id: &str) -> Result<Vec<String>, KernelError> {
        let t = self.lock();
        if t.kernels.contains_key(id) {
            return Ok(vec![id.to_string()]);
        }
        if t.arrays.contains_key(id) {
            let prefix = format!("{id}.");
            return Ok(t
                .kernels
                .values()
                .filter(|e| e.rec.array_id.as_deref() == Some(id) && e.rec.id.starts_with(&prefix))
                .map(|e| e.rec.id.clone())
                .collect());
        }
        Err(KernelError::NotFound(id.into()))
    }

    fn list_matching(&self, id: &str) -> Result<Vec<pb::KernelInfo>, KernelError> {
        let mut ids = self.targets(id)?;
        ids.sort_by_key(|k| {
            k.rsplit_once('.')
                .and_then(|(_, i)| i.parse::<u32>().ok())
                .unwrap_or(0)
        });
        ids.iter().map(|k| self.info(k)).collect()
    }

    pub fn get(&self, id: &str) -> Result<Vec<pb::KernelInfo>, KernelError> {
        self.list_matching(id)
    }

    // ---------------------------------------------------------------- control

    pub async fn control(
        &self,
        req: pb::ControlKernelRequest,
    ) -> Result<Vec<pb::KernelInfo>, KernelError> {
        use pb::KernelAction as A;
        let action = A::try_from(req.action).unwrap_or(A::Unspecified);
        let ids = self.targets(&req.kernel_id)?;
        let is_array = ids.len() != 1 || ids[0] != req.kernel_id;
        if action == A::Signal && !(1..=64).contains(&req.signal) {
            return Err(SpecError::invalid(
                "signal",
                format!("{} is not a signal number (1-64)", req.signal),
            )
            .into());
        }
        let grace = (req.grace_ms > 0).then(|| Duration::from_millis(req.grace_ms));
        // No state changes while the engine cannot carry them out: answer UNAVAILABLE and
        // leave every kernel as it is.
        if action != A::Unspecified {
            self.0.docker.ping().await?;
        }
        let ops = ids.iter().map(|id| async move {
            match action {
                A::Stop => self.stop(id, grace).await,
                A::Remove => self.remove(id, req.force).await,
                A::Signal => self.signal(id, req.signal).await,
                A::Suspend => self.suspend(id).await,
                A::Resume => self.resume(id).await,
                A::Release => self.release(id).await,
                A::Unspecified => Err(SpecError::invalid(
                    "action",
                    "say what to do: stop, remove, signal, suspend, resume or release",
                )
                .into()),
            }
        });
        let results = futures::future::join_all(ops).await;
        let mut errors = Vec::new();
        for r in results {
            if let Err(e) = r {
                // On an array, tasks already in the target state are fine.
                if !(is_array && matches!(e, KernelError::WrongState(_))) {
                    errors.push(e);
                }
            }
        }
        if action == A::Remove && is_array && errors.is_empty() {
            self.lock().arrays.remove(&req.kernel_id);
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        if action == A::Remove {
            return Ok(Vec::new());
        }
        self.list_matching(&req.kernel_id)
    }

    /// `SyncKernels`: compares the manager's list with the table; see the proto.
    pub async fn sync(
        &self,
        known: &[String],
        destroy_unknown: bool,
    ) -> Result<pb::SyncKernelsResponse, KernelError> {
        let known: BTreeSet<&str> = known.iter().map(String::as_str).collect();
        let (unknown, lost) = {
            let t = self.lock();
            let unknown: Vec<pb::KernelInfo> = t
                .kernels
                .values()
                .filter(|e| {
                    !known.contains(e.rec.id.as_str())
                        && !e.rec.array_id.as_deref().is_some_and(|a| known.contains(a))
                })
                .map(|e| e.rec.info(&self.0.agent_id, usage_of(e)))
                .collect();
            let lost: Vec<pb::LostKernel> = known
                .iter()
                .filter(|id| !t.kernels.contains_key(**id) && !t.arrays.contains_key(**id))
                .map(|id| pb::LostKernel {
                    kernel_id: id.to_string(),
                    reason: format!(
                        "agent `{}` has no kernel `{id}`: it was removed, or never created here",
                        self.0.agent_id
                    ),
                })
                .collect();
            (unknown, lost)
        };
        let mut destroyed = Vec::new();
        if destroy_unknown {
            for k in &unknown {
                match self.remove(&k.kernel_id, true).await {
                    Ok(()) => destroyed.push(k.kernel_id.clone()),
                    Err(e) => {
                        tracing::warn!(kernel_id = %k.kernel_id, error = %e, "sync: cannot remove an unknown kernel")
                    }
                }
            }
            if !destroyed.is_empty() {
                tracing::warn!(
                    count = destroyed.len(),
                    "sync: removed kernels the manager does not know"
                );
            }
        }
        Ok(pb::SyncKernelsResponse {
            unknown,
            lost,
            destroyed,
        })
    }

    /// Stops every live kernel (each with its grace period), at once; for
    /// `agent/on_shutdown = stop`.
    pub async fn stop_all(&self) {
        let live: Vec<String> = self
            .lock()
            .kernels
            .values()
            .filter(|e| !e.rec.state.is_final())
            .map(|e| e.rec.id.clone())
            .collect();
        let stops = live.iter().map(|id| self.stop(id, None));
        for (id, r) in live.iter().zip(futures::future::join_all(stops).await) {
            if let Err(e) = r {
                tracing::warn!(kernel_id = %id, error = %e, "stop on shutdown failed");
            }
        }
    }

    fn state_of(&self, id: &str) -> Result<(KernelState, String), KernelError> {
        let r = self.record(id)?;
        Ok((r.state, r.container_id))
    }

    fn wrong(op: &str, state: KernelState) -> KernelError {
        KernelError::WrongState(format!("cannot {op} a kernel that is {state}"))
    }

    async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<(), KernelError> {
        let (rx, cid, was, grace) = {
            let mut t = self.lock();
            let e = t
                .kernels
                .get(id)
                .ok_or_else(|| KernelError::NotFound(id.into()))?;
            let was = e.rec.state;
            if was == KernelState::Terminating {
                (e.state.subscribe(), String::new(), was, Duration::ZERO)
            } else {
                let grace = grace.unwrap_or(e.rec.spec.stop_grace_period);
                let cid = e.rec.container_id.clone();
                let rx = e.state.subscribe();
                let reason = if matches!(
                    was,
                    KernelState::Running | KernelState::Suspended | KernelState::Restarting
                ) {
                    "stop requested".to_string()
                } else {
                    "cancelled before it started".to_string()
                };
                self.transition(&mut t, id, Transition::Terminate, |r| r.reason = reason)?;
                (rx, cid, was, grace)
            }
        };
        match was {
            KernelState::Running | KernelState::Suspended => {
                if was == KernelState::Suspended {
                    let _ = self.0.docker.unpause(&cid).await;
                }
                self.0.docker.stop(&cid, grace).await?;
            }
            KernelState::Restarting => {
                // Stopping cancels the restart; the process had already exited, so no `die`
                // follows: look once more and record the end.
                self.0.docker.stop(&cid, grace).await?;
                self.on_event(ContainerEvent {
                    container_id: cid.clone(),
                    kernel_id: id.to_string(),
                    action: "die".into(),
                    exit_code: None,
                })
                .await;
            }
            KernelState::Terminating => {}
            _ => {
                if !cid.is_empty() {
                    self.0.docker.remove(&cid, true).await?;
                }
                return Ok(());
            }
        }
        let mut rx = rx;
        let _ = tokio::time::timeout(
            grace + Duration::from_secs(30),
            rx.wait_for(|s| s.is_final()),
        )
        .await;
        Ok(())
    }

    async fn remove(&self, id: &str, force: bool) -> Result<(), KernelError> {
        let (state, cid) = self.state_of(id)?;
        if !state.is_final() {
            if !force {
                return Err(KernelError::WrongState(format!(
                    "cannot remove a kernel that is {state}; stop it first or remove with force"
                )));
            }
            let mut t = self.lock();
            let tr = if matches!(
                state,
                KernelState::Preparing
                    | KernelState::Pulling
                    | KernelState::Creating
                    | KernelState::Held
            ) {
                Transition::Terminate
            } else {
                Transition::Fail
            };
            let _ = self.transition(&mut t, id, tr, |r| r.reason = "removed by force".into());
        }
        if !cid.is_empty() {
            self.0.docker.remove(&cid, true).await?;
        }
        let keep = self.config().kernel.keep_scratch;
        if !keep {
            if let Err(e) = self.0.scratch.remove(id) {
                tracing::warn!(kernel_id = %id, error = %e, "cannot remove scratch dir");
            }
        }
        let _ = self.0.scratch.forget(id);
        let removed = self.lock().kernels.remove(id);
        if let Some(e) = removed {
            let mut rec = e.rec;
            rec.reason = "removed".into();
            self.emit(&rec);
            if let Some(data) = &rec.process_data {
                self.release_process_data(&rec.spec.process_id, data).await;
            }
        }
        Ok(())
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<(), KernelError> {
        let (state, cid) = self.state_of(id)?;
        if !matches!(
            state,
            KernelState::Running | KernelState::Suspended | KernelState::Terminating
        ) {
            return Err(Self::wrong("signal", state));
        }
        self.0.docker.kill(&cid, &signal.to_string()).await?;
        Ok(())
    }

    async fn suspend(&self, id: &str) -> Result<(), KernelError> {
        self.freeze(id, true).await
    }

    async fn resume(&self, id: &str) -> Result<(), KernelError> {
        self.freeze(id, false).await
    }

    /// Pauses (suspend) or unpauses (resume) the container, then records the transition
    /// unless the Docker event for it got there first.
    async fn freeze(&self, id: &str, suspend: bool) -> Result<(), KernelError> {
        let (tr, from) = if suspend {
            (Transition::Suspend, KernelState::Running)
        } else {
            (Transition::Resume, KernelState::Suspended)
        };
        let (state, cid) = self.state_of(id)?;
        state
            .apply(tr)
            .map_err(|e| KernelError::WrongState(e.to_string()))?;
        if suspend {
            self.0.docker.pause(&cid).await?;
        } else {
            self.0.docker.unpause(&cid).await?;
        }
        let mut t = self.lock();
        if t.kernels.get(id).map(|e| e.rec.state) == Some(from) {
            self.transition(&mut t, id, tr, |_| {})?;
        }
        Ok(())
    }

    async fn release(&self, id: &str) -> Result<(), KernelError> {
        // A held kernel's input file must be there before it may start; it stays HELD.
        let rec = self.record(id)?;
        if rec.state == KernelState::Held {
            self.input_file(&rec)?;
        }
        {
            let mut t = self.lock();
            self.transition(&mut t, id, Transition::Release, |_| {})?;
        }
        if let Err(e) = self.start_container(id).await {
            self.fail(id, e.to_string());
            return Err(e);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- logs, exec, files

    pub fn logs(&self, id: &str, follow: bool, tail: u32) -> Result<ChunkStream, KernelError> {
        let (state, cid) = self.state_of(id)?;
        if cid.is_empty() {
            return Err(KernelError::WrongState(format!(
                "kernel `{id}` has no container yet ({state})"
            )));
        }
        Ok(self.0.docker.logs(&cid, follow, tail))
    }

    pub async fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        env: BTreeMap<String, String>,
        working_dir: String,
    ) -> Result<(String, ChunkStream), KernelError> {
        let rec = self.record(id)?;
        if rec.state != KernelState::Running {
            return Err(Self::wrong("exec in", rec.state));
        }
        if cmd.is_empty() {
            return Err(SpecError::invalid("command", "give the command to run").into());
        }
        for (k, _) in env.iter() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(SpecError::invalid(format!("env[{k:?}]"), "bad variable name").into());
            }
        }
        let env = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let wd = (!working_dir.is_empty()).then_some(working_dir);
        Ok(self
            .0
            .docker
            .exec(&rec.container_id, cmd, env, wd, Some(rec.spec.user.clone()))
            .await?)
    }

    pub async fn exec_exit_code(&self, exec_id: &str) -> Option<i64> {
        self.0.docker.exec_exit_code(exec_id).await.ok().flatten()
    }

    fn work_dir(&self, id: &str) -> Result<PathBuf, KernelError> {
        self.record(id)?;
        Ok(self.0.scratch.work_dir(id)?)
    }

    pub async fn upload(&self, id: &str, path: &str, content: &[u8]) -> Result<u64, KernelError> {
        if content.len() > MAX_UPLOAD {
            return Err(SpecError::invalid(
                "content",
                format!(
                    "{} bytes; uploads are at most {}",
                    content.len(),
                    show_bytes(MAX_UPLOAD as u64)
                ),
            )
            .into());
        }
        let work = self.work_dir(id)?;
        let target = scratch::resolve_inside(&work, path, false)?;
        if target == std::fs::canonicalize(&work).unwrap_or_default() {
            return Err(PathError::Refused(path.into(), "names the work dir itself").into());
        }
        tokio::fs::write(&target, content)
            .await
            .map_err(|e| PathError::Io(path.into(), e))?;
        let cfg = self.config();
        scratch::hand_over(&target, cfg.kernel.uid, cfg.kernel.gid)
            .map_err(|e| PathError::Io(path.into(), e))?;
        Ok(content.len() as u64)
    }

    pub async fn download(&self, id: &str, path: &str) -> Result<Vec<u8>, KernelError> {
        let work = self.work_dir(id)?;
        let target = scratch::resolve_inside(&work, path, true)?;
        let meta = std::fs::metadata(&target).map_err(|e| PathError::Io(path.into(), e))?;
        if !meta.is_file() {
            return Err(PathError::Refused(path.into(), "is not a regular file").into());
        }
        if meta.len() > MAX_DOWNLOAD {
            return Err(KernelError::Exhausted(format!(
                "path `{path}`: {} is over the {} download limit",
                show_bytes(meta.len()),
                show_bytes(MAX_DOWNLOAD)
            )));
        }
        tokio::fs::read(&target)
            .await
            .map_err(|e| PathError::Io(path.into(), e).into())
    }

    pub fn list_files(&self, id: &str, path: &str) -> Result<Vec<pb::FileEntry>, KernelError> {
        let work = self.work_dir(id)?;
        let dir = if path.is_empty() || path == "." {
            std::fs::canonicalize(&work).map_err(|e| PathError::Io(path.into(), e))?
        } else {
            scratch::resolve_inside(&work, path, true)?
        };
        let base = std::fs::canonicalize(&work).map_err(|e| PathError::Io(path.into(), e))?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| PathError::Io(path.into(), e))? {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            let rel = entry
                .path()
                .strip_prefix(&base)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.push(pb::FileEntry {
                path: rel,
                size: meta.len(),
                dir: meta.is_dir(),
                modified_ms: meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Kernel ids this agent holds (for tests of the registry and for sync).
    pub fn ids(&self) -> BTreeSet<String> {
        self.lock().kernels.keys().cloned().collect()
    }
}

use std::path::{Path, PathBuf};

/// An engine error, with a missing network named by the setting that asked for it.
fn name_network(e: EngineError, rec: &Record, cfg: &ClusterConfig) -> KernelError {
    match e {
        EngineError::NotFound(m) if m.contains("network") => {
            let (setting, name) = if rec.spec.network_mode.is_empty() {
                (
                    "docker/network",
                    cfg.docker.network.clone().unwrap_or_default(),
                )
            } else {
                ("network_mode", rec.spec.network_mode.clone())
            };
            KernelError::Internal(format!("{setting} `{name}`: no such Docker network ({m})"))
        }
        other => other.into(),
    }
}

fn usage_of(e: &Entry) -> Option<pb::KernelUsage> {
    if e.rec.state.is_final() {
        return None;
    }
    let (cpu, mem) = e.cgroup.as_ref()?.read()?;
    Some(pb::KernelUsage {
        kernel_id: e.rec.id.clone(),
        cpu_usage_ns: cpu,
        memory_bytes: mem,
    })
}

/// A stable hash of the whole request, secrets included (never shown).
fn fingerprint(req: &pb::CreateKernelRequest) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.encode_to_vec().hash(&mut h);
    h.finish()
}

/// The spec of array task `index`: `DECKHAND_TASK_INDEX` set, `$DECKHAND_INDEX$` replaced
/// in the command, working dir and output/error paths.
fn task_spec(shown: &pb::KernelSpec, spec: &Spec, index: u32) -> (pb::KernelSpec, Spec) {
    const MARK: &str = "$DECKHAND_INDEX$";
    let i = index.to_string();
    let sub = |s: &str| s.replace(MARK, &i);
    let mut shown = shown.clone();
    shown.kernel_id = format!("{}.{index}", shown.kernel_id);
    let mut spec = spec.clone();
    spec.command = spec.command.iter().map(|a| sub(a)).collect();
    spec.working_dir = sub(&spec.working_dir);
    spec.output_path = sub(&spec.output_path);
    spec.error_path = sub(&spec.error_path);
    spec.env.insert("DECKHAND_TASK_INDEX".into(), i.clone());
    shown.command = spec.command.clone();
    shown.working_dir = spec.working_dir.clone();
    shown.output_path = spec.output_path.clone();
    shown.error_path = spec.error_path.clone();
    shown.env.insert("DECKHAND_TASK_INDEX".into(), i);
    (shown, spec)
}

/// `environ.txt`, `resource.txt` and `kernel.json` for `/home/config`. Secret values are
/// left out of all three (the container's environment has them).
fn config_files(rec: &Record, agent_id: &str) -> Vec<(&'static str, String)> {
    let mut environ = String::new();
    for (k, v) in &rec.spec.env {
        if rec.shown_spec.secret_env.contains_key(k) {
            continue;
        }
        environ.push_str(&format!("{k}={v}\n"));
    }
    let slots = rec.slots.clone().unwrap_or_default();
    let mut resource = format!(
        "CPU={}\nMEMORY={}\nGPU_COUNT={}\nGPUS={}\n",
        slots.cpu,
        slots.memory,
        slots.gpus.len(),
        slots.gpus.join(",")
    );
    let ports: Vec<String> = rec
        .ports
        .iter()
        .map(|p| format!("{}/{}={}", p.container, p.protocol, p.host))
        .collect();
    resource.push_str(&format!("PORTS={}\nAGENT_ID={agent_id}\n", ports.join(",")));
    let kernel_json = serde_json::to_string_pretty(&rec.shown_spec).unwrap_or_default();
    vec![
        ("environ.txt", environ),
        ("resource.txt", resource),
        ("kernel.json", kernel_json),
    ]
}

/// Copies the input file into the kernel's stdin, then closes it (the command reads EOF).
async fn feed_input(
    kernel_id: String,
    path: PathBuf,
    mut stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) {
    let sent = async {
        let mut file = tokio::fs::File::open(&path).await?;
        let n = tokio::io::copy(&mut file, &mut stdin).await?;
        stdin.shutdown().await?;
        Ok::<u64, std::io::Error>(n)
    };
    match sent.await {
        Ok(n) => tracing::debug!(kernel_id = %kernel_id, bytes = n, "input fed to stdin"),
        Err(e) => {
            tracing::warn!(kernel_id = %kernel_id, input = %path.display(), error = %e, "cannot feed the input file to stdin")
        }
    }
}

/// Whether `port` can be bound on `ip` (every address when empty) right now.
fn port_bindable(ip: &str, port: u16, protocol: &str) -> bool {
    let ip: std::net::IpAddr = ip
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match protocol {
        "udp" => std::net::UdpSocket::bind((ip, port)).is_ok(),
        _ => std::net::TcpListener::bind((ip, port)).is_ok(),
    }
}

/// `always`, `on-failure:2`: the policy as the user wrote it.
fn restart_policy_shown(spec: &Spec) -> String {
    if spec.restart_retries > 0 {
        format!("{}:{}", spec.restart_policy, spec.restart_retries)
    } else {
        spec.restart_policy.clone()
    }
}

fn signal_name(n: i32) -> String {
    nix::sys::signal::Signal::try_from(n)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {n}"))
}
