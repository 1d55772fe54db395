//! What a caller asks for, before validation: the DRMAA2 job template with the Docker
//! extensions, field for field as on the wire (`deckhand.v1.KernelSpec`), so the gRPC edge
//! converts without loss and records written by earlier versions (which stored the wire
//! form as JSON) read back unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The kernel spec as given (secret values included until [`Template::masked`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Template {
    pub kernel_id: String,
    pub name: String,
    pub slug: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub secret_env: BTreeMap<String, String>,
    pub working_dir: String,
    pub hostname: String,
    pub user: String,
    pub stage_in: Vec<StageIn>,
    pub output_path: String,
    pub error_path: String,
    pub ports: Vec<PortRequest>,
    pub network_mode: String,
    pub privileged: bool,
    pub restart_policy: String,
    pub ipc_mode: String,
    pub uts_mode: String,
    pub pid_mode: String,
    pub auto_remove: bool,
    pub gpus: String,
    pub shm_size: String,
    pub ulimits: String,
    pub cpus: f64,
    pub memory: String,
    pub pids_limit: i64,
    pub submit_as_hold: bool,
    pub stop_grace_period: String,
    pub cache_usage: String,
    pub process_id: String,
    pub memory_swap: String,
    pub tmpfs: Vec<String>,
    pub storage_opt: BTreeMap<String, String>,
    pub input_path: String,
    /// `docker`, `vastai`; empty: the agent's `agent/default_runtime`.
    pub runtime: String,
    /// Parent task id → slug (a Vast.ai instance gets them as `TASK_PARENTS`).
    pub parents: BTreeMap<String, String>,
    /// A Qarnot task profile (`docker-batch`, …, or one from `config/profiles/`); empty: none.
    pub profile: String,
    /// The profile's constants (Qarnot's names); see [`super::constants`].
    pub constants: BTreeMap<String, String>,
    /// Where a profile kernel's resources come from: `s3://bucket/prefix` or a host dir.
    pub resources: String,
    /// Where a profile kernel's results go after it ends: `s3://bucket/prefix`.
    pub results: String,
    /// The container dir whose content is uploaded as results; empty: `RESOURCES_PATH`.
    pub results_path: String,
    /// A cluster profile kernel's instances (master and workers); 0: not a cluster.
    pub instances: u32,
    /// Set by the manager for a cluster kernel spanning agents (see [`Span`]).
    pub span: Option<Span>,
    /// With `on-failure[:N]`: the wait before the agent starts a failed kernel again.
    pub restart_delay: String,
}

/// Where the instances of a cluster kernel spanning agents run: the owner (the agent the
/// kernel was placed on) holds instances `0…count-1` and lists its `peers`; each peer holds
/// a part, `first…first+count-1`, of the owner's kernel on the owner's overlay network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Span {
    pub first: u32,
    pub count: u32,
    /// On a peer's part: the owner's agent id; empty on the owner.
    pub owner: String,
    /// On a peer's part: the overlay network the owner made.
    pub network: String,
    /// On the owner: the other agents' parts.
    pub peers: Vec<SpanPeer>,
}

/// One peer of a spanning cluster kernel and the instances it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpanPeer {
    pub agent_id: String,
    /// Its gRPC address, as it registered it.
    pub address: String,
    pub first: u32,
    pub count: u32,
}

impl Span {
    /// Whether this is a peer's part of another agent's kernel.
    pub fn is_part(&self) -> bool {
        !self.owner.is_empty()
    }
}

/// A host path bind-mounted into the kernel (DRMAA2 `stageInFiles`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageIn {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

/// An exposed port as asked: container port, protocol, optional host port and address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortRequest {
    pub container_port: u32,
    pub protocol: String,
    pub host_port: u32,
    pub host_ip: String,
}

/// A DRMAA2 bulk job as asked: tasks begin, begin+step, … ≤ end, at most `max_parallel`
/// running (0 = no cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayRequest {
    pub begin: u32,
    pub end: u32,
    pub step: i32,
    pub max_parallel: u32,
}

/// A create request: one kernel, or a job array of tasks from one template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub template: Template,
    pub array: Option<ArrayRequest>,
}

pub use crate::config::constants::MASK;

impl Template {
    /// The template with every secret value replaced (what anyone reading it back sees):
    /// `secret_env` values and the registry password as `***`, Qarnot's write-only
    /// `QARNOT_SECRET__*` constants as `[SECRET]`.
    pub fn masked(&self) -> Self {
        let mut t = self.clone();
        for v in t.secret_env.values_mut() {
            *v = MASK.into();
        }
        // A secret's value written out in another constant reads masked there too.
        let secrets: Vec<String> = t
            .constants
            .iter()
            .filter(|(k, v)| super::constants::mask_for(k).is_some() && v.len() >= 4)
            .map(|(_, v)| v.clone())
            .collect();
        for (k, v) in t.constants.iter_mut() {
            if let Some(mask) = super::constants::mask_for(k) {
                *v = mask.into();
            } else {
                for secret in &secrets {
                    if v.contains(secret.as_str()) {
                        *v = v.replace(secret.as_str(), super::constants::SECRET_MASK);
                    }
                }
            }
        }
        t
    }
}
