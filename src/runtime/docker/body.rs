//! The Docker container for a kernel: a [`Record`] (validated spec plus the slots, GPUs and
//! ports it was given) turned into a create body, with the labels that find it again.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, PortBinding, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};

use super::client::{LABEL_AGENT, LABEL_KERNEL, LABEL_NAMESPACE};
use super::local::ProcessData;
use crate::config::cluster::DockerSettings;
use crate::runtime::Launch;
use crate::spec::{CONFIG_DIR, WORK_DIR};

pub const LABEL_ARRAY: &str = "io.deckhand.array-id";
pub const LABEL_SCRATCH: &str = "io.deckhand.scratch-dir";
/// Where the kernel's process data is (`volume:NAME`, `dir:/PATH`), for recovery.
pub const LABEL_PROCESS_DATA: &str = "io.deckhand.process-data";

/// Every device under `/dev/infiniband`, passed through as it is.
fn rdma_devices() -> Vec<DeviceMapping> {
    std::fs::read_dir(crate::spec::profile::RDMA_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| {
            let path = d.path().display().to_string();
            DeviceMapping {
                path_on_host: Some(path.clone()),
                path_in_container: Some(path),
                cgroup_permissions: Some("rwm".into()),
            }
        })
        .collect()
}

/// The engine-wide container name: unique per namespace and kernel id.
pub fn container_name(namespace: &str, kernel_id: &str) -> String {
    format!("deckhand-{namespace}-{kernel_id}")
}

/// The create body; `docker` is the cluster's Docker settings at creation time (volumes,
/// network, DNS, process data mount point).
pub fn body(
    rec: &Launch,
    process_data: Option<&ProcessData>,
    namespace: &str,
    agent_id: &str,
    docker: &DockerSettings,
) -> ContainerCreateBody {
    let spec = &rec.spec;
    let slots = rec.slots.clone().unwrap_or_default();
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("DECKHAND_KERNEL_ID={}", rec.id));
    if !slots.gpus.is_empty() {
        env.push(format!("NVIDIA_VISIBLE_DEVICES={}", slots.gpus.join(",")));
    }
    let mut labels: HashMap<String, String> = rec
        .shown_spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_NAMESPACE.into(), namespace.into());
    labels.insert(LABEL_AGENT.into(), agent_id.into());
    labels.insert(LABEL_KERNEL.into(), rec.id.clone());
    labels.insert(LABEL_SCRATCH.into(), rec.scratch_dir.clone());
    if let Some(a) = &rec.array_id {
        labels.insert(LABEL_ARRAY.into(), a.clone());
    }
    if let Some(p) = process_data {
        labels.insert(LABEL_PROCESS_DATA.into(), p.label());
    }
    let mut binds = vec![
        format!("{}/work:{WORK_DIR}:rw", rec.scratch_dir),
        format!("{}/config:{CONFIG_DIR}:ro", rec.scratch_dir),
    ];
    for m in &spec.stage_in {
        let mode = if m.read_only { "ro" } else { "rw" };
        binds.push(format!("{}:{}:{mode}", m.host.display(), m.container));
    }
    for v in docker.volumes.iter().filter(|v| v.applies_to(&rec.slug)) {
        let mode = if v.read_only { "ro" } else { "rw" };
        binds.push(format!("{}:{}:{mode}", v.src.display(), v.dest));
    }
    if let Some(ProcessData::Volume(source) | ProcessData::Dir(source)) = process_data {
        binds.push(format!("{source}:{}:rw", docker.process_data_dest));
    }
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in rec.published_ports() {
        let key = format!("{}/{}", p.container, p.protocol);
        exposed.push(key.clone());
        port_bindings.insert(
            key,
            Some(vec![PortBinding {
                host_ip: (!p.host_ip.is_empty()).then(|| p.host_ip.clone()),
                host_port: Some(p.host.to_string()),
            }]),
        );
    }
    let device_requests = (rec.real_gpus && !slots.gpus.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(slots.gpus.clone()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    // RoCE profiles: the host's RDMA devices, and pinned memory for their buffers.
    let rdma = spec.profile.as_ref().is_some_and(|p| p.rdma);
    let restart_policy = RestartPolicy {
        // With a delay the agent restarts the kernel itself (kernel::restarts).
        name: Some(match spec.restart_policy.as_str() {
            _ if spec.agent_restarts() => RestartPolicyNameEnum::NO,
            "always" => RestartPolicyNameEnum::ALWAYS,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::NO,
        }),
        maximum_retry_count: (spec.restart_policy == "on-failure"
            && spec.restart_retries > 0
            && !spec.agent_restarts())
        .then_some(spec.restart_retries),
    };
    let host_config = HostConfig {
        binds: Some(binds),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        network_mode: Some(if spec.network_mode.is_empty() {
            docker.network.clone().unwrap_or_else(|| "bridge".into())
        } else {
            spec.network_mode.clone()
        }),
        dns: (!docker.dns.is_empty()).then(|| docker.dns.clone()),
        privileged: Some(spec.privileged),
        restart_policy: Some(restart_policy),
        ipc_mode: Some(spec.ipc_mode.clone()),
        uts_mode: (!spec.uts_mode.is_empty()).then(|| spec.uts_mode.clone()),
        pid_mode: (!spec.pid_mode.is_empty()).then(|| spec.pid_mode.clone()),
        auto_remove: Some(spec.auto_remove),
        device_requests,
        shm_size: spec.shm_size.map(|s| s as i64),
        ulimits: (!spec.ulimits.is_empty()).then(|| {
            spec.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        nano_cpus: (spec.cpus > 0.0).then_some((spec.cpus * 1e9) as i64),
        memory: spec.memory.map(|m| m as i64),
        // Without --memory-swap, no swap beyond the limit: a kernel over its memory is
        // OOM-killed, not slowed.
        memory_swap: spec.memory_swap.or(spec.memory.map(|m| m as i64)),
        tmpfs: (!spec.tmpfs.is_empty()).then(|| {
            spec.tmpfs
                .iter()
                .map(|t| (t.path.clone(), t.options.clone()))
                .collect()
        }),
        storage_opt: (!spec.storage_opt.is_empty()).then(|| {
            spec.storage_opt
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        pids_limit: spec.pids_limit,
        devices: rdma.then(rdma_devices),
        cap_add: rdma.then(|| vec!["IPC_LOCK".to_string()]),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        working_dir: Some(if spec.working_dir.is_empty() {
            WORK_DIR.to_string()
        } else {
            spec.working_dir.clone()
        }),
        hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
        user: Some(spec.user.clone()),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_timeout: Some(spec.stop_grace_period.as_secs() as i64),
        // An input file is fed through an attached stdin that closes once it is sent.
        open_stdin: (!spec.input_path.is_empty()).then_some(true),
        stdin_once: (!spec.input_path.is_empty()).then_some(true),
        attach_stdin: (!spec.input_path.is_empty()).then_some(true),
        host_config: Some(host_config),
        ..Default::default()
    }
}
