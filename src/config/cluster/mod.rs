//! The typed cluster settings an agent runs with, built from a validated flat tree.

mod entries;

use entries::{fake_gpus, registries, volumes};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::schema::{self, ConfigError};
use super::tree::FlatTree;
use crate::util::secret::Secret;

/// A GPU from `config/docker/fake_gpus`, reported and assigned as if it were real.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeGpu {
    /// Normalised to `GPU-<uuid>`.
    pub id: String,
    pub name: String,
    pub ram_total: u64,
}

/// Resources kept back from kernels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reserved {
    pub cpu: f64,
    pub memory: u64,
    pub disk: u64,
}

/// How kernels are created: `agent/kernel_creation_concurrency`, `container/*`, `security/*`.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSettings {
    pub creation_concurrency: usize,
    /// `agent/on_shutdown = stop`: stop every kernel before exiting on SIGTERM.
    pub stop_on_shutdown: bool,
    pub uid: u32,
    pub gid: u32,
    pub port_range: (u16, u16),
    pub stop_grace_period: Duration,
    /// `container/shutdown_grace`: how long a profile kernel's shutdown command may take.
    pub shutdown_grace: Duration,
    pub keep_scratch: bool,
    pub stage_in_dirs: Vec<PathBuf>,
    pub allow_privileged: bool,
    pub allow_host_namespaces: bool,
    pub allow_docker_socket: bool,
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self {
            creation_concurrency: 4,
            stop_on_shutdown: false,
            uid: 1000,
            gid: 1000,
            port_range: (30000, 31000),
            stop_grace_period: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            keep_scratch: false,
            stage_in_dirs: Vec::new(),
            allow_privileged: false,
            allow_host_namespaces: false,
            allow_docker_socket: false,
        }
    }
}

/// Where a kernel's image comes from (`docker/cache_usage`, or the kernel's own choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheUsage {
    /// The local image if present, else pull.
    CacheFirst,
    /// Pull; if the pull fails and a local image exists, use it (and say so).
    #[default]
    RemoteFirst,
    /// Always pull; a failed pull fails the kernel even if a local image exists.
    RequirePull,
}

impl CacheUsage {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "cache_first" => Some(Self::CacheFirst),
            "remote_first" => Some(Self::RemoteFirst),
            "require_pull" => Some(Self::RequirePull),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CacheFirst => "cache_first",
            Self::RemoteFirst => "remote_first",
            Self::RequirePull => "require_pull",
        }
    }
}

/// A private registry from `docker/registries/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// The entry's name (the `<name>` segment), used in messages.
    pub name: String,
    /// `host[:port]`, lower-case: what image references name the registry by.
    pub host: String,
    pub username: String,
    pub password: Secret,
}

/// A host directory bind-mounted into kernels whose slug matches `on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub src: PathBuf,
    pub dest: String,
    pub read_only: bool,
    /// Shell wildcard on the slug; `None` = every kernel.
    pub on: Option<String>,
}

impl Volume {
    pub fn applies_to(&self, slug: &str) -> bool {
        match &self.on {
            None => true,
            Some(p) => glob::Pattern::new(p).is_ok_and(|p| p.matches(slug)),
        }
    }
}

/// `docker/*`: how images are fetched and what kernels are attached to.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerSettings {
    pub registries: Vec<Registry>,
    pub cache_usage: CacheUsage,
    pub pull_timeout: Duration,
    pub pull_inactivity_timeout: Duration,
    pub image_gc_after: Option<Duration>,
    pub volumes: Vec<Volume>,
    pub network: Option<String>,
    pub dns: Vec<String>,
    pub shared_process_volume: bool,
    pub process_data_dest: String,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            registries: Vec::new(),
            cache_usage: CacheUsage::RemoteFirst,
            pull_timeout: Duration::from_secs(30 * 60),
            pull_inactivity_timeout: Duration::from_secs(120),
            image_gc_after: None,
            volumes: Vec::new(),
            network: None,
            dns: Vec::new(),
            shared_process_volume: false,
            process_data_dest: "/data".into(),
        }
    }
}

impl DockerSettings {
    /// The registry entry whose host an image reference names, if any.
    pub fn registry_for(&self, image: &str) -> Option<&Registry> {
        let host = crate::util::image::ImageRef::split(image).registry();
        self.registries.iter().find(|r| r.host == host)
    }
}

/// Everything the agent reads from the cluster config.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub heartbeat_interval: Duration,
    pub lease_ttl: Duration,
    pub region: String,
    pub scaling_group: String,
    pub reserved: Reserved,
    pub nvml_library: Option<PathBuf>,
    /// `gpu/unhealthy_policy = stop`: stop a kernel whose GPU is marked unhealthy.
    pub stop_on_unhealthy_gpu: bool,
    pub fake_gpus: Vec<FakeGpu>,
    pub kernel: KernelSettings,
    pub docker: DockerSettings,
    /// `agent/default_runtime`: where kernels run when `run` names no runtime.
    pub default_runtime: String,
    pub vast: super::vast::VastSettings,
    /// Task profiles the operators defined (`profiles/<name>/…`).
    pub profiles: Vec<super::profiles::ProfileDef>,
    /// `storage/s3/…`: where profile kernels' resources and results are; `None` until the
    /// access key and secret are set.
    pub storage: Option<super::profiles::S3Settings>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(10),
            region: String::new(),
            scaling_group: "default".into(),
            reserved: Reserved::default(),
            nvml_library: None,
            stop_on_unhealthy_gpu: false,
            fake_gpus: Vec::new(),
            kernel: KernelSettings::default(),
            docker: DockerSettings::default(),
            default_runtime: "docker".into(),
            vast: super::vast::VastSettings::default(),
            profiles: Vec::new(),
            storage: None,
        }
    }
}

impl ClusterConfig {
    /// Builds the typed config from a tree whose values already passed
    /// [`schema::validate`]. Problems that span several keys (a fake GPU without an id, two
    /// fake GPUs with one id) are returned; the offending entry is left out.
    pub fn from_tree(tree: &FlatTree) -> (Self, Vec<ConfigError>) {
        let mut cfg = Self::default();
        let mut problems = Vec::new();
        let get = |k: &str| tree.get(k).map(String::as_str);
        if let Some(v) =
            get("agent/heartbeat_interval").and_then(|v| schema::parse_duration(v).ok())
        {
            cfg.heartbeat_interval = v;
        }
        if let Some(v) = get("agent/lease_ttl").and_then(|v| schema::parse_duration(v).ok()) {
            cfg.lease_ttl = v;
        }
        if let Some(v) = get("agent/region") {
            cfg.region = v.to_string();
        }
        if let Some(v) = get("agent/scaling_group") {
            cfg.scaling_group = v.to_string();
        }
        if let Some(v) = get("resource/reserved_cpu").and_then(|v| v.trim().parse().ok()) {
            cfg.reserved.cpu = v;
        }
        if let Some(v) = get("resource/reserved_memory").and_then(|v| schema::parse_bytes(v).ok()) {
            cfg.reserved.memory = v;
        }
        if let Some(v) = get("resource/reserved_disk").and_then(|v| schema::parse_bytes(v).ok()) {
            cfg.reserved.disk = v;
        }
        cfg.nvml_library = get("gpu/nvml_library").map(PathBuf::from);
        cfg.stop_on_unhealthy_gpu = get("gpu/unhealthy_policy").is_some_and(|v| v.trim() == "stop");
        cfg.fake_gpus = fake_gpus(tree, &mut problems);
        let k = &mut cfg.kernel;
        let int = |key: &str| get(key).and_then(|v| v.trim().parse::<i64>().ok());
        let flag = |key: &str| get(key).and_then(|v| schema::parse_bool(v).ok());
        if let Some(v) = int("agent/kernel_creation_concurrency") {
            k.creation_concurrency = v as usize;
        }
        k.stop_on_shutdown = get("agent/on_shutdown").is_some_and(|v| v.trim() == "stop");
        if let Some(v) = int("container/kernel_uid") {
            k.uid = v as u32;
        }
        if let Some(v) = int("container/kernel_gid") {
            k.gid = v as u32;
        }
        if let Some(v) = get("container/port_range").and_then(|v| schema::parse_port_range(v).ok())
        {
            k.port_range = v;
        }
        if let Some(v) =
            get("container/stop_grace_period").and_then(|v| schema::parse_duration(v).ok())
        {
            k.stop_grace_period = v;
        }
        if let Some(v) =
            get("container/stage_in_dirs").and_then(|v| schema::parse_path_list(v).ok())
        {
            k.stage_in_dirs = v;
        }
        if let Some(v) =
            get("container/shutdown_grace").and_then(|v| schema::parse_duration(v).ok())
        {
            k.shutdown_grace = v;
        }
        k.keep_scratch = flag("container/keep_scratch").unwrap_or(false);
        k.allow_privileged = flag("security/allow_privileged").unwrap_or(false);
        k.allow_host_namespaces = flag("security/allow_host_namespaces").unwrap_or(false);
        k.allow_docker_socket = flag("security/allow_docker_socket").unwrap_or(false);
        let d = &mut cfg.docker;
        let duration = |key: &str| get(key).and_then(|v| schema::parse_duration(v).ok());
        if let Some(v) = get("docker/cache_usage").and_then(CacheUsage::parse) {
            d.cache_usage = v;
        }
        if let Some(v) = duration("docker/pull_timeout") {
            d.pull_timeout = v;
        }
        if let Some(v) = duration("docker/pull_inactivity_timeout") {
            d.pull_inactivity_timeout = v;
        }
        d.image_gc_after = duration("docker/image_gc_after");
        d.network = get("docker/network").map(|v| v.trim().to_string());
        if let Some(v) = get("docker/dns").and_then(|v| schema::parse_ip_list(v).ok()) {
            d.dns = v.iter().map(ToString::to_string).collect();
        }
        d.shared_process_volume = flag("docker/shared_process_volume").unwrap_or(false);
        if let Some(v) = get("docker/process_data_dest") {
            d.process_data_dest = v.trim_end_matches('/').to_string();
        }
        d.registries = registries(tree, &mut problems);
        d.volumes = volumes(tree, &mut problems);
        if let Some(v) = get("agent/default_runtime") {
            cfg.default_runtime = v.trim().to_string();
        }
        cfg.vast = super::vast::VastSettings::from_tree(tree);
        cfg.profiles = super::profiles::profiles(tree);
        cfg.storage = super::profiles::s3(tree);
        (cfg, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(pairs: &[(&str, &str)]) -> FlatTree {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_tree_gives_the_documented_defaults() {
        let (cfg, problems) = ClusterConfig::from_tree(&FlatTree::new());
        assert!(problems.is_empty());
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(cfg.lease_ttl, Duration::from_secs(10));
        assert_eq!(cfg.scaling_group, "default");
    }

    #[test]
    fn fake_gpus_are_read_in_numeric_order_and_an_entry_without_id_is_reported() {
        let (cfg, problems) = ClusterConfig::from_tree(&tree(&[
            (
                "docker/fake_gpus/10/id",
                "00000000-0000-0000-0000-00000000000a",
            ),
            (
                "docker/fake_gpus/2/id",
                "GPU-00000000-0000-0000-0000-000000000002",
            ),
            ("docker/fake_gpus/2/ram_total", "16GiB"),
            ("docker/fake_gpus/3/name", "no id"),
        ]));
        let ids: Vec<&str> = cfg.fake_gpus.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "GPU-00000000-0000-0000-0000-000000000002",
                "GPU-00000000-0000-0000-0000-00000000000a"
            ]
        );
        assert_eq!(cfg.fake_gpus[0].ram_total, 16 << 30);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key(), "docker/fake_gpus/3/id");
    }

    #[test]
    fn registries_match_images_by_host_and_hide_the_password_in_debug() {
        let (cfg, problems) = ClusterConfig::from_tree(&tree(&[
            ("docker/registries/a/url", "https://Reg.example.com:5000/"),
            ("docker/registries/a/username", "u"),
            ("docker/registries/a/password", "hunter2"),
            ("docker/registries/b/url", "reg.example.com:5000"),
            ("docker/registries/c/username", "no-url"),
        ]));
        let d = &cfg.docker;
        assert_eq!(d.registries.len(), 1, "{problems:?}");
        assert_eq!(
            problems.iter().map(|p| p.key()).collect::<Vec<_>>(),
            ["docker/registries/b/url", "docker/registries/c/url"]
        );
        let r = d.registry_for("reg.example.com:5000/team/img:1").unwrap();
        assert_eq!(r.name, "a");
        assert!(d.registry_for("reg.example.com/team/img").is_none());
        assert!(d.registry_for("team/img").is_none());
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert_eq!(
            d.registry_for("REG.example.com:5000/team/img")
                .unwrap()
                .name,
            "a"
        );
    }

    #[test]
    fn volumes_need_src_and_dest_and_match_slugs_by_wildcard() {
        let (cfg, problems) = ClusterConfig::from_tree(&tree(&[
            ("docker/volumes/models/src", "/srv/models"),
            ("docker/volumes/models/dest", "/models/"),
            ("docker/volumes/models/mode", "ro"),
            ("docker/volumes/models/on", "ml_*"),
            ("docker/volumes/half/src", "/srv/x"),
        ]));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key(), "docker/volumes/half");
        let v = &cfg.docker.volumes[0];
        assert_eq!((v.dest.as_str(), v.read_only), ("/models", true));
        assert!(v.applies_to("ml_classify"));
        assert!(!v.applies_to("ocr"));
        assert_eq!(cfg.docker.cache_usage, CacheUsage::RemoteFirst);
        assert_eq!(cfg.docker.process_data_dest, "/data");
    }
}
