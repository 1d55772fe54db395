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

/// What secret values read as.
pub const MASK: &str = "***";

impl Template {
    /// The template with every secret value replaced by `***` (what anyone reading it back
    /// sees).
    pub fn masked(&self) -> Self {
        let mut t = self.clone();
        for v in t.secret_env.values_mut() {
            *v = MASK.into();
        }
        t
    }
}
