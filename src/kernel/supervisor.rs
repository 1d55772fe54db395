//! The kernel supervisor: the lifecycle of every kernel on this agent, independent of where
//! kernels run. It validates and admits requests, allocates slots, launches kernels through
//! their [`Runtime`], follows the runtime's events, and answers queries; every state change
//! goes through one place ([`table`](super::table)), is persisted by the
//! [`registry`](super::registry) and becomes a numbered event.
//!
//! Concurrency: the table sits behind one `std` mutex held only for bookkeeping (never
//! across an await); runtime calls run outside it. Creation is bounded by a semaphore
//! (`agent/kernel_creation_concurrency`); runtime events arrive on one stream per runtime,
//! not by polling. No thread or task lives per kernel, except short-lived work a runtime
//! hands back while a kernel runs (an output copier, an input feeder).
//!
//! Where the rest lives: [`launch`](super::launch) (create, start), [`arrays`](super::arrays)
//! (job arrays), [`control`](super::control) (job control, sync), [`access`](super::access)
//! (logs, exec, files),
//! [`observe`](super::observe) (runtime events, resync, restarts),
//! [`recovery`](super::recovery) (after a restart), [`slots`](super::slots).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::KernelError;
use super::events::EventLog;
use super::record::Record;
use super::registry::Registry;
use super::slots::{self, Amounts, Capacity};
use super::state::KernelState;
use super::table::{Entry, Table};
use crate::config::ClusterConfig;
use crate::runtime::{Background, Runtime, Runtimes, Usage};

/// Handle to the supervisor; cheap to clone.
#[derive(Clone)]
pub struct Supervisor(pub(super) Arc<Inner>);

pub(super) struct Inner {
    pub runtimes: Runtimes,
    pub agent_id: String,
    pub registry: Registry,
    pub config: watch::Receiver<Arc<ClusterConfig>>,
    pub capacity: watch::Receiver<Arc<Capacity>>,
    pub table: Mutex<Table>,
    pub events: EventLog,
    pub permits: Semaphore,
    pub initial_permits: usize,
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
    /// The agent's span: background work for kernels logs within it.
    pub span: tracing::Span,
    /// Unix ms when every live kernel was last reconciled with its runtime (0: never yet).
    pub synced: watch::Sender<i64>,
    /// Where the registry (and the SSH host key) live.
    pub state_dir: std::path::PathBuf,
    /// The SSH server's settings (host key), made on first use.
    pub ssh_config: Mutex<Option<Arc<russh::server::Config>>>,
    /// Set while the agent is cordoned or draining: why new kernels are refused.
    pub cordon: Mutex<Option<String>>,
}

pub struct SupervisorOptions {
    pub runtimes: Runtimes,
    pub agent_id: String,
    /// The registry lives under it (`<state_dir>/.deckhand/kernels/`).
    pub state_dir: std::path::PathBuf,
    pub config: watch::Receiver<Arc<ClusterConfig>>,
    pub capacity: watch::Receiver<Arc<Capacity>>,
    pub creation_concurrency: usize,
    pub event_capacity: usize,
}

/// A kernel as queries show it: its record, its usage while it runs, and what its runtime
/// tells about its instance.
#[derive(Debug, Clone)]
pub struct KernelView {
    pub record: Record,
    pub usage: Option<Usage>,
    pub runtime_info: BTreeMap<String, String>,
}

/// A runtime this agent offers now, and its load (for heartbeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLoad {
    pub name: &'static str,
    /// 0 when only the host's slots bound it.
    pub capacity: u32,
    pub in_use: u32,
    /// What its cluster kernels can span (see [`crate::runtime::SpanGroup`]).
    pub span: Option<crate::runtime::SpanGroup>,
}

impl Supervisor {
    pub fn new(o: SupervisorOptions) -> std::io::Result<Self> {
        let registry = Registry::open(Path::new(&o.state_dir))?;
        let (records, bad) = registry.load_all();
        for b in bad {
            tracing::warn!("kernel registry: unreadable record {b}");
        }
        let permits = o.creation_concurrency.max(1);
        let span = tracing::info_span!("supervisor", agent_id = %o.agent_id);
        let k = Self(Arc::new(Inner {
            runtimes: o.runtimes,
            agent_id: o.agent_id,
            registry,
            config: o.config,
            capacity: o.capacity,
            table: Mutex::new(Table::default()),
            events: EventLog::new(o.event_capacity),
            permits: Semaphore::new(permits),
            initial_permits: permits,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            span,
            synced: watch::channel(0).0,
            state_dir: o.state_dir.clone(),
            ssh_config: Mutex::new(None),
            cordon: Mutex::new(None),
        }));
        // Records of an earlier run: keep them (with their allocations) so nothing is
        // double-assigned; their instances are reconciled by recovery and the first resync.
        {
            let mut t = k.lock();
            for rec in records {
                let state = watch::channel(rec.state).0;
                t.kernels.insert(
                    rec.id.clone(),
                    Entry {
                        rec,
                        state,
                        launched: true,
                        from_registry: true,
                    },
                );
            }
        }
        k.rebuild_arrays();
        Ok(k)
    }

    pub fn events(&self) -> &EventLog {
        &self.0.events
    }

    pub fn agent_id(&self) -> &str {
        &self.0.agent_id
    }

    pub fn runtimes(&self) -> &Runtimes {
        &self.0.runtimes
    }

    /// Unix ms when every live kernel was last reconciled with its runtime: after start-up
    /// recovery and after each reconnect (0 before the first time). Heartbeats go out at
    /// once when it changes, so the manager hears the reconciled kernels without waiting a
    /// period.
    pub fn synced(&self) -> watch::Receiver<i64> {
        self.0.synced.subscribe()
    }

    pub(super) fn config(&self) -> Arc<ClusterConfig> {
        self.0.config.borrow().clone()
    }

    /// Follows every runtime's events until `stop` (after recovering each runtime's
    /// kernels); kernels' background work is awaited too.
    pub async fn run(self, stop: CancellationToken) {
        let me = self.clone();
        self.spawn(async move { me.follow_concurrency().await });
        for rt in self.0.runtimes.all() {
            let me = self.clone();
            let images: Arc<dyn Fn() -> BTreeSet<String> + Send + Sync> =
                Arc::new(move || me.images_in_use());
            let me = self.clone();
            let name = rt.name();
            let live: Arc<dyn Fn() -> Option<BTreeSet<String>> + Send + Sync> =
                Arc::new(move || me.live_instances(name));
            let ctx = Background {
                images_in_use: images,
                live_instances: live,
                config: self.0.config.clone(),
                stop: self.0.stop.clone(),
            };
            if let Some(work) = rt.clone().background(ctx) {
                self.spawn(work);
            }
        }
        let loops = self.0.runtimes.all().map(|rt| {
            let me = self.clone();
            me.observe(rt.clone(), stop.clone())
        });
        futures::future::join_all(loops).await;
        self.0.stop.cancel();
        self.0.tasks.close();
        self.0.tasks.wait().await;
    }

    /// Images of the kernels this agent holds (never collected by image GC).
    fn images_in_use(&self) -> BTreeSet<String> {
        self.lock()
            .kernels
            .values()
            .map(|e| e.rec.spec.image.clone())
            .collect()
    }

    /// The instances of runtime `runtime`'s live kernels, `None` while records of an earlier
    /// run wait for its recovery.
    fn live_instances(&self, runtime: &str) -> Option<BTreeSet<String>> {
        let t = self.lock();
        let mut live = BTreeSet::new();
        for e in t.kernels.values().filter(|e| e.rec.runtime == runtime) {
            if e.from_registry {
                return None;
            }
            if let Some(h) = e.rec.handle.as_ref().filter(|_| !e.rec.state.is_final()) {
                live.insert(h.instance.clone());
            }
        }
        Some(live)
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

    /// Runs `f` as owned background work, stopped with the supervisor.
    pub(super) fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        use tracing::Instrument;
        let stop = self.0.stop.clone();
        // Work spawned for a kernel logs within the agent's span (its agent id).
        let span = self.0.span.clone();
        self.0.tasks.spawn(
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = f => {}
                }
            }
            .instrument(span),
        );
    }

    /// The runtime named `name`.
    pub(super) fn runtime(&self, name: &str) -> Result<Arc<dyn Runtime>, KernelError> {
        Ok(self.0.runtimes.get(name)?.clone())
    }

    // ---------------------------------------------------------------- slots

    /// Waits (briefly) for the first host sample, so slots are known.
    pub(super) async fn wait_for_capacity(&self) {
        let mut rx = self.0.capacity.clone();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| c.cpu_count > 0)).await;
    }

    pub(super) fn capacity(&self) -> Arc<Capacity> {
        self.0.capacity.borrow().clone()
    }

    /// CPU, memory and GPU slots held by live kernels.
    pub fn allocated(&self) -> Amounts {
        slots::held(self.lock().kernels.values().map(|e| &e.rec))
    }

    /// CPU and memory of every running kernel, as its runtime reads them.
    pub fn usage(&self) -> Vec<(String, Usage)> {
        let running: Vec<Record> = self
            .lock()
            .kernels
            .values()
            .filter(|e| !e.rec.state.is_final() && e.rec.handle.is_some())
            .map(|e| e.rec.clone())
            .collect();
        running
            .into_iter()
            .filter_map(|r| Some((r.id.clone(), self.usage_of(&r)?)))
            .collect()
    }

    pub(super) fn usage_of(&self, rec: &Record) -> Option<Usage> {
        if rec.state.is_final() {
            return None;
        }
        let handle = rec.handle.as_ref()?;
        self.0.runtimes.get(&rec.runtime).ok()?.usage(handle)
    }

    // ---------------------------------------------------------------- queries

    pub(super) fn view(&self, rec: Record) -> KernelView {
        let usage = self.usage_of(&rec);
        let runtime_info = self
            .0
            .runtimes
            .get(&rec.runtime)
            .map(|rt| rt.describe(&rec))
            .unwrap_or_default();
        KernelView {
            record: rec,
            usage,
            runtime_info,
        }
    }

    pub fn info(&self, id: &str) -> Result<KernelView, KernelError> {
        let rec = self.record(id)?;
        Ok(self.view(rec))
    }

    /// Every kernel, oldest first, array tasks by index.
    pub fn list(&self) -> Vec<KernelView> {
        let mut recs: Vec<Record> = self
            .lock()
            .kernels
            .values()
            .map(|e| e.rec.clone())
            .collect();
        recs.sort_by(|a, b| {
            (a.created_at_ms, &a.array_id, a.task_index, &a.id).cmp(&(
                b.created_at_ms,
                &b.array_id,
                b.task_index,
                &b.id,
            ))
        });
        recs.into_iter().map(|r| self.view(r)).collect()
    }

    /// The kernel itself, or every task of the array `id`.
    pub(super) fn targets(&self, id: &str) -> Result<Vec<String>, KernelError> {
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

    /// The kernel `id`, or the tasks of the array `id` in index order.
    pub fn get(&self, id: &str) -> Result<Vec<KernelView>, KernelError> {
        let mut ids = self.targets(id)?;
        ids.sort_by_key(|k| {
            k.rsplit_once('.')
                .and_then(|(_, i)| i.parse::<u32>().ok())
                .unwrap_or(0)
        });
        ids.iter().map(|k| self.info(k)).collect()
    }

    /// Kernel ids this agent holds.
    pub fn ids(&self) -> BTreeSet<String> {
        self.lock().kernels.keys().cloned().collect()
    }

    /// The runtimes this agent offers now (enabled by the config), with their live kernels
    /// (what heartbeats report beside the slots, so the manager places by runtime).
    pub fn runtime_loads(&self) -> Vec<RuntimeLoad> {
        let cfg = self.config();
        let mut live: BTreeMap<String, u32> = BTreeMap::new();
        for e in self.lock().kernels.values() {
            if !e.rec.state.is_final() {
                *live.entry(e.rec.runtime.clone()).or_insert(0) += 1;
            }
        }
        self.0
            .runtimes
            .all()
            .filter(|rt| rt.enabled(&cfg))
            .map(|rt| RuntimeLoad {
                name: rt.name(),
                capacity: rt.capacity(&cfg).unwrap_or(0),
                in_use: live.get(rt.name()).copied().unwrap_or(0),
                span: rt.span_group(),
            })
            .collect()
    }

    /// The progress of live kernels that report one (for heartbeats).
    pub fn progress(&self) -> Vec<(String, f64)> {
        self.lock()
            .kernels
            .values()
            .filter(|e| !e.rec.state.is_final())
            .filter_map(|e| Some((e.rec.id.clone(), e.rec.progress?)))
            .collect()
    }

    /// How many kernels each runtime holds in each state (for metrics; one pass under the
    /// lock, nothing cloned but runtime names).
    pub fn census(&self) -> HashMap<(String, KernelState), u32> {
        let mut out: HashMap<(String, KernelState), u32> = HashMap::new();
        for e in self.lock().kernels.values() {
            let key = (e.rec.runtime.clone(), e.rec.state);
            *out.entry(key).or_insert(0) += 1;
        }
        out
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.table.lock()
    }
}
