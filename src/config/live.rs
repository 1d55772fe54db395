//! The agent's live view of its settings: the global layer (`config/…`) overlaid by its
//! own layer (`nodes/agents/<id>/config/…`), validated key by key.
//!
//! A malformed value never replaces a good one: the key keeps its last good value (or its
//! default if it never had one), and the problem is logged once, with the full etcd key,
//! until the value changes again.

use std::collections::{BTreeMap, HashSet};

use super::cluster::ClusterConfig;
use super::schema::{self, ConfigError};
use super::tree::FlatTree;

/// Where a layer lives in etcd, for messages: `/deckhand/ns/config/`.
#[derive(Debug, Clone)]
pub struct Layer {
    pub etcd_prefix: String,
    pub values: FlatTree,
}

/// Keeps the last good value of every key across updates.
#[derive(Debug, Default)]
pub struct LiveConfig {
    last_good: FlatTree,
    reported: HashSet<(String, String)>,
}

impl LiveConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges the layers (later ones win; a layer that touches a collection replaces it
    /// whole), validates each key and returns the config to run with. Problems not yet
    /// reported are returned with the etcd key they came from.
    pub fn apply(&mut self, layers: &[Layer]) -> (ClusterConfig, Vec<String>) {
        let mut merged: BTreeMap<String, (String, String)> = BTreeMap::new();
        for layer in layers {
            for prefix in schema::collection_prefixes() {
                if layer.values.keys().any(|k| k.starts_with(&prefix)) {
                    merged.retain(|k, _| !k.starts_with(&prefix));
                }
            }
            for (k, v) in &layer.values {
                merged.insert(k.clone(), (format!("{}{k}", layer.etcd_prefix), v.clone()));
            }
        }
        let mut messages = Vec::new();
        let mut effective = FlatTree::new();
        let mut seen = HashSet::new();
        for (key, (full_key, value)) in merged {
            match schema::validate(&key, &value) {
                Ok(()) => {
                    effective.insert(key, value);
                }
                Err(err) => {
                    let kept = self.last_good.get(&key).cloned();
                    let pair = (full_key.clone(), value.clone());
                    if !self.reported.contains(&pair) {
                        let kept_note = match (&err, &kept) {
                            (ConfigError::Unknown { .. }, _) => "ignored".to_string(),
                            (_, Some(old)) => format!(
                                "keeping the last good value `{}`",
                                schema::shown(&key, old)
                            ),
                            (_, None) => "using the default".to_string(),
                        };
                        messages.push(format!("{full_key}: {err}; {kept_note}"));
                    }
                    seen.insert(pair);
                    if let Some(old) = kept {
                        effective.insert(key, old);
                    }
                }
            }
        }
        let (cfg, problems) = ClusterConfig::from_tree(&effective);
        for p in problems {
            let pair = (p.key().to_string(), p.to_string());
            if !self.reported.contains(&pair) {
                messages.push(format!("{p}; entry ignored"));
            }
            seen.insert(pair);
        }
        // Forget reports whose value is gone, so a later relapse is reported again.
        self.reported = seen;
        self.last_good = effective;
        (cfg, messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn layer(prefix: &str, pairs: &[(&str, &str)]) -> Layer {
        Layer {
            etcd_prefix: prefix.into(),
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn per_agent_values_win_over_global_ones() {
        let mut live = LiveConfig::new();
        let (cfg, msgs) = live.apply(&[
            layer(
                "/g/",
                &[("agent/region", "eu"), ("agent/heartbeat_interval", "3s")],
            ),
            layer("/a/", &[("agent/region", "us")]),
        ]);
        assert!(msgs.is_empty());
        assert_eq!(cfg.region, "us");
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(3));
    }

    #[test]
    fn a_malformed_value_keeps_the_last_good_one_and_is_reported_once() {
        let mut live = LiveConfig::new();
        live.apply(&[layer("/ns/config/", &[("agent/heartbeat_interval", "2s")])]);
        let bad = [layer(
            "/ns/config/",
            &[("agent/heartbeat_interval", "soon")],
        )];
        let (cfg, msgs) = live.apply(&bad);
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].contains("/ns/config/agent/heartbeat_interval"),
            "{}",
            msgs[0]
        );
        let (cfg, msgs) = live.apply(&bad);
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(2));
        assert!(msgs.is_empty(), "reported twice: {msgs:?}");
    }

    #[test]
    fn an_agent_layer_replaces_the_whole_fake_gpu_list() {
        let mut live = LiveConfig::new();
        let (cfg, _) = live.apply(&[
            layer(
                "/g/",
                &[
                    (
                        "docker/fake_gpus/0/id",
                        "00000000-0000-0000-0000-000000000001",
                    ),
                    (
                        "docker/fake_gpus/1/id",
                        "00000000-0000-0000-0000-000000000002",
                    ),
                ],
            ),
            layer(
                "/a/",
                &[(
                    "docker/fake_gpus/0/id",
                    "00000000-0000-0000-0000-000000000009",
                )],
            ),
        ]);
        assert_eq!(cfg.fake_gpus.len(), 1);
        assert!(cfg.fake_gpus[0].id.ends_with("09"));
    }
}
