//! The checks of one template's fields, in the order a request's problems are reported
//! (the CLI shows the first): ids and names, image, command and env, paths, ports, network
//! and namespaces, privileges, restart policy, GPUs, sizes, limits, grace period, cache
//! policy, process id. The runtime's rules of single fields ([`FieldRules`]) are asked at
//! their fields' places.

use std::time::Duration;

use super::options::{env_map, gpu_request, parents, restart_delay, restart_policy, text, ulimits};
use super::paths::{allowed_host_path, container_path, input_file, output_file};
use super::{
    image_reference, ports, sizes, validate_kernel_id, BindMount, FieldRules, NoFieldRules, Spec,
    SpecError, Template, CONFIG_DIR, MAX_COMMAND_BYTES, MAX_ENV_BYTES, WORK_DIR,
};
use crate::config::cluster::{CacheUsage, KernelSettings};
use crate::config::schema;

/// Validates everything in `spec`; `cfg` says what the cluster allows.
pub fn validate(spec: &Template, cfg: &KernelSettings) -> Result<Spec, SpecError> {
    validate_for(spec, cfg, &NoFieldRules)
}

/// [`validate`] with a runtime's `rules` asked at their fields' places.
pub fn validate_for(
    spec: &Template,
    cfg: &KernelSettings,
    rules: &dyn FieldRules,
) -> Result<Spec, SpecError> {
    validate_kernel_id(&spec.kernel_id)?;
    if spec.kernel_id.contains('.') {
        return Err(SpecError::invalid(
            "kernel_id",
            "`.` is reserved for array task ids; give the array's id",
        ));
    }
    text("name", &spec.name, 128)?;
    if !spec
        .slug
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        || spec.slug.len() > 64
    {
        return Err(SpecError::invalid(
            "slug",
            format!("`{}`: at most 64 letters, digits, `_`, `-`, `.`", spec.slug),
        ));
    }
    if spec.labels.len() > 64 {
        return Err(SpecError::invalid("labels", "at most 64 labels"));
    }
    for (k, v) in &spec.labels {
        if k.is_empty() || k.len() > 128 || k.chars().any(|c| c.is_control() || c == '=') {
            return Err(SpecError::invalid(
                format!("labels[{k:?}]"),
                "a label key is 1-128 printable characters without `=`",
            ));
        }
        if k.starts_with("io.deckhand.") {
            return Err(SpecError::invalid(
                format!("labels[{k}]"),
                "the io.deckhand. prefix is reserved for the agent",
            ));
        }
        text(&format!("labels[{k}]"), v, 1024)?;
    }
    image_reference(&spec.image)?;
    let mut command_bytes = 0;
    for (i, a) in spec.command.iter().enumerate() {
        if a.contains('\0') {
            return Err(SpecError::invalid(
                format!("command[{i}]"),
                "contains a NUL byte",
            ));
        }
        command_bytes += a.len();
    }
    if command_bytes > MAX_COMMAND_BYTES {
        return Err(SpecError::invalid(
            "command",
            format!("{command_bytes} bytes; at most {MAX_COMMAND_BYTES}"),
        ));
    }
    let env_bytes = env_map("env", &spec.env)? + env_map("secret_env", &spec.secret_env)?;
    if env_bytes > MAX_ENV_BYTES {
        return Err(SpecError::invalid(
            "env",
            format!("{env_bytes} bytes with secret_env; at most {MAX_ENV_BYTES}"),
        ));
    }
    if let Some(k) = spec.env.keys().find(|k| spec.secret_env.contains_key(*k)) {
        return Err(SpecError::invalid(
            format!("secret_env[{k}]"),
            "also set in env; give each variable once",
        ));
    }
    let mut env = spec.env.clone();
    env.extend(spec.secret_env.clone());
    if !spec.working_dir.is_empty() {
        container_path("working_dir", &spec.working_dir)?;
    }
    if spec.hostname.len() > 63
        || !spec
            .hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        || spec.hostname.starts_with('-')
    {
        return Err(SpecError::invalid(
            "hostname",
            format!("`{}` is not a hostname label (RFC 1123)", spec.hostname),
        ));
    }
    let user = if spec.user.is_empty() {
        format!("{}:{}", cfg.uid, cfg.gid)
    } else {
        if spec.user.len() > 64
            || !spec
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
        {
            return Err(SpecError::invalid(
                "user",
                format!("`{}` is not `uid[:gid]` or a user name", spec.user),
            ));
        }
        spec.user.clone()
    };
    let mut stage_in = Vec::new();
    for (i, s) in spec.stage_in.iter().enumerate() {
        let field = format!("stage_in[{i}]");
        let host = allowed_host_path(&format!("{field}.host_path"), &s.host_path, cfg, rules)?;
        container_path(&format!("{field}.container_path"), &s.container_path)?;
        let c = s.container_path.trim_end_matches('/');
        if [WORK_DIR, CONFIG_DIR, "/"].contains(&c) || c.is_empty() {
            return Err(SpecError::invalid(
                format!("{field}.container_path"),
                format!(
                    "`{}` would cover {WORK_DIR} or {CONFIG_DIR}",
                    s.container_path
                ),
            ));
        }
        stage_in.push(BindMount {
            host,
            container: c.to_string(),
            read_only: s.read_only,
        });
    }
    output_file("output_path", &spec.output_path, cfg, rules)?;
    output_file("error_path", &spec.error_path, cfg, rules)?;
    let ports = ports::validate(&spec.ports, cfg)?;
    input_file(spec, cfg, rules)?;
    let host_ns = |field: &str, value: &str| -> Result<(), SpecError> {
        if value == "host" && !cfg.allow_host_namespaces {
            return Err(SpecError::forbidden(
                field,
                "host namespaces are not allowed here; set config/security/allow_host_namespaces = true to allow them",
            ));
        }
        Ok(())
    };
    let network_mode = spec.network_mode.clone();
    if !network_mode.is_empty() {
        rules.network_mode(&network_mode)?;
    }
    host_ns("network_mode", &network_mode)?;
    if spec.privileged && !cfg.allow_privileged {
        return Err(SpecError::forbidden(
            "privileged",
            "privileged kernels are not allowed here; set config/security/allow_privileged = true to allow them",
        ));
    }
    let (restart_policy, restart_retries) = restart_policy(&spec.restart_policy)?;
    if spec.auto_remove && restart_policy != "no" {
        return Err(SpecError::invalid(
            "auto_remove",
            "cannot be combined with a restart policy other than `no`",
        ));
    }
    let restart_delay = restart_delay(&spec.restart_delay, &restart_policy)?;
    let ipc_mode = match spec.ipc_mode.as_str() {
        "" => "private",
        m @ ("private" | "shareable" | "host" | "none") => m,
        other => {
            return Err(SpecError::invalid(
                "ipc_mode",
                format!("`{other}`: expected private, shareable, none or host"),
            ))
        }
    };
    host_ns("ipc_mode", ipc_mode)?;
    for (field, v) in [("uts_mode", &spec.uts_mode), ("pid_mode", &spec.pid_mode)] {
        if !v.is_empty() && v != "host" {
            return Err(SpecError::invalid(
                field,
                format!("`{v}`: expected empty (private) or host"),
            ));
        }
        host_ns(field, v)?;
    }
    let gpus = gpu_request(&spec.gpus)?;
    let shm_size = sizes::bytes_field("shm_size", &spec.shm_size)?;
    let memory = sizes::bytes_field("memory", &spec.memory)?;
    if let Some(m) = memory {
        rules.memory(&spec.memory, m)?;
    }
    if !spec.cpus.is_finite() || spec.cpus < 0.0 || spec.cpus > 4096.0 {
        return Err(SpecError::invalid(
            "cpus",
            format!("{} is not a CPU count between 0 and 4096", spec.cpus),
        ));
    }
    if spec.pids_limit < 0 {
        return Err(SpecError::invalid(
            "pids_limit",
            format!("{} is negative; 0 means no limit", spec.pids_limit),
        ));
    }
    let stop_grace_period = if spec.stop_grace_period.is_empty() {
        cfg.stop_grace_period
    } else {
        let d = schema::parse_duration(&spec.stop_grace_period)
            .map_err(|r| SpecError::invalid("stop_grace_period", r))?;
        if d > Duration::from_secs(3600) {
            return Err(SpecError::invalid("stop_grace_period", "at most 1h"));
        }
        d
    };
    Ok(Spec {
        image: spec.image.clone(),
        command: spec.command.clone(),
        env,
        secret_names: spec.secret_env.keys().cloned().collect(),
        working_dir: spec.working_dir.clone(),
        hostname: spec.hostname.clone(),
        user,
        stage_in,
        output_path: spec.output_path.clone(),
        error_path: spec.error_path.clone(),
        ports,
        network_mode,
        privileged: spec.privileged,
        restart_policy,
        restart_retries,
        restart_delay,
        ipc_mode: ipc_mode.to_string(),
        uts_mode: spec.uts_mode.clone(),
        pid_mode: spec.pid_mode.clone(),
        auto_remove: spec.auto_remove,
        gpus,
        shm_size,
        ulimits: ulimits(&spec.ulimits)?,
        cpus: spec.cpus,
        memory,
        memory_swap: sizes::memory_swap(&spec.memory_swap, memory)?,
        tmpfs: sizes::tmpfs(&spec.tmpfs)?,
        storage_opt: sizes::storage_opt(&spec.storage_opt)?,
        input_path: spec.input_path.clone(),
        parents: parents(&spec.parents)?,
        pids_limit: (spec.pids_limit > 0).then_some(spec.pids_limit),
        hold: spec.submit_as_hold,
        stop_grace_period,
        cache_usage: match spec.cache_usage.as_str() {
            "" => None,
            v => Some(CacheUsage::parse(v).ok_or_else(|| {
                SpecError::invalid(
                    "cache_usage",
                    format!("`{v}`: expected {}", schema::CACHE_USAGES.join(", ")),
                )
            })?),
        },
        process_id: {
            if !spec
                .process_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                || spec.process_id.len() > 64
                || spec.process_id.starts_with('.')
            {
                return Err(SpecError::invalid(
                    "process_id",
                    format!(
                        "`{}`: at most 64 letters, digits, `_`, `-`, `.` (not starting with `.`)",
                        spec.process_id
                    ),
                ));
            }
            spec.process_id.clone()
        },
        profile: None,
        cluster: None,
    })
}
