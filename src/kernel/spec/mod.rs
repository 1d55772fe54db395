//! Kernel spec validation: a [`pb::KernelSpec`] from the wire becomes a [`Spec`] the engine
//! can run, or a [`SpecError`] naming the field and the problem. Nothing is created before
//! a spec passes.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::cluster::{CacheUsage, KernelSettings};
use crate::config::schema;
use crate::rpc::pb;

pub mod ports;
pub mod sizes;

pub use ports::Port;
pub use sizes::Tmpfs;

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

    fn forbidden(field: impl Into<String>, reason: impl Into<String>) -> Self {
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
    pub env: BTreeMap<String, String>,
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
    pub pids_limit: Option<i64>,
    pub hold: bool,
    pub stop_grace_period: Duration,
    /// The kernel's own image policy; `None` follows `docker/cache_usage`.
    #[serde(default)]
    pub cache_usage: Option<CacheUsage>,
    /// Kernels with one process id share process data; empty = none.
    #[serde(default)]
    pub process_id: String,
}

/// The array part of a create request, normalised (step ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayRange {
    pub begin: u32,
    pub end: u32,
    pub step: u32,
    pub max_parallel: u32,
}

impl ArrayRange {
    pub fn indices(&self) -> impl Iterator<Item = u32> {
        (self.begin..=self.end).step_by(self.step as usize)
    }
}

/// DRMAA2 bulk-job rules: begin ≥ 1, end ≥ begin, step ≤ 0 means 1, max_parallel 0 = none.
pub fn validate_array(a: &pb::ArraySpec) -> Result<ArrayRange, SpecError> {
    if a.begin < 1 {
        return Err(SpecError::invalid("array.begin", "must be at least 1"));
    }
    if a.end < a.begin {
        return Err(SpecError::invalid(
            "array.end",
            format!("{} is smaller than begin {}", a.end, a.begin),
        ));
    }
    let step = if a.step <= 0 { 1 } else { a.step as u32 };
    let range = ArrayRange {
        begin: a.begin,
        end: a.end,
        step,
        max_parallel: a.max_parallel,
    };
    let n = range.indices().count() as u64;
    if n > u64::from(MAX_ARRAY_TASKS) {
        return Err(SpecError::invalid(
            "array",
            format!("{n} tasks; at most {MAX_ARRAY_TASKS} per array"),
        ));
    }
    Ok(range)
}

/// Checks a kernel id: a UUID (as the CLI generates), or a task id `<uuid>.<index>`.
pub fn validate_kernel_id(id: &str) -> Result<(), SpecError> {
    let (base, index) = match id.split_once('.') {
        Some((b, i)) => (b, Some(i)),
        None => (id, None),
    };
    if uuid::Uuid::try_parse(base).is_err() || base.len() != 36 {
        return Err(SpecError::invalid(
            "kernel_id",
            format!("`{id}` is not a UUID (like 3f2b7c1e-0c4d-4e8a-9b1a-2d5e6f7a8b9c)"),
        ));
    }
    if let Some(i) = index {
        if i.parse::<u32>().is_err() {
            return Err(SpecError::invalid(
                "kernel_id",
                format!("`{id}`: a task id is `<array-id>.<index>`"),
            ));
        }
    }
    Ok(())
}

/// Validates everything in `spec`; `cfg` says what the cluster allows.
pub fn validate(spec: &pb::KernelSpec, cfg: &KernelSettings) -> Result<Spec, SpecError> {
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
    })
}

fn text(field: &str, v: &str, max: usize) -> Result<(), SpecError> {
    if v.len() > max || v.chars().any(|c| c.is_control()) {
        return Err(SpecError::invalid(
            field,
            format!("at most {max} bytes of printable text"),
        ));
    }
    Ok(())
}

/// Returns the map's size in bytes.
fn env_map(field: &str, env: &BTreeMap<String, String>) -> Result<usize, SpecError> {
    let mut size = 0;
    for (k, v) in env {
        let valid_name = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(SpecError::invalid(
                format!("{field}[{k:?}]"),
                "a variable name is letters, digits and `_`, not starting with a digit (no `=` or NUL)",
            ));
        }
        if v.contains('\0') {
            return Err(SpecError::invalid(
                format!("{field}[{k}]"),
                "the value contains a NUL byte",
            ));
        }
        size += k.len() + v.len() + 2;
    }
    Ok(size)
}

/// `[host[:port]/]path[:tag][@sha256:hex]`, Docker's reference grammar.
pub fn image_reference(r: &str) -> Result<(), SpecError> {
    let bad = |why: &str| {
        SpecError::invalid(
            "image",
            format!("`{r}` is not an image reference ({why}); write it like `registry:5000/team/name:tag`"),
        )
    };
    if r.is_empty() {
        return Err(bad("empty"));
    }
    if r.len() > 512 {
        return Err(bad("longer than 512 characters"));
    }
    let (rest, digest) = match r.split_once('@') {
        Some((a, d)) => (a, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let ok = d
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return Err(bad("the digest is not sha256:<64 hex>"));
        }
    }
    // A tag is after the last `:` that follows the last `/`.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(bad("bad tag"));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        let is_host = first.contains('.') || first.contains(':') || first == "localhost";
        if is_host {
            let ok = first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
                && !first.starts_with(['-', '.', ':']);
            if !ok {
                return Err(bad("bad registry host"));
            }
            parts.remove(0);
        }
    }
    for p in parts {
        let ok = !p.is_empty()
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .last()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !ok {
            return Err(bad(
                "path components are lower-case letters, digits and . _ -",
            ));
        }
    }
    Ok(())
}

/// An absolute container path without `..`.
pub(crate) fn container_path(field: &str, p: &str) -> Result<(), SpecError> {
    let path = Path::new(p);
    if !path.is_absolute()
        || p.contains('\0')
        || p.contains(':')
        || path.components().any(|c| matches!(c, Component::ParentDir))
    {
        return Err(SpecError::invalid(
            field,
            format!("`{p}` is not an absolute path without `..` or `:`"),
        ));
    }
    Ok(())
}

/// A host path that must lie inside one of `container/stage_in_dirs`, symlinks resolved.
fn allowed_host_path(field: &str, p: &str, cfg: &KernelSettings) -> Result<PathBuf, SpecError> {
    container_path(field, p)?;
    let real =
        std::fs::canonicalize(p).map_err(|e| SpecError::invalid(field, format!("`{p}`: {e}")))?;
    let allowed = cfg.stage_in_dirs.iter().any(|d| {
        std::fs::canonicalize(d)
            .map(|d| real.starts_with(d))
            .unwrap_or(false)
    });
    if !allowed {
        return Err(SpecError::forbidden(
            field,
            format!(
                "`{p}` is outside the allowed directories; list its directory in config/container/stage_in_dirs to allow it"
            ),
        ));
    }
    // The engine's socket gives root on the host: never through a stage-in dir by accident.
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
    let exposes_socket = [socket.as_path(), Path::new("/var/run/docker.sock")]
        .iter()
        .filter_map(|s| std::fs::canonicalize(s).ok())
        .any(|s| s.starts_with(&real));
    if exposes_socket && !cfg.allow_docker_socket {
        return Err(SpecError::forbidden(
            field,
            format!(
                "`{p}` would give the kernel the Docker socket; set config/security/allow_docker_socket = true to allow it"
            ),
        ));
    }
    Ok(real)
}

/// Output files: relative (inside the work dir, no `..`) or absolute in an allowed dir.
fn output_file(field: &str, p: &str, cfg: &KernelSettings) -> Result<(), SpecError> {
    if p.is_empty() {
        return Ok(());
    }
    let path = Path::new(p);
    if p.contains('\0') || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SpecError::invalid(
            field,
            format!("`{p}` may not contain `..`"),
        ));
    }
    if path.is_absolute() {
        let dir = path.parent().unwrap_or(path);
        let dir = dir.to_str().unwrap_or_default();
        allowed_host_path(field, dir, cfg)?;
    }
    Ok(())
}

/// DRMAA2 `inputPath`: a file fed to the command's stdin. Absolute: a regular file inside
/// `container/stage_in_dirs`, which must exist now. Relative: a file in the kernel's work
/// dir, which is empty until the kernel exists — so only a held kernel can have it (upload
/// it, then release); its presence is checked at release.
fn input_file(spec: &pb::KernelSpec, cfg: &KernelSettings) -> Result<(), SpecError> {
    const FIELD: &str = "input_path";
    let p = spec.input_path.as_str();
    if p.is_empty() {
        return Ok(());
    }
    let path = Path::new(p);
    if p.contains('\0') || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SpecError::invalid(
            FIELD,
            format!("`{p}` may not contain `..`"),
        ));
    }
    if path.is_absolute() {
        let real = allowed_host_path(FIELD, p, cfg)?;
        if !real.is_file() {
            return Err(SpecError::invalid(
                FIELD,
                format!("`{p}` is not a regular file"),
            ));
        }
    } else if !spec.submit_as_hold {
        return Err(SpecError::invalid(
            FIELD,
            format!(
                "`{p}` is relative to the kernel's work dir, which is empty when the kernel starts; \
                 give an absolute path inside config/container/stage_in_dirs, or hold the kernel, \
                 upload the file with `files put` and release it"
            ),
        ));
    }
    Ok(())
}

fn docker_name(field: &str, v: &str) -> Result<(), SpecError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(SpecError::invalid(
            field,
            format!("`{v}` is not a network name"),
        ));
    }
    Ok(())
}

fn restart_policy(v: &str) -> Result<(String, i64), SpecError> {
    let (name, n) = match v.split_once(':') {
        Some((name, n)) => (name, Some(n)),
        None => (v, None),
    };
    let bad = || {
        SpecError::invalid(
            "restart_policy",
            format!("`{v}`: expected no, on-failure[:N], always or unless-stopped"),
        )
    };
    match (name, n) {
        ("" | "no", None) => Ok(("no".into(), 0)),
        ("always" | "unless-stopped", None) => Ok((name.into(), 0)),
        ("on-failure", None) => Ok((name.into(), 0)),
        ("on-failure", Some(n)) => {
            let n: i64 = n.parse().map_err(|_| bad())?;
            if !(0..=1000).contains(&n) {
                return Err(bad());
            }
            Ok((name.into(), n))
        }
        _ => Err(bad()),
    }
}

fn gpu_request(v: &str) -> Result<GpuRequest, SpecError> {
    let v = v.trim();
    if v.is_empty() || v == "0" {
        return Ok(GpuRequest::None);
    }
    if v == "all" {
        return Ok(GpuRequest::All);
    }
    if let Ok(n) = v.parse::<u32>() {
        if n > 64 {
            return Err(SpecError::invalid("gpus", format!("{n} GPUs; at most 64")));
        }
        return Ok(GpuRequest::Count(n));
    }
    if v.starts_with('-') {
        return Err(SpecError::invalid(
            "gpus",
            format!("`{v}` is negative; give `all`, a count or GPU UUIDs"),
        ));
    }
    let mut ids = Vec::new();
    for part in v.split(',') {
        let id = schema::normalize_gpu_id(part).map_err(|r| SpecError::invalid("gpus", r))?;
        if ids.contains(&id) {
            return Err(SpecError::invalid("gpus", format!("`{id}` is named twice")));
        }
        ids.push(id);
    }
    Ok(GpuRequest::Ids(ids))
}

const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `memlock=-1,stack=67108864`, each `name=soft[:hard]`.
fn ulimits(v: &str) -> Result<Vec<Ulimit>, SpecError> {
    let mut out: Vec<Ulimit> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: String| SpecError::invalid("ulimits", format!("`{item}`: {why}"));
        let (name, vals) = item
            .split_once('=')
            .ok_or_else(|| bad("expected name=soft[:hard]".into()))?;
        if !ULIMITS.contains(&name) {
            return Err(bad(format!("unknown limit; known: {}", ULIMITS.join(", "))));
        }
        let (soft, hard) = match vals.split_once(':') {
            Some((s, h)) => (s, h),
            None => (vals, vals),
        };
        let soft: i64 = soft.parse().map_err(|_| bad("not a number".into()))?;
        let hard: i64 = hard.parse().map_err(|_| bad("not a number".into()))?;
        if soft < -1 || hard < -1 || (hard != -1 && (soft == -1 || soft > hard)) {
            return Err(bad("soft must be ≤ hard (-1 = unlimited)".into()));
        }
        if out.iter().any(|u| u.name == name) {
            return Err(bad("given twice".into()));
        }
        out.push(Ulimit {
            name: name.into(),
            soft,
            hard,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> pb::KernelSpec {
        pb::KernelSpec {
            kernel_id: "3f2b7c1e-0c4d-4e8a-9b1a-2d5e6f7a8b9c".into(),
            image: "deckhand-test/busybox:latest".into(),
            ..Default::default()
        }
    }

    fn field_of(s: pb::KernelSpec) -> String {
        validate(&s, &KernelSettings::default()).unwrap_err().field
    }

    #[test]
    fn a_minimal_spec_runs_as_the_kernel_uid_with_bridge_networking() {
        let s = validate(&spec(), &KernelSettings::default()).unwrap();
        assert_eq!(s.user, "1000:1000");
        assert_eq!(s.network_mode, "");
        assert_eq!(s.stop_grace_period, Duration::from_secs(10));
    }

    #[test]
    fn image_references_follow_dockers_grammar() {
        for ok in [
            "busybox",
            "library/busybox:1.36",
            "localhost:5000/team/name:v1.2-rc",
            "registry.example.com/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(image_reference(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Busybox",
            "a//b",
            "name:",
            "name:-tag",
            "x@sha256:12",
            "a/b:c:d/e",
        ] {
            assert!(image_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut s = spec();
        s.env.insert("A=B".into(), "x".into());
        assert_eq!(field_of(s), "env[\"A=B\"]");
        let mut s = spec();
        s.gpus = "-1".into();
        assert_eq!(field_of(s), "gpus");
        let mut s = spec();
        s.memory = "lots".into();
        assert_eq!(field_of(s), "memory");
        let mut s = spec();
        s.ulimits = "memlock=x".into();
        assert_eq!(field_of(s), "ulimits");
        let mut s = spec();
        s.output_path = "../../etc/passwd".into();
        assert_eq!(field_of(s), "output_path");
        let mut s = spec();
        s.kernel_id = "not-a-uuid".into();
        assert_eq!(field_of(s), "kernel_id");
    }

    #[test]
    fn privileged_and_host_namespaces_need_the_cluster_setting() {
        let mut s = spec();
        s.privileged = true;
        let err = validate(&s, &KernelSettings::default()).unwrap_err();
        assert!(err.forbidden);
        assert!(
            err.reason.contains("config/security/allow_privileged"),
            "{err}"
        );
        let cfg = KernelSettings {
            allow_privileged: true,
            ..Default::default()
        };
        assert!(validate(&s, &cfg).is_ok());
        let mut s = spec();
        s.pid_mode = "host".into();
        assert!(
            validate(&s, &KernelSettings::default())
                .unwrap_err()
                .forbidden
        );
    }

    #[test]
    fn ulimits_parse_soft_and_hard() {
        let u = ulimits("memlock=-1,stack=67108864").unwrap();
        assert_eq!(u[0].soft, -1);
        assert_eq!(u[1].hard, 67108864);
        assert!(ulimits("stack=10:5").is_err());
    }

    #[test]
    fn arrays_follow_drmaa2_rules() {
        let a = validate_array(&pb::ArraySpec {
            begin: 1,
            end: 10,
            step: 0,
            max_parallel: 4,
        })
        .unwrap();
        assert_eq!(a.indices().count(), 10);
        let a = validate_array(&pb::ArraySpec {
            begin: 2,
            end: 10,
            step: 3,
            max_parallel: 0,
        })
        .unwrap();
        assert_eq!(a.indices().collect::<Vec<_>>(), [2, 5, 8]);
        assert!(validate_array(&pb::ArraySpec {
            begin: 0,
            end: 1,
            step: 1,
            max_parallel: 0
        })
        .is_err());
    }
}
