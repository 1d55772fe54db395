//! What the agent knows about one kernel: the [`Record`] kept in memory and persisted under
//! the scratch root on every lifecycle change, and its wire form ([`pb::KernelInfo`]).

use serde::{Deserialize, Serialize};

use super::spec::Spec;
use super::state::KernelState;
use crate::rpc::pb;

/// Slots a live kernel holds; given back exactly once, when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Slots {
    pub cpu: f64,
    pub memory: u64,
    /// GPU UUIDs.
    pub gpus: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub container: u16,
    pub host: u16,
    pub protocol: String,
    /// The host address bound; empty: every address.
    #[serde(default)]
    pub host_ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub array_id: Option<String>,
    pub task_index: u32,
    /// On array tasks: the array's range (its parallelism cap survives a restart).
    #[serde(default)]
    pub array_range: Option<crate::kernel::spec::ArrayRange>,
    /// The spec as given, secret values replaced by `***` (what inspect shows).
    pub shown_spec: pb::KernelSpec,
    /// Tells an identical repeated create from a conflicting one.
    pub fingerprint: u64,
    pub spec: Spec,
    /// Whether the GPUs are NVML devices (device request) or fake ones (env only).
    pub real_gpus: bool,
    pub state: KernelState,
    pub container_id: String,
    pub exit_code: Option<i32>,
    pub signal: String,
    pub oom_killed: bool,
    pub reason: String,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Held while the kernel is live; `None` once it ended (or before it was placed).
    pub slots: Option<Slots>,
    /// What the kernel was given, kept after it ends (DRMAA2 JobInfo `slots`); records of
    /// earlier versions have none and show `slots` instead.
    #[serde(default)]
    pub granted: Option<Slots>,
    /// How many times Docker's restart policy restarted the container.
    #[serde(default)]
    pub restart_count: u32,
    /// Held until the kernel is removed.
    pub ports: Vec<HostPort>,
    pub scratch_dir: String,
    /// Where the kernel's process data lives, decided when its container was made.
    #[serde(default)]
    pub process_data: Option<ProcessData>,
}

/// Process data shared by the kernels of one `process_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessData {
    /// A named Docker volume (`docker/shared_process_volume = true`).
    Volume(String),
    /// A host directory under the scratch root.
    Dir(String),
}

pub const MASK: &str = "***";

/// The spec with every secret value replaced by `***`.
pub fn masked(spec: &pb::KernelSpec) -> pb::KernelSpec {
    let mut s = spec.clone();
    for v in s.secret_env.values_mut() {
        *v = MASK.into();
    }
    s
}

pub fn state_pb(s: KernelState) -> pb::KernelState {
    use pb::KernelState as P;
    match s {
        KernelState::Preparing => P::Preparing,
        KernelState::Pulling => P::Pulling,
        KernelState::Creating => P::Creating,
        KernelState::Held => P::Held,
        KernelState::Running => P::Running,
        KernelState::Suspended => P::Suspended,
        KernelState::Restarting => P::Restarting,
        KernelState::Terminating => P::Terminating,
        KernelState::Done => P::Done,
        KernelState::Failed => P::Failed,
        KernelState::Cancelled => P::Cancelled,
    }
}

impl Record {
    pub fn info(&self, agent_id: &str, usage: Option<pb::KernelUsage>) -> pb::KernelInfo {
        let slots = self
            .granted
            .clone()
            .or_else(|| self.slots.clone())
            .unwrap_or_default();
        pb::KernelInfo {
            kernel_id: self.id.clone(),
            name: self.name.clone(),
            agent_id: agent_id.to_string(),
            state: state_pb(self.state) as i32,
            drmaa2_state: self.state.drmaa2().as_str().into(),
            image: self.spec.image.clone(),
            container_id: self.container_id.clone(),
            exit_code: self.exit_code,
            signal: self.signal.clone(),
            oom_killed: self.oom_killed,
            reason: self.reason.clone(),
            created_at_ms: self.created_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            slots: Some(pb::SlotAmounts {
                cpu: slots.cpu,
                memory_bytes: slots.memory,
                gpus: slots.gpus.len() as u32,
            }),
            gpus: slots.gpus,
            ports: self
                .ports
                .iter()
                .map(|p| pb::PortBinding {
                    container_port: p.container.into(),
                    host_port: p.host.into(),
                    protocol: p.protocol.clone(),
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
            array_id: self.array_id.clone().unwrap_or_default(),
            task_index: self.task_index,
            usage,
            spec: Some(self.shown_spec.clone()),
            scratch_dir: self.scratch_dir.clone(),
            restart_count: self.restart_count,
        }
    }
}

/// Listing order: oldest first, array tasks by index.
pub fn sort_kernels(list: &mut [pb::KernelInfo]) {
    list.sort_by(|a, b| {
        (a.created_at_ms, &a.array_id, a.task_index, &a.kernel_id).cmp(&(
            b.created_at_ms,
            &b.array_id,
            b.task_index,
            &b.kernel_id,
        ))
    });
}
