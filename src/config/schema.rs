//! Every cluster setting deckhand knows: its key pattern, kind and meaning.
//!
//! Keys are relative to `config/` (e.g. `agent/heartbeat_interval`); a `*` segment matches
//! any one segment (`docker/fake_gpus/*/id`). `deckhand config set/put` refuse a key or
//! value this schema rejects; the agent ignores such a value in etcd (keeping the last good
//! one) and logs it once.

use std::time::Duration;

use toml::Value;

/// A setting that cannot be used, with the key it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown setting `{key}`{hint}")]
    Unknown { key: String, hint: String },
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The key the error is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Unknown { key, .. } | Self::Invalid { key, .. } => key,
        }
    }
}

/// What a value must look like.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `500ms`, `5s`, `2m` (humantime), within bounds.
    Duration {
        min: Duration,
        max: Duration,
    },
    /// A byte size: `1024`, `512MiB`, `16GB`.
    Bytes,
    /// A decimal number within bounds.
    Float {
        min: f64,
        max: f64,
    },
    /// An integer within bounds.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// Free text of at most 256 characters.
    Text,
    /// An absolute filesystem path.
    AbsPath,
    /// A GPU UUID: `GPU-<uuid>` or `<uuid>`.
    GpuId,
    /// An inclusive port range `low-high`.
    PortRange,
    /// Comma-separated absolute paths.
    PathList,
    /// Free text that is never shown: `config get`, logs and errors read `***`.
    Secret,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// Comma-separated IP addresses.
    IpList,
    /// A shell-style wildcard (fnmatch): `*`, `?`, `[abc]`.
    Glob,
    /// A Docker object name: letters, digits, `_`, `.`, `-`.
    DockerName,
    /// A registry address: `host[:port]`, optionally with `https://` or `http://`.
    RegistryUrl,
    /// An absolute path inside the container that does not cover the kernel's home.
    ContainerPath,
    /// An `http://` or `https://` URL.
    HttpUrl,
    /// A Vast.ai offer filter (`vast_api/offer_filters/<field>/<op>`): the key names an API
    /// field and operator, the value fits the field.
    OfferFilter,
    /// A `profiles/<name>/…` setting: the key names the profile and field, the value fits
    /// the field ([`super::profiles::check`]).
    ProfileSetting,
}

/// One known setting.
#[derive(Debug)]
pub struct KeySpec {
    pub pattern: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The known settings. Later features add their keys here.
pub static KEYS: &[KeySpec] = &[
    KeySpec {
        pattern: "agent/heartbeat_interval",
        kind: Kind::Duration {
            min: Duration::from_millis(100),
            max: secs(3600),
        },
        help: "how often agents report to the manager (default 5s); also sent at once on change",
    },
    KeySpec {
        pattern: "agent/lease_ttl",
        kind: Kind::Duration {
            min: secs(2),
            max: secs(3600),
        },
        help: "TTL of an agent's etcd registration lease (default 10s); applies to the next lease",
    },
    KeySpec {
        pattern: "agent/region",
        kind: Kind::Text,
        help: "region reported in the registration and heartbeats",
    },
    KeySpec {
        pattern: "agent/scaling_group",
        kind: Kind::Text,
        help: "scaling group reported in the registration and heartbeats (default `default`)",
    },
    KeySpec {
        pattern: "resource/reserved_cpu",
        kind: Kind::Float {
            min: 0.0,
            max: 4096.0,
        },
        help: "CPU cores kept back from kernels (default 0)",
    },
    KeySpec {
        pattern: "resource/reserved_memory",
        kind: Kind::Bytes,
        help: "memory kept back from kernels, e.g. `1GiB` (default 0)",
    },
    KeySpec {
        pattern: "resource/reserved_disk",
        kind: Kind::Bytes,
        help: "scratch disk kept back from kernels, e.g. `10GiB` (default 0)",
    },
    KeySpec {
        pattern: "gpu/nvml_library",
        kind: Kind::AbsPath,
        help: "path of the NVML library to load (default: libnvidia-ml.so.1 from the loader path)",
    },
    KeySpec {
        pattern: "docker/fake_gpus/*/id",
        kind: Kind::GpuId,
        help: "UUID of a fake GPU, `GPU-<uuid>` or `<uuid>`",
    },
    KeySpec {
        pattern: "docker/fake_gpus/*/name",
        kind: Kind::Text,
        help: "model name of a fake GPU",
    },
    KeySpec {
        pattern: "docker/fake_gpus/*/ram_total",
        kind: Kind::Bytes,
        help: "memory of a fake GPU, e.g. `16GiB`",
    },
    KeySpec {
        pattern: "docker/registries/*/url",
        kind: Kind::RegistryUrl,
        help: "registry address, `host[:port]`; images on it are pulled with these credentials",
    },
    KeySpec {
        pattern: "docker/registries/*/username",
        kind: Kind::Text,
        help: "registry user name",
    },
    KeySpec {
        pattern: "docker/registries/*/password",
        kind: Kind::Secret,
        help: "registry password (never shown: `config get` prints `***`)",
    },
    KeySpec {
        pattern: "docker/cache_usage",
        kind: Kind::Choice(&CACHE_USAGES),
        help: "cache_first | remote_first (default) | require_pull; a kernel spec may override it",
    },
    KeySpec {
        pattern: "docker/pull_timeout",
        kind: Kind::Duration {
            min: secs(1),
            max: secs(24 * 3600),
        },
        help: "longest an image pull may take (default 30m)",
    },
    KeySpec {
        pattern: "docker/pull_inactivity_timeout",
        kind: Kind::Duration {
            min: secs(1),
            max: secs(3600),
        },
        help: "a pull with no progress for this long fails (default 2m)",
    },
    KeySpec {
        pattern: "docker/image_gc_after",
        kind: Kind::Duration {
            min: secs(1),
            max: secs(365 * 24 * 3600),
        },
        help: "remove images no kernel used for this long, oldest first (default off)",
    },
    KeySpec {
        pattern: "docker/volumes/*/src",
        kind: Kind::AbsPath,
        help: "host directory of a volume bind-mounted into matching kernels",
    },
    KeySpec {
        pattern: "docker/volumes/*/dest",
        kind: Kind::ContainerPath,
        help: "where the volume appears in the container (not over /home/work or /home/config)",
    },
    KeySpec {
        pattern: "docker/volumes/*/mode",
        kind: Kind::Choice(&["ro", "rw"]),
        help: "ro | rw (default rw)",
    },
    KeySpec {
        pattern: "docker/volumes/*/on",
        kind: Kind::Glob,
        help: "shell wildcard on the kernel's slug (`ml_*`); absent = every kernel",
    },
    KeySpec {
        pattern: "docker/network",
        kind: Kind::DockerName,
        help: "Docker network kernels join (default: the engine's bridge)",
    },
    KeySpec {
        pattern: "docker/dns",
        kind: Kind::IpList,
        help: "DNS servers set on every kernel, comma-separated",
    },
    KeySpec {
        pattern: "docker/shared_process_volume",
        kind: Kind::Bool,
        help: "kernels of one process_id share a Docker volume for process data (default false: a host dir under the scratch root)",
    },
    KeySpec {
        pattern: "docker/process_data_dest",
        kind: Kind::ContainerPath,
        help: "where process data appears in kernels (default /data)",
    },
    KeySpec {
        pattern: "gpu/unhealthy_policy",
        kind: Kind::Choice(&["keep", "stop"]),
        help: "a kernel whose GPU NVML marks unhealthy: keep it running (default; it gets an event) or stop it",
    },
    KeySpec {
        pattern: "agent/on_shutdown",
        kind: Kind::Choice(&["keep", "stop"]),
        help: "on SIGTERM: keep kernels running (default) or stop them (grace period) first",
    },
    KeySpec {
        pattern: "agent/kernel_creation_concurrency",
        kind: Kind::Int { min: 1, max: 256 },
        help: "kernels created at once (default 4); more requests queue",
    },
    KeySpec {
        pattern: "container/kernel_uid",
        kind: Kind::Int {
            min: 0,
            max: 2_147_483_647,
        },
        help: "uid kernels run as and own their scratch home with (default 1000)",
    },
    KeySpec {
        pattern: "container/kernel_gid",
        kind: Kind::Int {
            min: 0,
            max: 2_147_483_647,
        },
        help: "gid kernels run as and own their scratch home with (default 1000)",
    },
    KeySpec {
        pattern: "container/port_range",
        kind: Kind::PortRange,
        help: "host ports given to kernels' exposed ports, `low-high` (default 30000-31000)",
    },
    KeySpec {
        pattern: "container/stop_grace_period",
        kind: Kind::Duration {
            min: Duration::ZERO,
            max: secs(3600),
        },
        help: "SIGTERM → SIGKILL delay of `stop` when the kernel sets none (default 10s)",
    },
    KeySpec {
        pattern: "container/shutdown_grace",
        kind: Kind::Duration {
            min: Duration::ZERO,
            max: secs(3600),
        },
        help: "how long a profile kernel's DOCKER_SHUTDOWN_CMD may take before the kernel is stopped (default 30s)",
    },
    KeySpec {
        pattern: "container/keep_scratch",
        kind: Kind::Bool,
        help: "keep a kernel's scratch dir when it is removed (default false)",
    },
    KeySpec {
        pattern: "container/stage_in_dirs",
        kind: Kind::PathList,
        help: "host directories stage-in files and bind mounts may come from (default none)",
    },
    KeySpec {
        pattern: "security/allow_privileged",
        kind: Kind::Bool,
        help: "allow kernels with `privileged` (default false)",
    },
    KeySpec {
        pattern: "security/allow_host_namespaces",
        kind: Kind::Bool,
        help: "allow kernels with host network, ipc, pid or uts namespaces (default false)",
    },
    KeySpec {
        pattern: "agent/default_runtime",
        kind: Kind::Choice(&["docker", "vastai"]),
        help: "where kernels run when `run` names no runtime: docker (default) or vastai",
    },
    KeySpec {
        pattern: "security/allow_docker_socket",
        kind: Kind::Bool,
        help: "allow stage-in mounts that expose the Docker socket (default false)",
    },
];

/// The values of `docker/cache_usage` (and a kernel spec's `cache_usage`).
pub const CACHE_USAGES: [&str; 3] = ["cache_first", "remote_first", "require_pull"];

/// Every known setting: the core keys, the Vast.ai runtime's, profiles and storage.
pub fn all_keys() -> impl Iterator<Item = &'static KeySpec> {
    KEYS.iter()
        .chain(super::vast::KEYS.iter())
        .chain(super::profiles::KEYS.iter())
}

/// Whether `key` holds a secret.
pub fn is_secret(key: &str) -> bool {
    // A profile's default constant that is write-only on a kernel is secret here too.
    if let Some(constant) = key
        .strip_prefix("profiles/")
        .and_then(|r| r.split_once("/constants/"))
        .map(|(_, c)| c)
    {
        return super::constants::mask_for(constant).is_some();
    }
    matches!(lookup(key).map(|s| s.kind), Ok(Kind::Secret))
}

/// `value` as it may be shown: `***` for secrets.
pub fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        "***"
    } else {
        value
    }
}

/// Collections (`docker/fake_gpus/`): a per-agent layer that sets any key under one of these
/// prefixes replaces the whole global collection instead of merging entry by entry.
pub fn collection_prefixes() -> impl Iterator<Item = String> {
    all_keys().filter_map(|k| {
        k.pattern
            .find("/*")
            .map(|i| format!("{}/", &k.pattern[..i]))
    })
}

fn matches(pattern: &str, key: &str) -> bool {
    let mut p = pattern.split('/');
    let mut k = key.split('/');
    loop {
        match (p.next(), k.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The spec of `key`, or an error naming the key and nearby known keys.
pub fn lookup(key: &str) -> Result<&'static KeySpec, ConfigError> {
    if let Some(spec) = all_keys().find(|s| matches(s.pattern, key)) {
        return Ok(spec);
    }
    let section = key.split('/').next().unwrap_or_default();
    let near: Vec<&str> = all_keys()
        .map(|s| s.pattern)
        .filter(|p| p.split('/').next() == Some(section))
        .collect();
    let hint = if near.is_empty() {
        let sections: std::collections::BTreeSet<&str> = all_keys()
            .filter_map(|s| s.pattern.split('/').next())
            .collect();
        format!(
            " (known sections: {})",
            sections.into_iter().collect::<Vec<_>>().join(", ")
        )
    } else {
        format!(" (known keys here: {})", near.join(", "))
    };
    Err(ConfigError::Unknown {
        key: key.to_string(),
        hint,
    })
}

/// Checks that `key` is known and `value` fits its kind.
pub fn validate(key: &str, value: &str) -> Result<(), ConfigError> {
    let spec = lookup(key)?;
    let checked = match spec.kind {
        Kind::OfferFilter => super::vast::check_filter(key, value),
        Kind::ProfileSetting => super::profiles::check(key, value),
        kind => check_kind(kind, value),
    };
    checked.map_err(|reason| ConfigError::invalid(key, reason))
}

/// Checks `value` against `kind` alone (for checks that combine kinds).
pub fn validate_kind(kind: Kind, value: &str) -> Result<(), String> {
    check_kind(kind, value)
}

fn check_kind(kind: Kind, value: &str) -> Result<(), String> {
    match kind {
        Kind::Duration { min, max } => {
            let d = parse_duration(value)?;
            if d < min || d > max {
                return Err(format!(
                    "`{value}` is out of range {}..{}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ));
            }
        }
        Kind::Bytes => {
            parse_bytes(value)?;
        }
        Kind::Float { min, max } => {
            let f: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{value}` is not a number"))?;
            if !f.is_finite() || f < min || f > max {
                return Err(format!("`{value}` is out of range {min}..{max}"));
            }
        }
        Kind::Int { min, max } => {
            let i: i64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{value}` is not an integer"))?;
            if i < min || i > max {
                return Err(format!("`{value}` is out of range {min}..{max}"));
            }
        }
        Kind::Bool => {
            parse_bool(value)?;
        }
        Kind::Text => {
            if value.chars().count() > 256 || value.chars().any(char::is_control) {
                return Err("expected at most 256 printable characters".into());
            }
        }
        Kind::AbsPath => {
            if !value.starts_with('/') || value.contains('\0') {
                return Err(format!("`{value}` is not an absolute path"));
            }
        }
        Kind::GpuId => {
            normalize_gpu_id(value)?;
        }
        Kind::PortRange => {
            parse_port_range(value)?;
        }
        Kind::PathList => {
            parse_path_list(value)?;
        }
        Kind::Secret => {
            if value.is_empty()
                || value.chars().count() > 256
                || value.chars().any(char::is_control)
            {
                return Err("expected 1 to 256 printable characters (value not shown)".into());
            }
        }
        Kind::Choice(words) => {
            if !words.contains(&value.trim()) {
                return Err(format!("`{value}`: expected one of {}", words.join(", ")));
            }
        }
        Kind::IpList => {
            parse_ip_list(value)?;
        }
        Kind::Glob => {
            glob::Pattern::new(value)
                .map_err(|e| format!("`{value}` is not a shell wildcard: {}", e.msg))?;
        }
        Kind::DockerName => {
            let ok = !value.is_empty()
                && value.len() <= 128
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && value
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric());
            if !ok {
                return Err(format!(
                    "`{value}` is not a Docker name (letters, digits, `_`, `.`, `-`)"
                ));
            }
        }
        Kind::RegistryUrl => {
            registry_host(value)?;
        }
        Kind::ContainerPath => {
            check_container_dest(value)?;
        }
        Kind::HttpUrl => {
            let v = value.trim();
            let rest = v
                .strip_prefix("https://")
                .or_else(|| v.strip_prefix("http://"))
                .ok_or_else(|| format!("`{value}` is not an http:// or https:// URL"))?;
            if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("`{value}` is not an http:// or https:// URL"));
            }
        }
        // Checked with their key, in `validate`.
        Kind::OfferFilter | Kind::ProfileSetting => {}
    }
    Ok(())
}

/// `https://reg.example.com:5000/` → `reg.example.com:5000`: the host part an image
/// reference names its registry by.
pub fn registry_host(value: &str) -> Result<String, String> {
    let v = value.trim();
    let bare = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .unwrap_or(v)
        .trim_end_matches('/');
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !ok {
        return Err(format!(
            "`{value}` is not a registry address; write it like `registry.example.com:5000`"
        ));
    }
    Ok(bare.to_ascii_lowercase())
}

/// A mount destination: absolute, no `..`, and not `/`, `/home`, or anything at or under
/// `/home/work` or `/home/config` (the kernel's home and config).
pub fn check_container_dest(value: &str) -> Result<(), String> {
    let path = std::path::Path::new(value);
    if !path.is_absolute()
        || value.contains('\0')
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("`{value}` is not an absolute path without `..`"));
    }
    for home in ["/home/work", "/home/config"] {
        let home = std::path::Path::new(home);
        if path.starts_with(home) || home.starts_with(path) {
            return Err(format!(
                "`{value}` would cover {} (the kernel's own directory)",
                home.display()
            ));
        }
    }
    Ok(())
}

/// `1.1.1.1, 9.9.9.9` → the addresses.
pub fn parse_ip_list(value: &str) -> Result<Vec<std::net::IpAddr>, String> {
    let mut out = Vec::new();
    for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(
            p.parse()
                .map_err(|_| format!("`{p}` is not an IP address"))?,
        );
    }
    Ok(out)
}

/// Parses `5s`, `500ms`, `1m 30s`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        format!("`{value}` is not a duration ({e}); write it like `500ms`, `5s` or `2m`")
    })
}

/// Parses a size the way Docker does (go-units `RAMInBytes`): a number, optionally followed by
/// one space, then an optional unit `b k m g t p` — case-insensitive, bare or with a trailing
/// `b`, `i` or `ib` — all powers of 1024. `16m`, `16MB`, `16mi` and `16MiB` are each 16 MiB
/// (16777216), as in `docker run -m 16m`; `1.5g` is 1.5 GiB. The `i` form (`2Gi`) is what
/// go-units' pattern `^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$` and deckhand's earlier parser
/// took, so stored values written that way keep their meaning. A number Docker cannot read
/// (`1.2.3`, an exponent, two spaces before the unit) is refused. This is the one size parser:
/// run flags, spec fields and settings all read sizes through it.
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("`{value}` is not a size ({why}); write it like `512m`, `512MiB` or `16g` (powers of 1024, as Docker reads them)")
    };
    let v = value.trim();
    // As go-units splits it: the number ends at the last digit, dot or space; one space
    // between the number and the unit is dropped, and what follows is the unit.
    let Some(sep) = v.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ') else {
        return Err(bad("no number"));
    };
    let (num, unit) = (
        v[..=sep].strip_suffix(' ').unwrap_or(&v[..=sep]),
        &v[sep + 1..],
    );
    if !num.chars().any(|c| c.is_ascii_digit())
        || !num.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return Err(bad("not a number"));
    }
    let n: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let unit = unit.to_ascii_lowercase();
    let shift = match unit.as_bytes() {
        [] | [b'b'] => 0,
        [u] | [u, b'b'] | [u, b'i'] | [u, b'i', b'b'] => match u {
            b'k' => 10,
            b'm' => 20,
            b'g' => 30,
            b't' => 40,
            b'p' => 50,
            _ => return Err(bad(&format!("unknown unit `{unit}`"))),
        },
        _ => return Err(bad(&format!("unknown unit `{unit}`"))),
    };
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes as u64)
}

/// A size for people, in binary units (`16 MiB`, `1.5 GiB`), so what is shown reads back
/// through [`parse_bytes`] as the same amount.
pub fn show_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{value}` is not `true` or `false`")),
    }
}

/// `30000-31000` → (30000, 31000); low ≥ 1, low ≤ high.
pub fn parse_port_range(value: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{value}` is not a port range; write it like `30000-31000`");
    let (lo, hi) = value.trim().split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(format!("`{value}`: the range must satisfy 1 ≤ low ≤ high"));
    }
    Ok((lo, hi))
}

/// `/data,/srv/share` → absolute, `..`-free paths.
pub fn parse_path_list(value: &str) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out = Vec::new();
    for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let path = std::path::Path::new(p);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!("`{p}` is not an absolute path without `..`"));
        }
        out.push(path.to_path_buf());
    }
    Ok(out)
}

/// `GPU-<uuid>` or `<uuid>` → `GPU-<uuid>` (lower-case hex).
pub fn normalize_gpu_id(value: &str) -> Result<String, String> {
    let raw = value.trim();
    let bare = raw.strip_prefix("GPU-").unwrap_or(raw);
    uuid::Uuid::try_parse(bare)
        .map(|u| format!("GPU-{}", u.hyphenated()))
        .map_err(|_| format!("`{value}` is not a GPU id; write `GPU-<uuid>` or `<uuid>`"))
}

/// The TOML value for a raw string, typed by the schema (for `config get` output).
pub fn typed_value(key: &str, raw: &str) -> Value {
    match lookup(key).map(|s| s.kind) {
        Ok(Kind::Int { .. }) => raw
            .parse::<i64>()
            .map(Value::Integer)
            .unwrap_or_else(|_| Value::String(raw.into())),
        Ok(Kind::Float { .. }) => raw
            .parse::<f64>()
            .map(Value::Float)
            .unwrap_or_else(|_| Value::String(raw.into())),
        Ok(Kind::Bool) => parse_bool(raw)
            .map(Value::Boolean)
            .unwrap_or_else(|_| Value::String(raw.into())),
        Ok(Kind::OfferFilter) => parse_bool(raw)
            .map(Value::Boolean)
            .or_else(|_| raw.parse::<i64>().map(Value::Integer))
            .or_else(|_| raw.parse::<f64>().map(Value::Float))
            .unwrap_or_else(|_| Value::String(raw.into())),
        _ => Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_segments_match_one_segment() {
        assert!(lookup("docker/fake_gpus/0/id").is_ok());
        assert!(lookup("docker/fake_gpus/0/1/id").is_err());
        assert!(lookup("docker/fake_gpus//id").is_err());
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_known_neighbours() {
        let err = validate("agent/heartbeat", "5s").unwrap_err().to_string();
        assert!(err.contains("`agent/heartbeat`"), "{err}");
        assert!(err.contains("agent/heartbeat_interval"), "{err}");
    }

    #[test]
    fn values_are_checked_against_their_kind() {
        assert!(validate("agent/heartbeat_interval", "2s").is_ok());
        let err = validate("agent/heartbeat_interval", "banana").unwrap_err();
        assert_eq!(err.key(), "agent/heartbeat_interval");
        assert!(validate("agent/heartbeat_interval", "1ms").is_err());
        assert!(validate("resource/reserved_memory", "1GiB").is_ok());
        assert!(validate("resource/reserved_memory", "lots").is_err());
        assert!(validate("resource/reserved_cpu", "-1").is_err());
        assert!(validate("resource/reserved_cpu", "NaN").is_err());
        assert!(validate("gpu/nvml_library", "lib.so").is_err());
        assert!(validate("docker/fake_gpus/0/id", "GPU-not-a-uuid").is_err());
    }

    #[test]
    fn sizes_read_as_docker_reads_them() {
        // The literal values of `docker run -m 16m` and `--shm-size 10g`.
        assert_eq!(parse_bytes("16m"), Ok(16_777_216));
        assert_eq!(parse_bytes("10g"), Ok(10_737_418_240));
        for same in [
            "16M",
            "16mb",
            "16MB",
            "16MiB",
            "16mib",
            "16 MiB",
            "16777216",
            "16777216b",
            "16mi",
            "16Mi",
            "16 mi",
        ] {
            assert_eq!(parse_bytes(same), Ok(16 << 20), "{same}");
        }
        assert_eq!(parse_bytes("1k"), Ok(1024));
        assert_eq!(parse_bytes("2t"), Ok(2 << 40));
        assert_eq!(parse_bytes("1p"), Ok(1 << 50));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("2Gi"), Ok(2 << 30));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1gb"), Ok(1 << 30));
        assert_eq!(parse_bytes("5b"), Ok(5));
        assert_eq!(parse_bytes("5B"), Ok(5));
        // Docker reads these numbers too (Go's float parsing).
        assert_eq!(parse_bytes(".5g"), Ok(1 << 29));
        assert_eq!(parse_bytes("1.m"), Ok(1 << 20));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in [
            "", "m", "lots", "-1m", "16x", "16mbb", "16ibm", "16 m b", "1e3", "16gbit", "1  m",
            "1 2m", "1.2.3m", ".m", "16bi", "16ii", "1e", "1eb", "1EiB", "16mbi",
        ] {
            let err = parse_bytes(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        // What is shown reads back as the same amount.
        assert_eq!(show_bytes(16 << 20), "16.0 MiB");
        assert_eq!(parse_bytes(&show_bytes(10 << 30)), Ok(10 << 30));
    }

    #[test]
    fn gpu_ids_are_normalised_with_the_gpu_prefix() {
        let id = "0d6d1a2a-1111-2222-3333-444455556666";
        assert_eq!(normalize_gpu_id(id).unwrap(), format!("GPU-{id}"));
        assert_eq!(
            normalize_gpu_id(&format!("GPU-{id}")).unwrap(),
            format!("GPU-{id}")
        );
    }

    #[test]
    fn docker_settings_are_checked_and_secrets_are_masked() {
        assert!(validate("docker/volumes/v/dest", "/data").is_ok());
        for bad in [
            "data",
            "/home/work",
            "/home/work/x",
            "/home",
            "/",
            "/a/../b",
        ] {
            assert!(validate("docker/volumes/v/dest", bad).is_err(), "{bad}");
        }
        assert!(validate("docker/volumes/v/on", "ml_*").is_ok());
        assert!(validate("docker/volumes/v/on", "[a").is_err());
        assert!(validate("docker/cache_usage", "cache_first").is_ok());
        assert!(validate("docker/cache_usage", "always").is_err());
        assert!(validate("docker/dns", "1.1.1.1, ::1").is_ok());
        assert!(validate("docker/dns", "one").is_err());
        assert!(validate("docker/network", "-x").is_err());
        let err = validate("docker/registries/r/password", "").unwrap_err();
        assert_eq!(err.key(), "docker/registries/r/password");
        assert_eq!(shown("docker/registries/r/password", "hunter2"), "***");
        assert_eq!(shown("docker/network", "n1"), "n1");
        assert_eq!(
            registry_host("http://127.0.0.1:5000/").unwrap(),
            "127.0.0.1:5000"
        );
    }
}
