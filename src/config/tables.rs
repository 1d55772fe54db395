//! Table-valued keys: a key of the schema's tree that holds settings below it rather than a
//! value (`vast_api/offer_filters`, `vast_api/offer_filters/gpu_name`, `docker/volumes/data`,
//! `docker/fake_gpus`, `storage/s3`, `profiles/<name>`, …). `deckhand config set` takes a
//! TOML inline table (or array) for one and writes it flattened exactly as `config put`
//! would, replacing what was under the key.

use super::schema::{self, ConfigError};
use super::tree::{self, FlatTree};

/// Whether `key` (without leading or trailing `/`) is a table of the schema: not a setting
/// itself, but the start of at least one setting's key.
pub fn is_table(key: &str) -> bool {
    if key.is_empty() || schema::lookup(key).is_ok() {
        return false;
    }
    let segments: Vec<&str> = key.split('/').collect();
    schema::all_keys().any(|spec| {
        let pattern: Vec<&str> = spec.pattern.split('/').collect();
        pattern.len() > segments.len()
            && pattern
                .iter()
                .zip(&segments)
                .all(|(p, s)| !s.is_empty() && (*p == "*" || p == s))
    })
}

/// `value` (a TOML inline table like `{gpu_name = {in = ["RTX_4090"]}}`, or an array for a
/// list such as `docker/fake_gpus`) flattened under `key`: `key/gpu_name/in/0 = RTX_4090`.
/// The keys are not validated here.
pub fn flatten_value(key: &str, value: &str) -> Result<FlatTree, ConfigError> {
    let parsed: Result<toml::Table, _> = toml::from_str(&format!("v = {value}"));
    let inner = match parsed.ok().and_then(|mut t| t.remove("v")) {
        Some(v @ (toml::Value::Table(_) | toml::Value::Array(_))) => v,
        _ => {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "`{key}` is a table of settings; give it as a TOML inline table, like '{}'",
                    example(key)
                ),
            ))
        }
    };
    let mut root = toml::Table::new();
    root.insert("v".into(), inner);
    Ok(tree::flatten(&root)?
        .into_iter()
        .map(|(k, v)| (format!("{key}{}", &k[1..]), v))
        .collect())
}

/// An inline table for `key`, for the error message.
fn example(key: &str) -> &'static str {
    if key.starts_with("vast_api/offer_filters") {
        if key == "vast_api/offer_filters" {
            r#"{gpu_name = {in = ["RTX_4090"]}, num_gpus = {gte = 1}}"#
        } else {
            r#"{gte = 1}"#
        }
    } else if key.starts_with("docker/volumes") {
        r#"{src = "/srv", dest = "/data"}"#
    } else if key.starts_with("docker/fake_gpus") {
        r#"[{id = "GPU-…", name = "Fake", ram_total = "16g"}]"#
    } else {
        r#"{field = "value", …}"#
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_the_keys_above_settings() {
        for key in [
            "vast_api/offer_filters",
            "vast_api/offer_filters/gpu_name",
            "vast_api/logs",
            "docker/volumes",
            "docker/volumes/data",
            "docker/fake_gpus",
            "docker/registries/private",
            "storage/s3",
            "profiles/solver",
            "profiles/solver/constants",
            "agent",
        ] {
            assert!(is_table(key), "{key}");
        }
        for key in [
            "agent/heartbeat_interval",
            "vast_api/api_key",
            "nosuch",
            "agent/nosuch",
            "vast_api/offer_filters/gpu_name/in/0/x/y",
        ] {
            assert!(!is_table(key), "{key}");
        }
    }

    #[test]
    fn an_inline_table_flattens_under_its_key_as_put_would() {
        let flat = flatten_value(
            "vast_api/offer_filters",
            r#"{gpu_name = {in = ["RTX_4090", "A100"]}, num_gpus = {gte = 1}}"#,
        )
        .unwrap();
        let keys: Vec<(&str, &str)> = flat.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("vast_api/offer_filters/gpu_name/in/0", "RTX_4090"),
                ("vast_api/offer_filters/gpu_name/in/1", "A100"),
                ("vast_api/offer_filters/num_gpus/gte", "1"),
            ]
        );
        let e = flatten_value("vast_api/offer_filters", "RTX_4090").unwrap_err();
        assert!(e.to_string().contains("TOML inline table"), "{e}");
    }
}
