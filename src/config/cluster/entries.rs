//! The settings that are lists of entries: registries, volumes and fake GPUs, each
//! checked field by field (a bad entry is reported and left out, the others stay).

use super::*;

/// The entries of a collection (`docker/volumes/`): entry name → field → value, numbered
/// entries in numeric order, named ones after them.
fn entries<'a>(tree: &'a FlatTree, prefix: &str) -> Vec<(String, BTreeMap<&'a str, &'a str>)> {
    let mut entries: BTreeMap<String, BTreeMap<&str, &str>> = BTreeMap::new();
    for (key, value) in tree.range(prefix.to_string()..) {
        let Some(rest) = key.strip_prefix(prefix) else {
            break;
        };
        if let Some((entry, field)) = rest.split_once('/') {
            entries
                .entry(entry.to_string())
                .or_default()
                .insert(field, value);
        }
    }
    let mut out: Vec<_> = entries.into_iter().collect();
    out.sort_by_key(|(n, _)| (n.parse::<u64>().unwrap_or(u64::MAX), n.clone()));
    out
}

pub(super) fn registries(tree: &FlatTree, problems: &mut Vec<ConfigError>) -> Vec<Registry> {
    let mut out: Vec<Registry> = Vec::new();
    for (name, fields) in entries(tree, "docker/registries/") {
        let key = format!("docker/registries/{name}");
        let Some(host) = fields
            .get("url")
            .and_then(|v| schema::registry_host(v).ok())
        else {
            problems.push(ConfigError::invalid(
                format!("{key}/url"),
                "a registry needs a `url`",
            ));
            continue;
        };
        if out.iter().any(|r| r.host == host) {
            problems.push(ConfigError::invalid(
                format!("{key}/url"),
                format!("`{host}` is given by another registry entry"),
            ));
            continue;
        }
        let username = fields.get("username").copied().unwrap_or_default();
        let password = fields.get("password").copied().unwrap_or_default();
        if username.is_empty() != password.is_empty() {
            let missing = if username.is_empty() {
                "username"
            } else {
                "password"
            };
            problems.push(ConfigError::invalid(
                format!("{key}/{missing}"),
                "a registry with credentials needs both `username` and `password`",
            ));
            continue;
        }
        out.push(Registry {
            name,
            host,
            username: username.to_string(),
            password: password.into(),
        });
    }
    out
}

pub(super) fn volumes(tree: &FlatTree, problems: &mut Vec<ConfigError>) -> Vec<Volume> {
    let mut out = Vec::new();
    for (name, fields) in entries(tree, "docker/volumes/") {
        let key = format!("docker/volumes/{name}");
        let missing: Vec<&str> = ["src", "dest"]
            .into_iter()
            .filter(|f| !fields.contains_key(f))
            .collect();
        if !missing.is_empty() {
            problems.push(ConfigError::invalid(
                key,
                format!(
                    "a volume needs `src` and `dest` (missing `{}`)",
                    missing.join("`, `")
                ),
            ));
            continue;
        }
        out.push(Volume {
            name,
            src: PathBuf::from(fields["src"]),
            dest: fields["dest"].trim_end_matches('/').to_string(),
            read_only: fields.get("mode").is_some_and(|m| m.trim() == "ro"),
            on: fields.get("on").map(|s| s.to_string()),
        });
    }
    out
}

pub(super) fn fake_gpus(tree: &FlatTree, problems: &mut Vec<ConfigError>) -> Vec<FakeGpu> {
    let mut gpus: Vec<FakeGpu> = Vec::new();
    for (name, fields) in entries(tree, "docker/fake_gpus/") {
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
