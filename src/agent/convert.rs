//! The gRPC edge: wire types (`deckhand.v1`) to the kernel supervisor's own types and back,
//! and each [`KernelError`] to its gRPC status. Nothing inside [`crate::kernel`] sees a
//! generated type.

use std::time::Duration;

use tonic::Status;

use crate::host;
use crate::kernel::control::{Action, Control, SyncOutcome};
use crate::kernel::events::KernelEvent;
use crate::kernel::record::Record;
use crate::kernel::slots::{Amounts, Summary};
use crate::kernel::{KernelError, KernelState, KernelView};
use crate::runtime::{FileEntry, PullProgress, RuntimeError, Usage};
use crate::spec::{ArrayRequest, CreateRequest, PortRequest, Span, SpanPeer, StageIn, Template};
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

impl From<pb::KernelSpec> for Template {
    fn from(s: pb::KernelSpec) -> Self {
        Self {
            kernel_id: s.kernel_id,
            name: s.name,
            slug: s.slug,
            labels: s.labels,
            image: s.image,
            command: s.command,
            env: s.env,
            secret_env: s.secret_env,
            working_dir: s.working_dir,
            hostname: s.hostname,
            user: s.user,
            stage_in: s
                .stage_in
                .into_iter()
                .map(|m| StageIn {
                    host_path: m.host_path,
                    container_path: m.container_path,
                    read_only: m.read_only,
                })
                .collect(),
            output_path: s.output_path,
            error_path: s.error_path,
            ports: s
                .ports
                .into_iter()
                .map(|p| PortRequest {
                    container_port: p.container_port,
                    protocol: p.protocol,
                    host_port: p.host_port,
                    host_ip: p.host_ip,
                })
                .collect(),
            network_mode: s.network_mode,
            privileged: s.privileged,
            restart_policy: s.restart_policy,
            restart_delay: s.restart_delay,
            ipc_mode: s.ipc_mode,
            uts_mode: s.uts_mode,
            pid_mode: s.pid_mode,
            auto_remove: s.auto_remove,
            gpus: s.gpus,
            shm_size: s.shm_size,
            ulimits: s.ulimits,
            cpus: s.cpus,
            memory: s.memory,
            pids_limit: s.pids_limit,
            submit_as_hold: s.submit_as_hold,
            stop_grace_period: s.stop_grace_period,
            cache_usage: s.cache_usage,
            process_id: s.process_id,
            memory_swap: s.memory_swap,
            tmpfs: s.tmpfs,
            storage_opt: s.storage_opt,
            input_path: s.input_path,
            runtime: s.runtime,
            parents: s.parents,
            profile: s.profile,
            constants: s.constants,
            resources: s.resources,
            results: s.results,
            results_path: s.results_path,
            instances: s.instances,
            span: s.span.map(|s| Span {
                first: s.first,
                count: s.count,
                owner: s.owner,
                network: s.network,
                peers: s
                    .peers
                    .into_iter()
                    .map(|p| SpanPeer {
                        agent_id: p.agent_id,
                        address: p.address,
                        first: p.first,
                        count: p.count,
                    })
                    .collect(),
            }),
        }
    }
}

impl From<Template> for pb::KernelSpec {
    fn from(s: Template) -> Self {
        Self {
            kernel_id: s.kernel_id,
            name: s.name,
            slug: s.slug,
            labels: s.labels,
            image: s.image,
            command: s.command,
            env: s.env,
            secret_env: s.secret_env,
            working_dir: s.working_dir,
            hostname: s.hostname,
            user: s.user,
            stage_in: s
                .stage_in
                .into_iter()
                .map(|m| pb::StageIn {
                    host_path: m.host_path,
                    container_path: m.container_path,
                    read_only: m.read_only,
                })
                .collect(),
            output_path: s.output_path,
            error_path: s.error_path,
            ports: s
                .ports
                .into_iter()
                .map(|p| pb::PortSpec {
                    container_port: p.container_port,
                    protocol: p.protocol,
                    host_port: p.host_port,
                    host_ip: p.host_ip,
                })
                .collect(),
            network_mode: s.network_mode,
            privileged: s.privileged,
            restart_policy: s.restart_policy,
            restart_delay: s.restart_delay,
            ipc_mode: s.ipc_mode,
            uts_mode: s.uts_mode,
            pid_mode: s.pid_mode,
            auto_remove: s.auto_remove,
            gpus: s.gpus,
            shm_size: s.shm_size,
            ulimits: s.ulimits,
            cpus: s.cpus,
            memory: s.memory,
            pids_limit: s.pids_limit,
            submit_as_hold: s.submit_as_hold,
            stop_grace_period: s.stop_grace_period,
            cache_usage: s.cache_usage,
            process_id: s.process_id,
            memory_swap: s.memory_swap,
            tmpfs: s.tmpfs,
            storage_opt: s.storage_opt,
            input_path: s.input_path,
            runtime: s.runtime,
            parents: s.parents,
            profile: s.profile,
            constants: s.constants,
            resources: s.resources,
            results: s.results,
            results_path: s.results_path,
            instances: s.instances,
            span: s.span.map(|s| pb::ClusterSpan {
                first: s.first,
                count: s.count,
                owner: s.owner,
                network: s.network,
                peers: s
                    .peers
                    .into_iter()
                    .map(|p| pb::SpanPeer {
                        agent_id: p.agent_id,
                        address: p.address,
                        first: p.first,
                        count: p.count,
                    })
                    .collect(),
            }),
        }
    }
}

/// A create request from the wire; a missing spec is refused naming the field.
pub fn create_request(req: pb::CreateKernelRequest) -> Result<CreateRequest, KernelError> {
    let Some(spec) = req.spec else {
        return Err(crate::spec::SpecError::invalid("spec", "missing").into());
    };
    Ok(CreateRequest {
        template: spec.into(),
        array: req.array.map(|a| ArrayRequest {
            begin: a.begin,
            end: a.end,
            step: a.step,
            max_parallel: a.max_parallel,
        }),
    })
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

impl From<host::HostStatus> for pb::HostStatus {
    fn from(h: host::HostStatus) -> Self {
        Self {
            hostname: h.hostname,
            os: h.os,
            kernel_version: h.kernel_version,
            arch: h.arch,
            cpu_count: h.cpu_count,
            cpu_usage_percent: h.cpu_usage_percent,
            load_avg_1: h.load_avg_1,
            load_avg_5: h.load_avg_5,
            load_avg_15: h.load_avg_15,
            memory_total_bytes: h.memory_total_bytes,
            memory_available_bytes: h.memory_available_bytes,
            scratch_root: h.scratch_root,
            scratch_total_bytes: h.scratch_total_bytes,
            scratch_free_bytes: h.scratch_free_bytes,
            uptime_seconds: h.uptime_seconds,
        }
    }
}

impl From<host::GpuDevice> for pb::GpuDevice {
    fn from(d: host::GpuDevice) -> Self {
        Self {
            index: d.index,
            uuid: d.uuid,
            name: d.name,
            memory_total_bytes: d.memory_total_bytes,
            memory_used_bytes: d.memory_used_bytes,
            gpu_utilization_percent: d.gpu_utilization_percent,
            memory_utilization_percent: d.memory_utilization_percent,
            temperature_celsius: d.temperature_celsius,
            power_draw_milliwatts: d.power_draw_milliwatts,
            power_limit_milliwatts: d.power_limit_milliwatts,
            pci_bus_id: d.pci_bus_id,
            compute_capability: d.compute_capability,
            numa_node: d.numa_node,
            mig_mode: d.mig_mode,
            fake: d.fake,
            error: d.error,
            unhealthy: d.unhealthy,
            health_reason: d.health_reason,
            unhealthy_since_ms: d.unhealthy_since_ms,
        }
    }
}

impl From<host::GpuInventory> for pb::GpuInventory {
    fn from(g: host::GpuInventory) -> Self {
        Self {
            devices: g.devices.into_iter().map(Into::into).collect(),
            driver_version: g.driver_version,
            cuda_version: g.cuda_version,
            nvml_version: g.nvml_version,
            nvml_status: g.nvml_status,
        }
    }
}
