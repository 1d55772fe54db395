//! The kernel spec and the create request, wire to [`Template`] and back.

use crate::kernel::KernelError;
use crate::spec::{ArrayRequest, CreateRequest, PortRequest, Span, SpanPeer, StageIn, Template};
use crate::wire::pb;

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
