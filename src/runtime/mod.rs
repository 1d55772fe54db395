//! Where kernels run: the [`Runtime`] trait, the seam between the kernel lifecycle
//! ([`crate::kernel`]) and whatever carries a kernel out.
//!
//! The supervisor calls a runtime and never looks behind it: it asks what the runtime can do
//! ([`Capabilities`]), lets it check the runtime-specific part of a spec (its rules of single
//! fields among the spec's own checks, [`Runtime::field_rules`]), prepares (image fetch,
//! with progress), creates, starts, stops with a grace period and destroys; it follows the
//! runtime's [`RuntimeEvent`]s and asks for a [`Status`] when it resynchronises. What a
//! runtime needs to find its work again after a restart is an opaque, versioned [`Handle`]
//! kept in the kernel's record. Operations a runtime cannot do answer
//! [`RuntimeError::Unsupported`], which the caller sees as FAILED_PRECONDITION naming the
//! runtime.
//!
//! - [`docker`]: kernels as local Docker containers (the default);
//! - [`vastai`]: kernels on rented Vast.ai GPU instances;
//! - [`memory`]: an in-memory runtime for the supervisor's unit tests and the fleet benchmark.

pub mod docker;
pub mod memory;
pub mod peers;
mod types;
pub mod vastai;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use types::*;

use crate::config::ClusterConfig;
use crate::spec::{FieldRules, NoFieldRules, Spec, SpecError};

/// What a runtime can do beyond the lifecycle every runtime has (create, start, stop,
/// destroy, status, events, listing, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Pause and unpause (`suspend`/`resume`).
    pub suspend: bool,
    /// Deliver a signal to the kernel's process.
    pub signal: bool,
    /// Run a command inside a running kernel.
    pub exec: bool,
    /// Upload, download and list files in the kernel's home.
    pub files: bool,
    /// Create without starting, start on `release` (`--hold`).
    pub hold: bool,
    /// Expose kernel ports on host ports of this agent.
    pub host_ports: bool,
    /// Kernels take this host's CPU, memory and GPU slots.
    pub local_slots: bool,
    /// Cluster kernels: several instances (master and workers) run as one kernel.
    pub cluster: bool,
    /// The host's RDMA (RoCE) devices passed through (the `*-roce` profiles).
    pub rdma: bool,
}

/// Engines whose cluster kernels can span each other (one Docker swarm).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanGroup {
    /// Names the group: equal on every engine of it.
    pub id: String,
    /// Whether this engine can own a spanning kernel (make its network).
    pub owner: bool,
}

/// One place where kernels run. Every method that touches the outside world is async and
/// answers [`RuntimeError`]; optional operations default to [`RuntimeError::Unsupported`].
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's name, as in `run --runtime NAME` and in records (`docker`).
    fn name(&self) -> &'static str;

    /// What the runtime talks to, for log lines (`Docker engine`).
    fn backend(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Checks the runtime-specific part of a validated spec, naming the field it refuses.
    fn validate(&self, spec: &Spec, cfg: &ClusterConfig) -> Result<(), SpecError>;

    /// What the runtime adds to the rules of single fields (Docker: its socket, network
    /// modes, minimum memory), asked by spec validation at each field's place so that a
    /// request's first problem stays the same whoever refuses it.
    fn field_rules(&self) -> &dyn FieldRules {
        &NoFieldRules
    }

    /// Whether this agent can run kernels here now (a remote runtime needs its settings).
    fn enabled(&self, cfg: &ClusterConfig) -> bool {
        let _ = cfg;
        true
    }

    /// What `inspect` shows about the kernel's instance beyond the common fields.
    fn describe(&self, rec: &Launch) -> BTreeMap<String, String> {
        let _ = rec;
        BTreeMap::new()
    }

    /// Whether one more kernel may run here, given the live kernels (`live`, all runtimes):
    /// RESOURCE_EXHAUSTED naming the setting that bounds it.
    fn admit(&self, live: &[&Launch], cfg: &ClusterConfig) -> Result<(), RuntimeError> {
        let _ = (live, cfg);
        Ok(())
    }

    /// Before a kernel is admitted: whether what it would cost fits the runtime's budget now
    /// (a remote runtime asks its market); RESOURCE_EXHAUSTED naming the setting when not.
    async fn quote(&self, spec: &Spec, cfg: &ClusterConfig) -> Result<(), RuntimeError> {
        let _ = (spec, cfg);
        Ok(())
    }

    /// How many kernels the runtime can hold at once, when it has its own bound (remote
    /// instances); `None` when only the host's slots bound it.
    fn capacity(&self, cfg: &ClusterConfig) -> Option<u32> {
        let _ = cfg;
        None
    }

    /// The group of engines this runtime's cluster kernels can span (Docker: its swarm),
    /// and whether this one can own such a kernel; `None` when it spans nothing.
    fn span_group(&self) -> Option<SpanGroup> {
        None
    }

    /// The kernel's home on this host (shown in `inspect`), where the runtime has one.
    fn home(&self, kernel_id: &str) -> String {
        let _ = kernel_id;
        String::new()
    }

    /// Whether a held kernel can start now (its input file is there); a refusal leaves it
    /// held.
    fn ready_to_start(&self, rec: &Launch) -> Result<(), RuntimeError> {
        let _ = rec;
        Ok(())
    }

    /// Whether the runtime's backend answers; control operations ask first, so none changes
    /// state while it cannot be carried out.
    async fn ping(&self) -> Result<(), RuntimeError>;

    /// Makes what the kernel needs before it can be created available (its image), telling
    /// `report` how it goes.
    async fn prepare(
        &self,
        rec: &Launch,
        cfg: &ClusterConfig,
        report: &Reporter,
    ) -> Result<(), RuntimeError>;

    /// Creates the kernel's instance, not started; the handle finds it again. A runtime whose
    /// instances take long to come up reports [`Progress::Created`] as soon as one exists
    /// (the kernel then reads CREATING) and notes on the way.
    async fn create(
        &self,
        rec: &Launch,
        cfg: &ClusterConfig,
        report: &Reporter,
    ) -> Result<Handle, RuntimeError>;

    /// Starts a created instance. Work that follows the kernel while it runs (copying its
    /// output to files, feeding its input) comes back for the supervisor to own.
    async fn start(
        &self,
        rec: &Launch,
        handle: &Handle,
        cfg: &ClusterConfig,
    ) -> Result<Started, RuntimeError>;

    /// Asks the kernel to end (SIGTERM), forcing it after `grace`.
    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<(), RuntimeError>;

    /// Removes the instance; one already gone counts as removed.
    async fn destroy(&self, handle: &Handle) -> Result<(), RuntimeError>;

    /// Gives back what a removed kernel held outside its instance (its home, process data
    /// no other kernel of its process still uses).
    async fn release(&self, rec: &Launch, process_still_used: bool, cfg: &ClusterConfig);

    /// What the instance is doing now.
    async fn status(&self, handle: &Handle) -> Result<Status, RuntimeError>;

    /// Changes of this agent's instances, as they happen (never by polling where the
    /// backend has events). The stream ends or errs when the backend goes away.
    fn events(&self) -> EventStream;

    /// The instances this runtime holds for this namespace and agent, recorded or not.
    async fn list_owned(&self) -> Result<Vec<Owned>, RuntimeError>;

    /// What an instance of ours that has no record (lost in a crash) says of itself; `None` when the runtime disposed of it instead (a rented
    /// instance nobody knows only costs money).
    async fn adopt(
        &self,
        owned: &Owned,
        cfg: &ClusterConfig,
    ) -> Result<Option<Adopted>, RuntimeError>;

    /// After a restart: puts back what a live kernel needs beside its instance (a home that
    /// vanished); returns what it did, for the kernel's events.
    async fn restore(&self, rec: &Launch, cfg: &ClusterConfig) -> Option<String> {
        let _ = (rec, cfg);
        None
    }

    /// After a restart: removes what this runtime left for kernels no record owns (homes,
    /// process data); returns what it removed.
    fn remove_orphans(&self, live: &[&Launch], cfg: &ClusterConfig) -> Vec<String> {
        let _ = (live, cfg);
        Vec::new()
    }

    /// The kernel's output (stdout and stderr), all of it or the last `tail` lines.
    fn logs(&self, handle: &Handle, follow: bool, tail: u32) -> Result<ChunkStream, RuntimeError>;

    /// The handle of instance `index` of a cluster kernel (`<id>/<index>` in logs and
    /// exec).
    fn member(&self, handle: &Handle, index: u32) -> Result<Handle, RuntimeError> {
        let _ = handle;
        Err(RuntimeError::NotFound(format!(
            "instance {index}: the kernel is not a cluster kernel (it has no instances)"
        )))
    }

    async fn signal(&self, handle: &Handle, signal: i32) -> Result<(), RuntimeError> {
        let _ = (handle, signal);
        Err(RuntimeError::Unsupported(self.name(), "signal"))
    }

    async fn suspend(&self, handle: &Handle) -> Result<(), RuntimeError> {
        let _ = handle;
        Err(RuntimeError::Unsupported(self.name(), "suspend"))
    }

    async fn resume(&self, handle: &Handle) -> Result<(), RuntimeError> {
        let _ = handle;
        Err(RuntimeError::Unsupported(self.name(), "resume"))
    }

    async fn exec(
        &self,
        rec: &Launch,
        handle: &Handle,
        req: Exec,
    ) -> Result<ExecOutput, RuntimeError> {
        let _ = (rec, handle, req);
        Err(RuntimeError::Unsupported(self.name(), "exec"))
    }

    /// Resizes the terminal of an exec started with `tty` (columns, rows).
    async fn resize_exec(&self, exec_id: &str, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        let _ = (exec_id, cols, rows);
        Err(RuntimeError::Unsupported(self.name(), "terminal resizing"))
    }

    /// CPU time and memory of a running kernel, cheaply (heartbeats ask for every kernel).
    fn usage(&self, handle: &Handle) -> Option<Usage> {
        let _ = handle;
        None
    }

    async fn upload(
        &self,
        rec: &Launch,
        path: &str,
        content: &[u8],
        cfg: &ClusterConfig,
    ) -> Result<u64, RuntimeError> {
        let _ = (rec, path, content, cfg);
        Err(RuntimeError::Unsupported(self.name(), "files"))
    }

    async fn download(&self, rec: &Launch, path: &str) -> Result<Vec<u8>, RuntimeError> {
        let _ = (rec, path);
        Err(RuntimeError::Unsupported(self.name(), "files"))
    }

    fn list_files(&self, rec: &Launch, path: &str) -> Result<Vec<FileEntry>, RuntimeError> {
        let _ = (rec, path);
        Err(RuntimeError::Unsupported(self.name(), "files"))
    }

    /// The images present where this runtime runs kernels (DRMAA2 job categories); reads
    /// only.
    async fn images(&self) -> Result<Vec<LocalImage>, RuntimeError> {
        Err(RuntimeError::Unsupported(self.name(), "listing images"))
    }

    /// Long-lived housekeeping of the runtime (image garbage collection), owned and stopped
    /// by the supervisor.
    fn background(
        self: Arc<Self>,
        ctx: Background,
    ) -> Option<futures::future::BoxFuture<'static, ()>> {
        let _ = ctx;
        None
    }
}

/// The runtimes of one agent, by name; the first is the default.
#[derive(Clone)]
pub struct Runtimes {
    by_name: BTreeMap<&'static str, Arc<dyn Runtime>>,
    default: &'static str,
}

impl Runtimes {
    pub fn new(default: Arc<dyn Runtime>) -> Self {
        let name = default.name();
        Self {
            by_name: BTreeMap::from([(name, default)]),
            default: name,
        }
    }

    pub fn with(mut self, runtime: Arc<dyn Runtime>) -> Self {
        self.by_name.insert(runtime.name(), runtime);
        self
    }

    /// The runtime named `name` (empty: the default), or an error listing the ones there are.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn Runtime>, SpecError> {
        let name = if name.is_empty() { self.default } else { name };
        self.by_name.get(name).ok_or_else(|| {
            SpecError::invalid(
                "runtime",
                format!(
                    "`{name}`: this agent has {}",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    pub fn default_name(&self) -> &'static str {
        self.default
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Runtime>> {
        self.by_name.values()
    }
}
