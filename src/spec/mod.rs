//! Kernel spec validation: a [`Template`] (what the caller asked for) becomes a [`Spec`] the
//! supervisor can run, or a [`SpecError`] naming the field and the problem. Nothing is
//! created before a spec passes. The checks of the fields, in the order problems are
//! reported, are in [`validate()`] (`validate.rs`); exposed ports are in [`ports`], sizes in
//! [`sizes`]; a task profile and its constants are resolved first ([`profile`],
//! [`constants`]). The runtime a kernel runs on adds its rules of single fields ([`rules`]:
//! Docker's socket, network modes and minimum memory) at the field's place among these
//! checks; this file holds the spec types and [`prepare`] (profile, fields, cluster rules).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::cluster::CacheUsage;
use crate::config::ClusterConfig;

pub mod constants;
mod ids;
mod image;
mod options;
mod paths;
pub mod ports;
pub mod profile;
pub mod rules;
pub mod sizes;
pub mod template;
mod validate;

pub use ids::{validate_array, validate_kernel_id, ArrayRange};
pub use image::image_reference;
pub(crate) use paths::container_path;

pub use ports::Port;
pub use rules::{FieldRules, NoFieldRules};
pub use sizes::Tmpfs;
pub use template::{
    ArrayRequest, CreateRequest, PortRequest, Span, SpanPeer, StageIn, Template, MASK,
};
pub use validate::{validate, validate_for};

/// Where kernels find their home and config.
pub const WORK_DIR: &str = "/home/work";
pub const CONFIG_DIR: &str = "/home/config";

/// Largest total size of env (names + values) and of the command.
pub const MAX_ENV_BYTES: usize = 128 * 1024;
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;
/// Most tasks one job array may have.
pub const MAX_ARRAY_TASKS: u32 = 10_000;

/// A refused spec: which field, what is wrong, and whether it is malformed
/// (INVALID_ARGUMENT) or forbidden by the cluster config (FAILED_PRECONDITION).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
    pub forbidden: bool,
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            forbidden: false,
        }
    }

    pub fn forbidden(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            forbidden: true,
        }
    }
}

/// GPUs a kernel asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GpuRequest {
    #[default]
    None,
    All,
    Count(u32),
    /// Normalised `GPU-<uuid>` ids.
    Ids(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

/// The instances of a cluster kernel (the `docker-cluster*` profiles): instance 0 is the
/// master and runs the kernel's command, the others are workers and run `worker_command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// How many instances (2 or more), master included.
    pub instances: u32,
    /// `DOCKER_CMD_WORKER`; empty: the image's own command.
    pub worker_command: Vec<String>,
    /// Whether the instances reach outside their private network (`docker-cluster-network`).
    pub outside: bool,
    /// Set when the cluster spans agents: which instances run here.
    #[serde(default)]
    pub span: Option<Span>,
}

impl Cluster {
    /// The instances held on this agent: the first one's index and how many.
    pub fn local(&self) -> (u32, u32) {
        self.span
            .as_ref()
            .map_or((0, self.instances), |s| (s.first, s.count))
    }

    /// Whether this agent holds only a part (workers) of another agent's cluster kernel.
    pub fn is_part(&self) -> bool {
        self.span.as_ref().is_some_and(Span::is_part)
    }
}

/// A validated kernel spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub image: String,
    pub command: Vec<String>,
    /// Every variable the kernel gets, secret ones included (see `secret_names`).
    pub env: BTreeMap<String, String>,
    /// The variables of `env` whose values are never shown (secret env, Qarnot secrets);
    /// empty in records of earlier versions, whose shown spec's `secret_env` names them.
    #[serde(default)]
    pub secret_names: std::collections::BTreeSet<String>,
    pub working_dir: String,
    pub hostname: String,
    pub user: String,
    pub stage_in: Vec<BindMount>,
    /// Relative to the kernel's work dir, or absolute inside an allowed stage-in dir.
    pub output_path: String,
    pub error_path: String,
    pub ports: Vec<Port>,
    /// Empty: the cluster's `docker/network`, else Docker's bridge.
    pub network_mode: String,
    pub privileged: bool,
    pub restart_policy: String,
    pub restart_retries: i64,
    /// With `on-failure`: the agent (not Docker) restarts a failed run after this long;
    /// zero leaves restarts to Docker's policy.
    #[serde(default)]
    pub restart_delay: Duration,
    pub ipc_mode: String,
    pub uts_mode: String,
    pub pid_mode: String,
    pub auto_remove: bool,
    pub gpus: GpuRequest,
    pub shm_size: Option<u64>,
    pub ulimits: Vec<Ulimit>,
    pub cpus: f64,
    pub memory: Option<u64>,
    /// Docker's memory+swap; `None`: no swap beyond `memory`; -1: unlimited.
    #[serde(default)]
    pub memory_swap: Option<i64>,
    #[serde(default)]
    pub tmpfs: Vec<Tmpfs>,
    /// Storage driver options, sizes in bytes.
    #[serde(default)]
    pub storage_opt: BTreeMap<String, String>,
    /// Fed to the command's stdin: relative to the work dir, or an absolute host path.
    #[serde(default)]
    pub input_path: String,
    /// Parent task id → slug (TASK_PARENTS of a Vast.ai instance).
    #[serde(default)]
    pub parents: BTreeMap<String, String>,
    pub pids_limit: Option<i64>,
    pub hold: bool,
    pub stop_grace_period: Duration,
    /// The kernel's own image policy; `None` follows `docker/cache_usage`.
    #[serde(default)]
    pub cache_usage: Option<CacheUsage>,
    /// Kernels with one process id share process data; empty = none.
    #[serde(default)]
    pub process_id: String,
    /// What a task profile adds (progress, shutdown command, resources, results, SSH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<profile::ProfileRun>,
    /// A cluster kernel's instances; `None` for a kernel of one instance.
    #[serde(default)]
    pub cluster: Option<Cluster>,
}

impl Spec {
    /// Whether the kernel waits HELD once created: asked so (`--hold`), or a part of a
    /// cluster spanning agents, which is started by whoever placed it (the manager releases
    /// the owner, the owner its parts).
    pub fn held_at_creation(&self) -> bool {
        self.hold || self.cluster.as_ref().is_some_and(|c| c.span.is_some())
    }

    /// How many instances the kernel has (1 unless it is a cluster).
    pub fn instances(&self) -> u32 {
        self.cluster.as_ref().map_or(1, |c| c.local().1)
    }
}

impl Spec {
    /// Whether the agent itself restarts failed runs (`on-failure` with a delay), instead
    /// of Docker's restart policy.
    pub fn agent_restarts(&self) -> bool {
        self.restart_policy == "on-failure" && !self.restart_delay.is_zero()
    }

    /// `always`, `on-failure:2`: the restart policy as the user wrote it.
    pub fn restart_policy_shown(&self) -> String {
        if self.restart_retries > 0 {
            format!("{}:{}", self.restart_policy, self.restart_retries)
        } else {
            self.restart_policy.clone()
        }
    }
}

/// Resolves the template's profile (if any) and validates the result: what a request
/// becomes before anything is created, with no runtime's field rules (see [`prepare_for`]).
pub fn prepare(t: &Template, cfg: &ClusterConfig) -> Result<Spec, SpecError> {
    prepare_for(t, cfg, &NoFieldRules)
}

/// [`prepare`] for a runtime whose `rules` apply to single fields.
pub fn prepare_for(
    t: &Template,
    cfg: &ClusterConfig,
    rules: &dyn FieldRules,
) -> Result<Spec, SpecError> {
    let (effective, run) = profile::resolve(t, cfg, rules)?;
    let mut spec = validate_for(&effective, &cfg.kernel, rules)?;
    spec.cluster = run.as_ref().and_then(|r| r.cluster.clone());
    if spec.cluster.is_some() {
        cluster_rules(&spec)?;
    }
    spec.profile = run;
    Ok(spec)
}

/// What a cluster kernel cannot have: its instances end with the master (no restart
/// policy, no auto-removal), and its GPUs are a count per instance.
fn cluster_rules(spec: &Spec) -> Result<(), SpecError> {
    if !spec.restart_policy.is_empty() && spec.restart_policy != "no" {
        return Err(SpecError::invalid(
            "restart_policy",
            "a cluster kernel ends when its master ends; restart policies are for single kernels",
        ));
    }
    if spec.auto_remove {
        return Err(SpecError::invalid(
            "auto_remove",
            "a cluster kernel's instances are removed with the kernel (`rm`)",
        ));
    }
    if matches!(spec.gpus, GpuRequest::All | GpuRequest::Ids(_)) {
        return Err(SpecError::invalid(
            "gpus",
            "a cluster kernel asks for a count of GPUs per instance (`--gpus 1`)",
        ));
    }
    if !spec.network_mode.is_empty() {
        return Err(SpecError::invalid(
            "network_mode",
            "a cluster kernel's instances share the private network made for it",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
