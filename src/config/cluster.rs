//! The typed cluster settings an agent runs with, built from a validated flat tree.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::schema::{self, ConfigError};
use super::tree::FlatTree;

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
    pub uid: u32,
    pub gid: u32,
    pub port_range: (u16, u16),
    pub stop_grace_period: Duration,
    pub keep_scratch: bool,
    pub stage_in_dirs: Vec<PathBuf>,
    pub allow_privileged: bool,
    pub allow_host_namespaces: bool,
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self {
            creation_concurrency: 4,
            uid: 1000,
            gid: 1000,
            port_range: (30000, 31000),
            stop_grace_period: Duration::from_secs(10),
            keep_scratch: false,
            stage_in_dirs: Vec::new(),
            allow_privileged: false,
            allow_host_namespaces: false,
        }
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
    pub fake_gpus: Vec<FakeGpu>,
    pub kernel: KernelSettings,
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
            fake_gpus: Vec::new(),
            kernel: KernelSettings::default(),
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
        cfg.fake_gpus = fake_gpus(tree, &mut problems);
        let k = &mut cfg.kernel;
        let int = |key: &str| get(key).and_then(|v| v.trim().parse::<i64>().ok());
        let flag = |key: &str| get(key).and_then(|v| schema::parse_bool(v).ok());
        if let Some(v) = int("agent/kernel_creation_concurrency") {
            k.creation_concurrency = v as usize;
        }
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
        k.keep_scratch = flag("container/keep_scratch").unwrap_or(false);
        k.allow_privileged = flag("security/allow_privileged").unwrap_or(false);
        k.allow_host_namespaces = flag("security/allow_host_namespaces").unwrap_or(false);
        (cfg, problems)
    }
}

fn fake_gpus(tree: &FlatTree, problems: &mut Vec<ConfigError>) -> Vec<FakeGpu> {
    let mut entries: BTreeMap<String, BTreeMap<&str, &str>> = BTreeMap::new();
    for (key, value) in tree.range("docker/fake_gpus/".to_string()..) {
        let Some(rest) = key.strip_prefix("docker/fake_gpus/") else {
            break;
        };
        if let Some((entry, field)) = rest.split_once('/') {
            entries
                .entry(entry.to_string())
                .or_default()
                .insert(field, value);
        }
    }
    let mut gpus: Vec<FakeGpu> = Vec::new();
    // Numbered entries in numeric order, named ones after them.
    let mut names: Vec<String> = entries.keys().cloned().collect();
    names.sort_by_key(|n| (n.parse::<u64>().unwrap_or(u64::MAX), n.clone()));
    for name in names {
        let fields = &entries[&name];
        let key = format!("docker/fake_gpus/{name}");
        let Some(id) = fields
            .get("id")
            .and_then(|v| schema::normalize_gpu_id(v).ok())
        else {
            problems.push(ConfigError::invalid(
                format!("{key}/id"),
                "a fake GPU needs an `id`",
            ));
            continue;
        };
        if gpus.iter().any(|g| g.id == id) {
            problems.push(ConfigError::invalid(
                format!("{key}/id"),
                format!("`{id}` is used by another fake GPU"),
            ));
            continue;
        }
        gpus.push(FakeGpu {
            id,
            name: fields
                .get("name")
                .map(|s| s.to_string())
                .unwrap_or_else(|| "Fake GPU".into()),
            ram_total: fields
                .get("ram_total")
                .and_then(|v| schema::parse_bytes(v).ok())
                .unwrap_or(0),
        });
    }
    gpus
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
}
