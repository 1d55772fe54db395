//! Qarnot's Docker profiles: a named profile and a set of constants become an ordinary
//! [`Template`](super::Template) (image, command, user, hostname, working dir, env, network,
//! GPUs) plus the few things a plain kernel does not have ([`ProfileRun`]: progress regexes,
//! shutdown command, resources and results, SSH key, registry login). This is the one place
//! where constants are read; the rest of the supervisor and the runtimes see a resolved spec.
//!
//! Built-in profiles have Qarnot's names and meaning ([`BUILTIN`]); operators define more
//! under `config/profiles/<name>/…` ([`crate::config::profiles`]). The cluster profiles
//! (`docker-cluster*`, [`CLUSTER`]) run `instances` containers as one kernel: instance 0,
//! the master, runs `DOCKER_CMD_MASTER`; the workers run `DOCKER_CMD_WORKER`.
//!
//! This file holds the profile table ([`BUILTIN`], [`CLUSTER`], operator profiles) and what
//! a resolved profile kernel carries ([`ProfileRun`]); [`resolve`] (in `resolve.rs`) turns a
//! template and its constants into a plain template, with the per-feature checks (command
//! lines, progress regexes, S3 locations, resources and results dirs) in `checks.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SpecError;
use crate::config::profiles::ProfileDef;
use crate::config::ClusterConfig;
use crate::util::secret::Secret;

mod checks;
mod image_arg;
mod resolve;

pub use checks::{command_line, progress_regex, s3_settings};
pub use resolve::resolve;

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
    /// A cluster profile: master and workers on a private network.
    pub cluster: bool,
}

pub use crate::config::profiles::{BUILTIN, CLUSTER};

/// Most instances of one cluster kernel.
pub const MAX_INSTANCES: u32 = 64;

/// Where RDMA devices appear on a host that has them.
pub const RDMA_DIR: &str = "/dev/infiniband";

/// The built-in profile `name`.
pub fn builtin(name: &str) -> Option<Profile> {
    if let Some(&(n, outside, ssh)) = CLUSTER.iter().find(|(n, ..)| *n == name) {
        return Some(Profile {
            name: n.into(),
            network: if outside {
                Network::Default
            } else {
                Network::None
            },
            ssh,
            gpus: false,
            rdma: false,
            constants: BTreeMap::new(),
            cluster: true,
        });
    }
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
            cluster: false,
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
            cluster: false,
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
    let mut known: Vec<String> = BUILTIN.iter().map(|(n, ..)| n.to_string()).collect();
    known.extend(CLUSTER.iter().map(|(n, ..)| n.to_string()));
    known.extend(cfg.profiles.iter().map(|d| d.name.clone()));
    Err(SpecError::invalid(
        "profile",
        format!(
            "`{name}` is not a profile here; known: {}",
            known.join(", ")
        ),
    ))
}

/// Whether this host has RDMA devices.
pub fn has_rdma() -> bool {
    std::fs::read_dir(RDMA_DIR)
        .map(|d| d.flatten().next().is_some())
        .unwrap_or(false)
}

/// Registry credentials of one kernel (`DOCKER_REGISTRY_LOGIN`/`_PASSWORD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryLogin {
    pub username: String,
    pub password: Secret,
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
    /// A cluster profile's instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::Cluster>,
}
