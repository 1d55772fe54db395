//! Settings of Qarnot-style task profiles: profiles operators define beside the built-in
//! ones (`profiles/<name>/{network,ssh,gpus,constants/<KEY>}`) and the S3 store that
//! resources come from and results go to (`storage/s3/…`). Keys and checks here; what a
//! profile does is [`crate::spec::profile`].

use std::collections::BTreeMap;

use super::schema::{self, KeySpec, Kind};
use super::tree::FlatTree;
use crate::util::secret::Secret;

pub static KEYS: &[KeySpec] = &[
    KeySpec {
        pattern: "profiles/*/network",
        kind: Kind::ProfileSetting,
        help: "the network of the profile's kernels: none, default (docker/network) or a Docker network name",
    },
    KeySpec {
        pattern: "profiles/*/ssh",
        kind: Kind::ProfileSetting,
        help: "true: kernels take a DOCKER_SSH key and can be reached with ssh (default false)",
    },
    KeySpec {
        pattern: "profiles/*/gpus",
        kind: Kind::ProfileSetting,
        help: "true: kernels need at least one GPU (default false)",
    },
    KeySpec {
        pattern: "profiles/*/constants/*",
        kind: Kind::ProfileSetting,
        help: "a default constant of the profile's kernels (Qarnot's names; a kernel's own win)",
    },
    KeySpec {
        pattern: "storage/s3/endpoint",
        kind: Kind::HttpUrl,
        help: "S3 endpoint of resources and results (default: AWS)",
    },
    KeySpec {
        pattern: "storage/s3/region",
        kind: Kind::Text,
        help: "S3 region (default us-east-1)",
    },
    KeySpec {
        pattern: "storage/s3/access_key",
        kind: Kind::Text,
        help: "S3 access key id of resources and results",
    },
    KeySpec {
        pattern: "storage/s3/secret_key",
        kind: Kind::Secret,
        help: "S3 secret key (never shown)",
    },
];

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

/// Built-in cluster profiles: name, reaches outside its private network, ssh.
pub const CLUSTER: &[(&str, bool, bool)] = &[
    ("docker-cluster", false, false),
    ("docker-cluster-ssh", false, true),
    ("docker-cluster-network", true, false),
    ("docker-cluster-network-ssh", true, true),
];

/// Whether `name` is a built-in profile's (an operator's profile may not take it).
pub fn is_builtin(name: &str) -> bool {
    BUILTIN.iter().any(|(n, ..)| *n == name) || CLUSTER.iter().any(|(n, ..)| *n == name)
}

/// Checks a `profiles/<name>/…` key and its value: the name is not a built-in profile's,
/// the field's value fits, a constant's name is one a kernel could give.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('/').collect();
    let name = parts.get(1).copied().unwrap_or_default();
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !ok_name {
        return Err(format!(
            "`{name}` is not a profile name (at most 64 of a-z 0-9 - _ .)"
        ));
    }
    if is_builtin(name) {
        return Err(format!(
            "`{name}` is a built-in profile; give yours another name"
        ));
    }
    if name.starts_with("docker-cluster") {
        return Err(format!(
            "`{name}`: docker-cluster* names are kept for the cluster profiles"
        ));
    }
    match parts.as_slice() {
        [_, _, "network"] => match value.trim() {
            "none" | "default" => Ok(()),
            other => schema::validate_kind(Kind::DockerName, other),
        },
        [_, _, "ssh" | "gpus"] => schema::parse_bool(value).map(|_| ()),
        [_, _, "constants", constant] => {
            super::constants::check_name(constant)?;
            if value.contains('\0') || value.len() > 64 * 1024 {
                return Err("at most 64 KiB without NUL".into());
            }
            Ok(())
        }
        _ => Err("unknown profile field".into()),
    }
}

/// A profile an operator defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileDef {
    pub name: String,
    /// `none`, `default` (or empty) or a Docker network name.
    pub network: String,
    pub ssh: bool,
    pub gpus: bool,
    pub constants: BTreeMap<String, String>,
}

pub use crate::util::s3::S3Settings;

/// The operators' profiles of a validated tree, by name.
pub fn profiles(tree: &FlatTree) -> Vec<ProfileDef> {
    let mut out: BTreeMap<String, ProfileDef> = BTreeMap::new();
    for (key, value) in tree.range("profiles/".to_string()..) {
        let Some(rest) = key.strip_prefix("profiles/") else {
            break;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let Some(name) = parts.first() else { continue };
        let def = out.entry(name.to_string()).or_insert_with(|| ProfileDef {
            name: name.to_string(),
            network: String::new(),
            ssh: false,
            gpus: false,
            constants: BTreeMap::new(),
        });
        match parts.as_slice() {
            [_, "network"] => def.network = value.trim().to_string(),
            [_, "ssh"] => def.ssh = schema::parse_bool(value).unwrap_or(false),
            [_, "gpus"] => def.gpus = schema::parse_bool(value).unwrap_or(false),
            [_, "constants", c] => {
                def.constants.insert(c.to_string(), value.clone());
            }
            _ => {}
        }
    }
    out.into_values().collect()
}

/// The S3 store of resources and results, when its access key and secret are set.
pub fn s3(tree: &FlatTree) -> Option<S3Settings> {
    let s = s3_at(tree, "storage/s3");
    (!s.access_key.is_empty() && !s.secret_key.is_empty()).then_some(s)
}

/// The S3 connection under `<base>/{endpoint,region,access_key,secret_key}` (the region
/// defaults to `us-east-1`, the endpoint to AWS); values are trimmed.
pub fn s3_at(tree: &FlatTree, base: &str) -> S3Settings {
    let get = |k: &str| {
        tree.get(&format!("{base}/{k}"))
            .map(|v| v.trim().to_string())
    };
    S3Settings {
        endpoint: get("endpoint")
            .filter(|e| !e.is_empty())
            .map(|e| e.trim_end_matches('/').to_string()),
        region: get("region")
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".into()),
        access_key: get("access_key").unwrap_or_default(),
        secret_key: Secret::from(get("secret_key").unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_settings_are_checked_on_write() {
        assert!(schema::validate("profiles/gpu-batch/network", "none").is_ok());
        assert!(schema::validate("profiles/gpu-batch/gpus", "true").is_ok());
        assert!(schema::validate("profiles/gpu-batch/constants/DOCKER_TAG", "22.04").is_ok());
        assert!(schema::validate("profiles/gpu-batch/constants/MY_VAR", "x").is_ok());
        let err = schema::validate("profiles/gpu-batch/constants/DOCKER_TAGG", "x").unwrap_err();
        assert!(err.to_string().contains("DOCKER_TAGG"), "{err}");
        let err = schema::validate("profiles/docker-batch/ssh", "true").unwrap_err();
        assert!(err.to_string().contains("built-in"), "{err}");
        assert!(schema::validate("profiles/p/ssh", "yes").is_err());
        assert!(schema::validate("profiles/p/network", "-bad").is_err());
        assert!(schema::validate("profiles/p/colour", "x").is_err());
        assert_eq!(schema::shown("storage/s3/secret_key", "s"), "***");
    }

    #[test]
    fn profiles_and_the_store_are_read_from_the_tree() {
        let tree: FlatTree = [
            ("profiles/render/network", "none"),
            ("profiles/render/constants/DOCKER_REPO", "team/render"),
            ("storage/s3/access_key", "AK"),
            ("storage/s3/secret_key", "hunter2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = profiles(&tree);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].network, "none");
        assert_eq!(p[0].constants["DOCKER_REPO"], "team/render");
        let s = s3(&tree).expect("store");
        assert_eq!(s.region, "us-east-1");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn the_store_and_the_log_shipping_read_one_s3_connection_alike() {
        let tree: FlatTree = [
            ("storage/s3/endpoint", " http://127.0.0.1:9000/ "),
            ("storage/s3/region", ""),
            ("storage/s3/access_key", "AK"),
            ("storage/s3/secret_key", "hunter2"),
            ("vast_api/logs/endpoint", "http://127.0.0.1:9000/"),
            ("vast_api/logs/bucket", "logs"),
            ("vast_api/logs/access_key", "AK"),
            ("vast_api/logs/secret_key", "hunter2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let store = s3(&tree).expect("store");
        assert_eq!(store.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(store.region, "us-east-1");
        let logs = crate::config::vast::VastSettings::from_tree(&tree)
            .logs
            .expect("log shipping");
        assert_eq!(logs.s3, store);
        assert_eq!(logs.bucket, "logs");
        assert_eq!(logs.s3.scrub("refused hunter2"), "refused ***");
        // Without a secret there is no store for resources and results.
        let mut no_secret = tree.clone();
        no_secret.insert("storage/s3/secret_key".into(), " ".into());
        assert!(s3(&no_secret).is_none());
    }
}
