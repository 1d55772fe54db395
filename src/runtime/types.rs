//! The vocabulary of the runtime seam: handles, statuses, events, output, errors.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::spec::{Spec, Template};

/// Largest file `download` returns in one message (below gRPC's 4 MiB default).
pub const MAX_DOWNLOAD: u64 = 3 << 20;

/// Largest file `upload` takes in one message (the wire's limit is set from it).
pub use crate::util::MAX_UPLOAD;

/// How a runtime finds a kernel's instance again, kept in the kernel's record. Opaque to
/// the supervisor except for `instance`, the runtime's own id shown in `inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handle {
    /// The runtime that made it (`docker`).
    pub runtime: String,
    /// The layout of `data`, so a runtime can read handles written by older versions.
    pub version: u32,
    /// A container id, an instance id.
    pub instance: String,
    /// Whatever else the runtime needs; only the runtime reads it.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// What an instance is doing now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub exists: bool,
    pub running: bool,
    pub paused: bool,
    /// Ended, and its restart policy starts it again.
    pub restarting: bool,
    /// The last exit code; `None` when the runtime cannot know it.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// The runtime's own words about a failure.
    pub error: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub restart_count: u32,
}

/// Something that happened to one of this agent's instances.
#[derive(Debug, Clone)]
pub struct RuntimeEvent {
    pub kernel_id: String,
    /// The instance it happened to (events of an older instance of the kernel are ignored).
    pub instance: String,
    pub what: Observed,
}

#[derive(Debug, Clone)]
pub enum Observed {
    /// The instance changed (ended, started, restarting, paused, resumed): here it is now.
    Changed(Status),
    /// Its process ended and the instance went with it (auto-remove).
    ExitedAndGone { exit_code: Option<i64> },
    /// The instance was removed; why, in the runtime's words.
    Gone { reason: String },
    /// The kernel ran out of memory; its end follows.
    OomKilled,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<RuntimeEvent, RuntimeError>> + Send>>;

/// One output chunk of logs or exec.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub data: bytes::Bytes,
    pub stderr: bool,
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, RuntimeError>> + Send>>;

/// How an image pull is going.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    pub image: String,
    pub bytes_done: u64,
    /// Sum of the sizes of the layers known so far.
    pub bytes_total: u64,
    pub layers_done: u32,
    pub layers_total: u32,
    /// Estimated time left; 0 when unknown or done.
    pub eta_ms: u64,
}

/// What `prepare` tells the supervisor while it works.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A pull started (the kernel reads PULLING).
    Pulling,
    Pull(PullProgress),
    /// Something worth a line in the kernel's events (a fallback taken).
    Note(String),
    /// Nothing new: only asks whether the kernel still wants the work (while waiting).
    StillWanted,
    /// An instance exists (ordered, still coming up): the kernel reads CREATING and keeps
    /// this handle, so it can be found and destroyed if the agent stops meanwhile.
    Created(Handle),
}

/// Takes what a runtime reports while it prepares or creates; answers whether the kernel
/// still wants it (false once the kernel was stopped or removed: stop and clean up).
pub type Reporter = dyn Fn(Progress) -> bool + Send + Sync;

/// A started instance, and the work that follows it while it runs (the supervisor owns it).
pub struct Started {
    pub started_at_ms: i64,
    pub follow: Vec<BoxFuture<'static, ()>>,
}

/// A command to run in a kernel.
#[derive(Debug, Clone, Default)]
pub struct Exec {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: String,
    /// A pseudo-terminal (an interactive session): output comes as one stream.
    pub tty: bool,
    /// The command's standard input is written through [`ExecOutput::input`].
    pub stdin: bool,
}

pub struct ExecOutput {
    pub output: ChunkStream,
    /// Resolves after the output ended: the command's exit code, if known.
    pub exit_code: BoxFuture<'static, Option<i64>>,
    /// The command's standard input, when asked for (shutting it down closes it).
    pub input: Option<Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    /// The runtime's id of this exec (for resizing its terminal).
    pub id: String,
}

/// CPU time and memory of a running kernel (the type the agent's metrics count).
pub use crate::telemetry::counters::Usage;

/// A file in a kernel's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub dir: bool,
    pub modified_ms: i64,
}

/// An image present where a runtime runs kernels (DRMAA2 job categories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// `repo:tag`; empty for an untagged image.
    pub reference: String,
    pub id: String,
    pub size_bytes: u64,
    pub created_at_ms: i64,
}

/// An instance a runtime holds for this namespace and agent.
#[derive(Debug, Clone)]
pub struct Owned {
    pub kernel_id: String,
    pub handle: Handle,
}

/// What a runtime's housekeeping may look at.
pub struct Background {
    /// Images of the kernels the agent holds now (never collected).
    pub images_in_use: Arc<dyn Fn() -> BTreeSet<String> + Send + Sync>,
    /// The instances (handle `instance` ids) of this runtime's live kernels; `None` until
    /// start-up recovery of this runtime is done (an instance may then belong to a record
    /// not reconciled yet). An instance of ours outside it, and not being created now, is a
    /// leak.
    pub live_instances: Arc<dyn Fn() -> Option<BTreeSet<String>> + Send + Sync>,
    pub config: watch::Receiver<Arc<ClusterConfig>>,
    pub stop: CancellationToken,
}

/// A failed runtime operation; each kind maps to one gRPC status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// FAILED_PRECONDITION: the runtime cannot do this at all.
    #[error("{1} is not supported by the {0} runtime")]
    Unsupported(&'static str, &'static str),
    /// UNAVAILABLE: the backend does not answer; nothing changed.
    #[error("{0}")]
    Unavailable(String),
    /// NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// INVALID_ARGUMENT: the message names what is wrong.
    #[error("{0}")]
    Invalid(String),
    /// RESOURCE_EXHAUSTED.
    #[error("{0}")]
    Exhausted(String),
    /// FAILED_PRECONDITION: a setting is missing or refuses it (the message names it).
    #[error("{0}")]
    Precondition(String),
    /// The backend failed; the message is its own words.
    #[error("{0}")]
    Failed(String),
}

/// What a runtime is told of a kernel: who it is, its validated spec and what it holds.
/// The kernel layer keeps it inside its record (`crate::kernel::record::Record`, with the
/// state and everything else only the kernel layer decides); a runtime never sees more.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub array_id: Option<String>,
    pub task_index: u32,
    /// The spec as given, secret values replaced by `***` (what inspect shows).
    pub shown_spec: Template,
    pub spec: Spec,
    /// The runtime that runs the kernel; empty in records of earlier versions (Docker).
    #[serde(default)]
    pub runtime: String,
    /// Whether the GPUs are NVML devices (device request) or fake ones (env only).
    pub real_gpus: bool,
    /// Where the kernel runs, once its runtime created it.
    #[serde(default)]
    pub handle: Option<Handle>,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Held while the kernel is live; `None` once it ended (or before it was placed).
    pub slots: Option<Slots>,
    /// Held until the kernel is removed.
    pub ports: Vec<HostPort>,
    /// The kernel's home on this host, where its runtime has one.
    #[serde(default)]
    pub scratch_dir: String,
}

/// The protocol of the host port an ssh profile kernel is reached on (served by the agent,
/// never published by the runtime).
pub const SSH_PROTOCOL: &str = "ssh";

impl Launch {
    /// The runtime's id of the kernel's instance (a container id), empty before it exists.
    pub fn instance(&self) -> &str {
        self.handle.as_ref().map_or("", |h| h.instance.as_str())
    }

    /// The host port of the kernel's SSH access (held in `ports` like its other host
    /// ports, under the protocol [`SSH_PROTOCOL`]).
    pub fn ssh_port(&self) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == SSH_PROTOCOL)
            .map(|p| p.host)
    }

    /// The host ports the runtime publishes (all but the agent's own SSH port).
    pub fn published_ports(&self) -> impl Iterator<Item = &HostPort> {
        self.ports.iter().filter(|p| p.protocol != SSH_PROTOCOL)
    }
}

/// Slots a live kernel holds; given back exactly once, when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Slots {
    pub cpu: f64,
    pub memory: u64,
    /// GPU UUIDs.
    pub gpus: Vec<String>,
}

/// A host port a kernel holds until it is removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub container: u16,
    pub host: u16,
    pub protocol: String,
    /// The host address bound; empty: every address.
    #[serde(default)]
    pub host_ip: String,
}

/// What an instance of ours that has no record says of itself (its record was lost in a
/// crash between create and record). The kernel layer decides which state that is
/// (`crate::kernel::record::Record::adopted`).
#[derive(Debug, Clone)]
pub struct Adopted {
    /// Who the kernel is and what it holds, as far as the instance tells.
    pub launch: Launch,
    /// What the instance is doing.
    pub activity: Activity,
    /// How many times the engine itself restarted it.
    pub restart_count: u32,
}

/// What an adopted instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Created, never started.
    Created,
    Running,
    Paused,
    /// The engine is restarting it (its restart policy).
    Restarting,
    /// It ran and stopped.
    Stopped,
}
