//! TOML ⇄ flat key tree.
//!
//! etcd holds one string per leaf: `[agent] heartbeat_interval = "5s"` becomes
//! `agent/heartbeat_interval = "5s"`, and arrays become numbered segments
//! (`docker/fake_gpus/0/id`). [`unflatten`] turns a flat tree back into TOML, typing each
//! value as the schema says.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::schema::{self, ConfigError};

/// Flat settings: `a/b/c` → raw string value, sorted by key.
pub type FlatTree = BTreeMap<String, String>;

/// Flattens a TOML table into `a/b/c` keys with string values.
pub fn flatten(table: &Table) -> Result<FlatTree, ConfigError> {
    let mut out = FlatTree::new();
    for (k, v) in table {
        flatten_value(k, v, &mut out)?;
    }
    Ok(out)
}

fn flatten_value(path: &str, value: &Value, out: &mut FlatTree) -> Result<(), ConfigError> {
    match value {
        Value::Table(t) => {
            for (k, v) in t {
                check_segment(path, k)?;
                flatten_value(&format!("{path}/{k}"), v, out)?;
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten_value(&format!("{path}/{i}"), v, out)?;
            }
        }
        Value::String(s) => {
            out.insert(path.to_string(), s.clone());
        }
        Value::Integer(i) => {
            out.insert(path.to_string(), i.to_string());
        }
        Value::Float(f) => {
            out.insert(path.to_string(), f.to_string());
        }
        Value::Boolean(b) => {
            out.insert(path.to_string(), b.to_string());
        }
        Value::Datetime(d) => {
            out.insert(path.to_string(), d.to_string());
        }
    }
    Ok(())
}

fn check_segment(path: &str, segment: &str) -> Result<(), ConfigError> {
    if segment.is_empty() || segment.contains('/') {
        return Err(ConfigError::invalid(
            format!("{path}/{segment}"),
            "key segments must be non-empty and must not contain `/`",
        ));
    }
    Ok(())
}

/// Builds a TOML table from a flat tree. Values are typed by the schema (durations and
/// strings stay strings, integers and booleans become TOML numbers and booleans); keys whose
/// children are `0, 1, 2, …` become arrays.
pub fn unflatten(flat: &FlatTree) -> Table {
    let mut root = Table::new();
    for (key, raw) in flat {
        let segments: Vec<&str> = key.split('/').collect();
        insert(&mut root, &segments, schema::typed_value(key, raw));
    }
    arrays_from_numbered(Value::Table(root))
        .as_table()
        .cloned()
        .unwrap_or_default()
}

fn insert(table: &mut Table, segments: &[&str], value: Value) {
    match segments {
        [] => {}
        [last] => {
            table.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let child = table
                .entry((*first).to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            if !child.is_table() {
                *child = Value::Table(Table::new());
            }
            if let Value::Table(t) = child {
                insert(t, rest, value);
            }
        }
    }
}

fn arrays_from_numbered(value: Value) -> Value {
    match value {
        Value::Table(t) => {
            let numbered = !t.is_empty() && (0..t.len()).all(|i| t.contains_key(&i.to_string()));
            if numbered {
                let mut items: Vec<(usize, Value)> = t
                    .into_iter()
                    .filter_map(|(k, v)| k.parse::<usize>().ok().map(|i| (i, v)))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(
                    items
                        .into_iter()
                        .map(|(_, v)| arrays_from_numbered(v))
                        .collect(),
                )
            } else {
                Value::Table(
                    t.into_iter()
                        .map(|(k, v)| (k, arrays_from_numbered(v)))
                        .collect(),
                )
            }
        }
        other => other,
    }
}

/// The sub-tree under `prefix` (a key or a `a/b` path), keys relative to the tree root.
pub fn subtree(flat: &FlatTree, prefix: &str) -> FlatTree {
    let prefix = prefix.trim_matches('/');
    flat.iter()
        .filter(|(k, _)| *k == prefix || k.starts_with(&format!("{prefix}/")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_tables_and_arrays_flatten_to_slash_keys() {
        let table: Table = toml::from_str(
            r#"
            [agent]
            heartbeat_interval = "2s"
            [[docker.fake_gpus]]
            id = "GPU-0d6d1a2a-0000-0000-0000-000000000001"
            ram_total = "16GiB"
            "#,
        )
        .unwrap();
        let flat = flatten(&table).unwrap();
        assert_eq!(flat["agent/heartbeat_interval"], "2s");
        assert_eq!(flat["docker/fake_gpus/0/ram_total"], "16GiB");
    }

    #[test]
    fn unflatten_restores_arrays_and_types() {
        let mut flat = FlatTree::new();
        flat.insert("docker/fake_gpus/0/name".into(), "A".into());
        flat.insert("docker/fake_gpus/1/name".into(), "B".into());
        flat.insert("agent/heartbeat_interval".into(), "5s".into());
        let table = unflatten(&flat);
        let gpus = table["docker"]["fake_gpus"].as_array().unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1]["name"].as_str(), Some("B"));
        assert_eq!(flatten(&table).unwrap(), flat);
    }

    #[test]
    fn a_slash_inside_a_key_is_refused_with_its_path() {
        let table: Table = toml::from_str("[agent]\n\"a/b\" = 1\n").unwrap();
        let err = flatten(&table).unwrap_err().to_string();
        assert!(err.contains("agent/a/b"), "{err}");
    }
}
