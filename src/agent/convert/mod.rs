//! The gRPC edge: wire types (`deckhand.v1`) to the kernel supervisor's own types and back,
//! and each [`KernelError`] to its gRPC status. Nothing inside [`crate::kernel`] sees a
//! generated type. The kernel spec and create request go in `spec.rs`, the host's status and
//! GPU inventory in `host_status.rs`.

mod host_status;
mod spec;

pub use spec::create_request;

use std::time::Duration;

use tonic::Status;

use crate::kernel::control::{Action, Control, SyncOutcome};
use crate::kernel::events::KernelEvent;
use crate::kernel::record::Record;
use crate::kernel::slots::{Amounts, Summary};
use crate::kernel::{KernelError, KernelState, KernelView};
use crate::runtime::{FileEntry, PullProgress, RuntimeError, Usage};
use crate::wire::pb;

impl From<KernelError> for Status {
    fn from(e: KernelError) -> Self {
        let msg = e.to_string();
        match e {
            KernelError::Spec(s) if s.forbidden => Status::failed_precondition(msg),
            KernelError::Spec(_) => Status::invalid_argument(msg),
            KernelError::NotFound(_) => Status::not_found(msg),
            KernelError::Conflict(_) => Status::already_exists(msg),
            KernelError::WrongState(_) => Status::failed_precondition(msg),
            KernelError::Exhausted(_) => Status::resource_exhausted(msg),
            KernelError::Runtime(r) => r.into(),
            KernelError::Internal(_) => Status::internal(msg),
        }
    }
}

impl From<RuntimeError> for Status {
    fn from(e: RuntimeError) -> Self {
        let msg = e.to_string();
        match e {
            RuntimeError::Unsupported(..) | RuntimeError::Precondition(_) => {
                Status::failed_precondition(msg)
            }
            RuntimeError::Unavailable(_) => Status::unavailable(msg),
            RuntimeError::NotFound(_) => Status::not_found(msg),
            RuntimeError::Invalid(_) => Status::invalid_argument(msg),
            RuntimeError::Exhausted(_) => Status::resource_exhausted(msg),
            RuntimeError::Failed(_) => Status::internal(msg),
        }
    }
}

pub fn control(req: pb::ControlKernelRequest) -> Control {
    use pb::KernelAction as A;
    let action = match A::try_from(req.action).unwrap_or(A::Unspecified) {
        A::Unspecified => None,
        A::Stop => Some(Action::Stop),
        A::Remove => Some(Action::Remove),
        A::Signal => Some(Action::Signal),
        A::Suspend => Some(Action::Suspend),
        A::Resume => Some(Action::Resume),
        A::Release => Some(Action::Release),
    };
    Control {
        kernel_id: req.kernel_id,
        action,
        signal: req.signal,
        grace: (req.grace_ms > 0).then(|| Duration::from_millis(req.grace_ms)),
        force: req.force,
    }
}

pub fn state(s: KernelState) -> pb::KernelState {
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
        KernelState::Uploading => P::Uploading,
        KernelState::Done => P::Done,
        KernelState::Failed => P::Failed,
        KernelState::Cancelled => P::Cancelled,
    }
}

fn usage(kernel_id: &str, u: Usage) -> pb::KernelUsage {
    pb::KernelUsage {
        kernel_id: kernel_id.to_string(),
        cpu_usage_ns: u.cpu_ns,
        memory_bytes: u.memory_bytes,
    }
}

/// Per-kernel usage for heartbeats.
pub fn usages(list: Vec<(String, Usage)>) -> Vec<pb::KernelUsage> {
    list.into_iter().map(|(id, u)| usage(&id, u)).collect()
}

/// A kernel as the wire shows it, on agent `agent_id`.
pub fn kernel_info(view: KernelView, agent_id: &str) -> pb::KernelInfo {
    let rec: Record = view.record;
    let slots = rec
        .granted
        .clone()
        .or_else(|| rec.slots.clone())
        .unwrap_or_default();
    pb::KernelInfo {
        kernel_id: rec.id.clone(),
        name: rec.name.clone(),
        agent_id: agent_id.to_string(),
        state: state(rec.state) as i32,
        drmaa2_state: rec.state.drmaa2().as_str().into(),
        image: rec.spec.image.clone(),
        container_id: rec.instance().to_string(),
        exit_code: rec.exit_code,
        signal: rec.signal.clone(),
        oom_killed: rec.oom_killed,
        reason: rec.reason.clone(),
        created_at_ms: rec.created_at_ms,
        started_at_ms: rec.started_at_ms,
        finished_at_ms: rec.finished_at_ms,
        slots: Some(pb::SlotAmounts {
            cpu: slots.cpu,
            memory_bytes: slots.memory,
            gpus: slots.gpus.len() as u32,
        }),
        gpus: slots.gpus,
        ports: rec
            .published_ports()
            .map(|p| pb::PortBinding {
                container_port: p.container.into(),
                host_port: p.host.into(),
                protocol: p.protocol.clone(),
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        array_id: rec.array_id.clone().unwrap_or_default(),
        task_index: rec.task_index,
        usage: view.usage.map(|u| usage(&rec.id, u)),
        runtime: rec.runtime.clone(),
        runtime_info: view.runtime_info,
        restart_count: rec.restart_count,
        scratch_dir: rec.scratch_dir.clone(),
        progress: rec.progress,
        qarnot_state: rec.state.qarnot(rec.stop_requested).into(),
        ssh_port: rec.ssh_port().map_or(0, u32::from),
        spec: Some(rec.launch.shown_spec.into()),
    }
}

pub fn kernel_infos(views: Vec<KernelView>, agent_id: &str) -> Vec<pb::KernelInfo> {
    views
        .into_iter()
        .map(|v| kernel_info(v, agent_id))
        .collect()
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

pub fn event(ev: KernelEvent) -> pb::KernelEvent {
    pb::KernelEvent {
        seq: ev.seq,
        kernel_id: ev.kernel_id,
        state: state(ev.state) as i32,
        reason: ev.reason,
        at_ms: ev.at_ms,
        exit_code: ev.exit_code,
        agent_id: ev.agent_id,
        pull: ev.pull.map(pull_progress),
        progress: ev.progress,
        part: ev.part,
    }
}

fn pull_progress(p: PullProgress) -> pb::PullProgress {
    pb::PullProgress {
        image: p.image,
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        layers_done: p.layers_done,
        layers_total: p.layers_total,
        eta_ms: p.eta_ms,
    }
}

pub fn file_entry(e: FileEntry) -> pb::FileEntry {
    pb::FileEntry {
        path: e.path,
        size: e.size,
        dir: e.dir,
        modified_ms: e.modified_ms,
    }
}

pub fn sync_outcome(o: SyncOutcome, agent_id: &str) -> pb::SyncKernelsResponse {
    pb::SyncKernelsResponse {
        unknown: kernel_infos(o.unknown, agent_id),
        lost: o
            .lost
            .into_iter()
            .map(|(kernel_id, reason)| pb::LostKernel { kernel_id, reason })
            .collect(),
        destroyed: o.destroyed,
    }
}

/// Per-kernel progress for heartbeats.
pub fn progresses(list: Vec<(String, f64)>) -> Vec<pb::KernelProgress> {
    list.into_iter()
        .map(|(kernel_id, progress)| pb::KernelProgress {
            kernel_id,
            progress,
        })
        .collect()
}

pub fn runtime_infos(list: Vec<crate::kernel::supervisor::RuntimeLoad>) -> Vec<pb::RuntimeInfo> {
    list.into_iter()
        .map(|r| pb::RuntimeInfo {
            name: r.name.to_string(),
            capacity: r.capacity,
            in_use: r.in_use,
            swarm: r.span.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
            swarm_manager: r.span.is_some_and(|s| s.owner),
        })
        .collect()
}

pub fn amounts(a: Amounts) -> pb::SlotAmounts {
    pb::SlotAmounts {
        cpu: a.cpu,
        memory_bytes: a.memory,
        gpus: a.gpus,
    }
}

pub fn slots(s: Summary) -> pb::ResourceSlots {
    pb::ResourceSlots {
        total: Some(amounts(s.total)),
        reserved: Some(amounts(s.reserved)),
        allocated: Some(amounts(s.allocated)),
        free: Some(amounts(s.free)),
    }
}
