//! Kernel spec validation: a [`Template`] (what the caller asked for) becomes a [`Spec`] the
//! supervisor can run, or a [`SpecError`] naming the field and the problem. Nothing is
//! created before a spec passes. Exposed ports are in [`ports`], sizes in [`sizes`]; a task
//! profile and its constants are resolved first ([`profile`], [`constants`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::cluster::{CacheUsage, KernelSettings};
use crate::config::schema;
use crate::config::ClusterConfig;

pub mod constants;
mod ids;
mod image;
mod options;
mod paths;
pub mod ports;
pub mod profile;
pub mod sizes;
pub mod template;

pub use ids::{validate_array, validate_kernel_id, ArrayRange};
pub use image::image_reference;
use options::{docker_name, env_map, gpu_request, parents, restart_policy, text, ulimits};
pub(crate) use paths::container_path;
use paths::{allowed_host_path, input_file, output_file};

pub use ports::Port;
pub use sizes::Tmpfs;
pub use template::{ArrayRequest, CreateRequest, PortRequest, StageIn, Template, MASK};

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
}

impl Spec {
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
/// becomes before anything is created.
pub fn prepare(t: &Template, cfg: &ClusterConfig) -> Result<Spec, SpecError> {
    let (effective, run) = profile::resolve(t, cfg)?;
    let mut spec = validate(&effective, &cfg.kernel)?;
    spec.profile = run;
    Ok(spec)
}

/// Validates everything in `spec`; `cfg` says what the cluster allows.
pub fn validate(spec: &Template, cfg: &KernelSettings) -> Result<Spec, SpecError> {
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
        let host = allowed_host_path(&format!("{field}.host_path"), &s.host_path, cfg)?;
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
    output_file("output_path", &spec.output_path, cfg)?;
    output_file("error_path", &spec.error_path, cfg)?;
    let ports = ports::validate(&spec.ports, cfg)?;
    input_file(spec, cfg)?;
    let host_ns = |field: &str, value: &str| -> Result<(), SpecError> {
        if value == "host" && !cfg.allow_host_namespaces {
            return Err(SpecError::forbidden(
                field,
                "host namespaces are not allowed here; set config/security/allow_host_namespaces = true to allow them",
            ));
        }
        Ok(())
    };
    let network_mode = match spec.network_mode.as_str() {
        "" => String::new(),
        m if m.starts_with("container:") => {
            return Err(SpecError::invalid(
                "network_mode",
                "sharing another container's network is not supported",
            ))
        }
        m => {
            docker_name("network_mode", m)?;
            m.to_string()
        }
    };
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
        if m < 6 << 20 {
            return Err(SpecError::invalid(
                "memory",
                format!("`{}` is below Docker's minimum of 6MiB", spec.memory),
            ));
        }
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
    })
}

#[cfg(test)]
mod tests;
