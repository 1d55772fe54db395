//! Every cluster setting deckhand knows: its key pattern, kind and meaning.
//!
//! Keys are relative to `config/` (e.g. `agent/heartbeat_interval`); a `*` segment matches
//! any one segment (`docker/fake_gpus/*/id`). `deckhand config set/put` refuse a key or
//! value this schema rejects; the agent ignores such a value in etcd (keeping the last good
//! one) and logs it once.

mod keys;
mod kinds;
mod values;

pub use keys::*;
pub use kinds::*;
pub use values::*;

use kinds::check_kind;

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

/// Whether `key` holds a secret.
pub fn is_secret(key: &str) -> bool {
    // A profile's default constant that is write-only on a kernel is secret here too.
    if let Some(constant) = key
        .strip_prefix("profiles/")
        .and_then(|r| r.split_once("/constants/"))
        .map(|(_, c)| c)
    {
        return crate::config::constants::mask_for(constant).is_some();
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
