//! Qarnot's Docker profiles: a named profile and a set of constants become an ordinary
//! [`Template`] (image, command, user, hostname, working dir, env, network, GPUs) plus the
//! few things a plain kernel does not have ([`ProfileRun`]: progress regexes, shutdown
//! command, resources and results, SSH key, registry login). This is the one place where
//! constants are read; the rest of the supervisor and the runtimes see a resolved spec.
//!
//! Built-in profiles have Qarnot's names and meaning ([`BUILTIN`]); operators define more
//! under `config/profiles/<name>/…` ([`crate::config::profiles`]). The cluster profiles
//! (`docker-cluster*`) come with the master/worker kernels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::constants::{self, check_name, holds_secret, substitute};
use super::paths::{allowed_host_path, container_path};
use super::{SpecError, Template};
use crate::config::profiles::{ProfileDef, S3Settings};
use crate::config::ClusterConfig;

/// The network a profile gives its kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No interface but loopback (`network_mode: none`).
    None,
    /// The cluster's `docker/network`, else Docker's bridge.
    Default,
    /// A Docker network by name.
    Named(String),
}

/// A profile: what its kernels get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub network: Network,
    /// `ssh -p PORT work@AGENT` with the `DOCKER_SSH` key.
    pub ssh: bool,
    /// At least one GPU (1 unless the kernel asks for more).
    pub gpus: bool,
    /// RDMA (RoCE) devices of the host passed through.
    pub rdma: bool,
    /// Defaults under the kernel's own constants.
    pub constants: BTreeMap<String, String>,
}

/// Built-in profiles: name, network, ssh, gpus, rdma. Add a row for a new one.
pub const BUILTIN: &[(&str, bool, bool, bool, bool)] = &[
    ("docker-batch", false, false, false, false),
    ("docker-network", true, false, false, false),
    ("docker-network-ssh", true, true, false, false),
    ("docker-nvidia-batch", false, false, true, false),
    ("docker-nvidia-network", true, false, true, false),
    ("docker-network-roce", true, false, false, true),
    ("docker-nvidia-network-roce", true, false, true, true),
];

/// Where RDMA devices appear on a host that has them.
pub const RDMA_DIR: &str = "/dev/infiniband";

/// The built-in profile `name`.
pub fn builtin(name: &str) -> Option<Profile> {
    BUILTIN
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|&(n, network, ssh, gpus, rdma)| Profile {
            name: n.into(),
            network: if network {
                Network::Default
            } else {
                Network::None
            },
            ssh,
            gpus,
            rdma,
            constants: BTreeMap::new(),
        })
}

impl From<&ProfileDef> for Profile {
    fn from(d: &ProfileDef) -> Self {
        Self {
            name: d.name.clone(),
            network: match d.network.as_str() {
                "none" => Network::None,
                "" | "default" => Network::Default,
                n => Network::Named(n.to_string()),
            },
            ssh: d.ssh,
            gpus: d.gpus,
            rdma: false,
            constants: d.constants.clone(),
        }
    }
}

/// The profile `name`: built in, or defined by the operators.
pub fn find(name: &str, cfg: &ClusterConfig) -> Result<Profile, SpecError> {
    if let Some(p) = builtin(name) {
        return Ok(p);
    }
    if let Some(d) = cfg.profiles.iter().find(|d| d.name == name) {
        return Ok(d.into());
    }
    if name.starts_with("docker-cluster") {
        return Err(SpecError::forbidden(
            "profile",
            format!("`{name}`: cluster profiles (master and workers) are not available yet"),
        ));
    }
    let mut known: Vec<String> = BUILTIN.iter().map(|(n, ..)| n.to_string()).collect();
    known.extend(cfg.profiles.iter().map(|d| d.name.clone()));
    Err(SpecError::invalid(
        "profile",
        format!(
            "`{name}` is not a profile here; known: {}",
            known.join(", ")
        ),
    ))
}

/// Registry credentials of one kernel (`DOCKER_REGISTRY_LOGIN`/`_PASSWORD`); the password
/// never leaves through `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// An S3 location: `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Where resources come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    S3(S3Location),
    /// A host dir inside `container/stage_in_dirs` (resolved), copied in.
    Dir(std::path::PathBuf),
}

/// What a profile kernel has beyond an ordinary spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ProfileRun {
    pub name: String,
    /// `DOCKER_PROGRESS1..3`, checked to compile with a capture group.
    pub progress: Vec<String>,
    /// `DOCKER_SHUTDOWN_CMD`; `/bin/true` by default.
    pub shutdown_command: String,
    /// Whether the shutdown command was given (a runtime without exec refuses only then).
    pub shutdown_given: bool,
    /// `RESOURCES_PATH`.
    pub resources_path: String,
    pub resources: Option<Source>,
    pub results: Option<S3Location>,
    /// The container dir uploaded as results (`RESOURCES_PATH` unless given).
    pub results_path: String,
    /// `DOCKER_SSH`: the one public key allowed in (OpenSSH format).
    pub ssh_key: String,
    pub registry: Option<RegistryLogin>,
    /// RDMA devices passed through.
    pub rdma: bool,
    /// `QARNOT_DISABLE_CPU_BOOST`.
    pub no_cpu_boost: bool,
}

/// Longest value of one constant.
const MAX_CONSTANT: usize = 64 * 1024;

/// `template` with its profile and constants resolved into ordinary fields, and what the
/// kernel has beyond them; a template without a profile comes back as it is (and may not
/// use the profile-only fields).
pub fn resolve(
    t: &Template,
    cfg: &ClusterConfig,
) -> Result<(Template, Option<ProfileRun>), SpecError> {
    if t.profile.is_empty() {
        for (field, set) in [
            ("constants", !t.constants.is_empty()),
            ("resources", !t.resources.is_empty()),
            ("results", !t.results.is_empty()),
            ("results_path", !t.results_path.is_empty()),
        ] {
            if set {
                return Err(SpecError::invalid(
                    field,
                    "belongs to a task profile: give one (`--profile docker-batch`, …)",
                ));
            }
        }
        return Ok((t.clone(), None));
    }
    let profile = find(&t.profile, cfg)?;
    if t.constants.len() > 256 {
        return Err(SpecError::invalid("constants", "at most 256 constants"));
    }
    for (k, v) in &t.constants {
        let field = format!("constants[{k}]");
        check_name(&field, k)?;
        if v.contains('\0') || v.len() > MAX_CONSTANT {
            return Err(SpecError::invalid(
                field,
                format!("at most {MAX_CONSTANT} bytes without NUL"),
            ));
        }
    }
    let mut all = profile.constants.clone();
    all.extend(t.constants.clone());
    let c = substitute(&all)?;
    let get = |k: &str| c.get(k).map(|v| v.trim()).unwrap_or("");
    let mut e = t.clone();
    e.profile.clear();
    e.constants.clear();
    e.resources.clear();
    e.results.clear();
    e.results_path.clear();

    if !t.image.is_empty() {
        return Err(SpecError::invalid(
            "image",
            "with a profile the image comes from the constants DOCKER_SRV, DOCKER_REPO and DOCKER_TAG",
        ));
    }
    e.image = image(get("DOCKER_SRV"), get("DOCKER_REPO"), get("DOCKER_TAG"))?;
    if !t.command.is_empty() {
        return Err(SpecError::invalid(
            "command",
            "with a profile the command is the constant DOCKER_CMD",
        ));
    }
    e.command = command_line("constants[DOCKER_CMD]", get("DOCKER_CMD"))?;
    e.user = once("user", &t.user, "DOCKER_USER", get("DOCKER_USER"))?;
    e.hostname = once("hostname", &t.hostname, "DOCKER_HOST", get("DOCKER_HOST"))?;
    e.working_dir = once(
        "working_dir",
        &t.working_dir,
        "DOCKER_WORKDIR",
        get("DOCKER_WORKDIR"),
    )?;
    if !t.network_mode.is_empty() {
        return Err(SpecError::invalid(
            "network_mode",
            format!("profile `{}` decides the network", profile.name),
        ));
    }
    e.network_mode = match &profile.network {
        Network::None => "none".into(),
        Network::Default => String::new(),
        Network::Named(n) => n.clone(),
    };
    let no_gpus = t.gpus.trim().is_empty() || t.gpus.trim() == "0";
    if profile.gpus {
        if t.gpus.trim() == "0" {
            return Err(SpecError::invalid(
                "gpus",
                format!("profile `{}` needs at least one GPU", profile.name),
            ));
        }
        if no_gpus {
            e.gpus = "1".into();
        }
    } else if !no_gpus {
        return Err(SpecError::invalid(
            "gpus",
            format!(
                "profile `{}` has no GPUs; use docker-nvidia-batch or docker-nvidia-network",
                profile.name
            ),
        ));
    }
    for (k, v) in &c {
        if constants::is_known(k) {
            continue;
        }
        if t.env.contains_key(k) || t.secret_env.contains_key(k) {
            return Err(SpecError::invalid(
                format!("constants[{k}]"),
                "also given as an environment variable; give it once",
            ));
        }
        if holds_secret(k, v, &c) {
            e.secret_env.insert(k.clone(), v.clone());
        } else {
            e.env.insert(k.clone(), v.clone());
        }
    }
    let mut run = ProfileRun {
        name: profile.name.clone(),
        rdma: profile.rdma,
        ..Default::default()
    };
    for i in 1..=3 {
        let name = format!("DOCKER_PROGRESS{i}");
        let re = c.get(&name).map(String::as_str).unwrap_or("");
        if !re.is_empty() {
            progress_regex(&name, re)?;
            run.progress.push(re.to_string());
        }
    }
    run.shutdown_given = !get("DOCKER_SHUTDOWN_CMD").is_empty();
    run.shutdown_command = match get("DOCKER_SHUTDOWN_CMD") {
        "" => "/bin/true".into(),
        s => s.into(),
    };
    run.resources_path = match get("RESOURCES_PATH") {
        "" => "/job".into(),
        p => p.trim_end_matches('/').to_string(),
    };
    container_path("constants[RESOURCES_PATH]", &run.resources_path)?;
    crate::config::schema::check_container_dest(&run.resources_path)
        .map_err(|r| SpecError::invalid("constants[RESOURCES_PATH]", r))?;
    run.ssh_key = get("DOCKER_SSH").to_string();
    match (profile.ssh, run.ssh_key.is_empty()) {
        (true, true) => {
            return Err(SpecError::invalid(
                "constants[DOCKER_SSH]",
                format!("profile `{}` needs the public key allowed in", profile.name),
            ))
        }
        (false, false) => {
            return Err(SpecError::invalid(
                "constants[DOCKER_SSH]",
                format!(
                    "profile `{}` has no SSH access; use docker-network-ssh",
                    profile.name
                ),
            ))
        }
        (true, false) => {
            russh::keys::PublicKey::from_openssh(&run.ssh_key).map_err(|e| {
                SpecError::invalid(
                    "constants[DOCKER_SSH]",
                    format!("not an OpenSSH public key (`ssh-ed25519 AAAA…`): {e}"),
                )
            })?;
        }
        (false, true) => {}
    }
    run.registry = match (
        get("DOCKER_REGISTRY_LOGIN"),
        get("DOCKER_REGISTRY_PASSWORD"),
    ) {
        ("", "") => None,
        ("", _) => {
            return Err(SpecError::invalid(
                "constants[DOCKER_REGISTRY_LOGIN]",
                "a registry password needs its login",
            ))
        }
        (_, "") => {
            return Err(SpecError::invalid(
                "constants[DOCKER_REGISTRY_PASSWORD]",
                "a registry login needs its password",
            ))
        }
        (u, p) => Some(RegistryLogin {
            username: u.into(),
            password: p.into(),
        }),
    };
    run.no_cpu_boost = match get("QARNOT_DISABLE_CPU_BOOST")
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "false" | "0" | "no" => false,
        "true" | "1" | "yes" => true,
        other => {
            return Err(SpecError::invalid(
                "constants[QARNOT_DISABLE_CPU_BOOST]",
                format!("`{other}`: expected true or false"),
            ))
        }
    };
    if run.no_cpu_boost && t.cpus <= 0.0 {
        return Err(SpecError::invalid(
            "cpus",
            "QARNOT_DISABLE_CPU_BOOST caps the kernel at its cpus: give them (`--cpus 2`)",
        ));
    }
    if run.rdma && !has_rdma() {
        return Err(SpecError::forbidden(
            "profile",
            format!(
                "`{}` needs RDMA (RoCE) devices; this agent has none ({RDMA_DIR} is empty or missing)",
                profile.name
            ),
        ));
    }
    run.resources = resources(&t.resources, cfg)?;
    if !t.results.is_empty() {
        let loc = s3_location("results", &t.results)?;
        s3_settings("results", cfg)?;
        run.results = Some(loc);
    }
    run.results_path = results_path(&t.results_path, &run.resources_path)?;
    Ok((e, Some(run)))
}

/// Whether this host has RDMA devices.
pub fn has_rdma() -> bool {
    std::fs::read_dir(RDMA_DIR)
        .map(|d| d.flatten().next().is_some())
        .unwrap_or(false)
}

/// `DOCKER_SRV/DOCKER_REPO:DOCKER_TAG`, checked as an image reference naming the constants.
fn image(srv: &str, repo: &str, tag: &str) -> Result<String, SpecError> {
    let srv = srv
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let repo = if repo.is_empty() {
        "library/ubuntu"
    } else {
        repo
    };
    let tag = if tag.is_empty() { "latest" } else { tag };
    let image = if srv.is_empty() {
        format!("{repo}:{tag}")
    } else {
        format!("{srv}/{repo}:{tag}")
    };
    super::image_reference(&image).map_err(|e| {
        SpecError::invalid(
            "constants[DOCKER_SRV/DOCKER_REPO/DOCKER_TAG]",
            format!(
                "make `{image}`, which is not an image reference: {}",
                e.reason
            ),
        )
    })?;
    Ok(image)
}

/// A command line split as a POSIX shell would (quotes, backslashes); empty: none.
pub fn command_line(field: &str, line: &str) -> Result<Vec<String>, SpecError> {
    if line.trim().is_empty() {
        return Ok(Vec::new());
    }
    shlex::split(line).ok_or_else(|| {
        SpecError::invalid(field, "unbalanced quotes: write it as a shell command line")
    })
}

/// A field the template and a constant can both set: one of them.
fn once(field: &str, given: &str, constant: &str, value: &str) -> Result<String, SpecError> {
    match (given.is_empty(), value.is_empty()) {
        (false, false) => Err(SpecError::invalid(
            field,
            format!("also given as the constant {constant}; give it once"),
        )),
        (true, _) => Ok(value.to_string()),
        (false, true) => Ok(given.to_string()),
    }
}

/// Checks a progress regex: it compiles (size-bounded) and has a capture group.
pub fn progress_regex(name: &str, re: &str) -> Result<regex::Regex, SpecError> {
    let field = format!("constants[{name}]");
    let compiled = regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| SpecError::invalid(&field, format!("not a regular expression: {e}")))?;
    if compiled.captures_len() < 2 {
        return Err(SpecError::invalid(
            field,
            "has no capture group: put the progress number in ( ), like `step (\\d+)/100`",
        ));
    }
    Ok(compiled)
}

/// `s3://bucket/prefix`, naming `field` when it is not one.
fn s3_location(field: &str, v: &str) -> Result<S3Location, SpecError> {
    let rest = v
        .strip_prefix("s3://")
        .ok_or_else(|| SpecError::invalid(field, format!("`{v}` is not `s3://bucket/prefix`")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let ok_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok_bucket || prefix.contains("..") || prefix.chars().any(char::is_control) {
        return Err(SpecError::invalid(
            field,
            format!("`{v}` is not `s3://bucket/prefix` (a bucket is 3-63 of a-z 0-9 - .)"),
        ));
    }
    Ok(S3Location {
        bucket: bucket.into(),
        prefix: prefix.trim_matches('/').into(),
    })
}

/// The S3 settings, or FAILED_PRECONDITION naming the missing one.
pub fn s3_settings<'a>(field: &str, cfg: &'a ClusterConfig) -> Result<&'a S3Settings, SpecError> {
    cfg.storage.as_ref().ok_or_else(|| {
        SpecError::forbidden(
            field,
            "S3 is not set up on this agent: set config/storage/s3/access_key and secret_key (and endpoint for a non-AWS server)",
        )
    })
}

fn resources(v: &str, cfg: &ClusterConfig) -> Result<Option<Source>, SpecError> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.starts_with("s3://") {
        let loc = s3_location("resources", v)?;
        s3_settings("resources", cfg)?;
        return Ok(Some(Source::S3(loc)));
    }
    let dir = allowed_host_path("resources", v, &cfg.kernel)?;
    if !dir.is_dir() {
        return Err(SpecError::invalid(
            "resources",
            format!("`{v}` is not a directory (give a host dir or s3://bucket/prefix)"),
        ));
    }
    Ok(Some(Source::Dir(dir)))
}

/// The results dir: `RESOURCES_PATH` or a dir under it or under the kernel's home.
fn results_path(v: &str, resources_path: &str) -> Result<String, SpecError> {
    if v.is_empty() {
        return Ok(resources_path.to_string());
    }
    container_path("results_path", v)?;
    let p = v.trim_end_matches('/');
    let inside = |base: &str| p == base || p.starts_with(&format!("{base}/"));
    if !inside(resources_path) && !inside(super::WORK_DIR) {
        return Err(SpecError::invalid(
            "results_path",
            format!(
                "`{v}` is neither under RESOURCES_PATH ({resources_path}) nor under {}",
                super::WORK_DIR
            ),
        ));
    }
    Ok(p.to_string())
}
