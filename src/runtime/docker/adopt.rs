//! Finding this agent's containers again after a restart: the containers labelled with its
//! namespace and agent id, and a record rebuilt for one that has none (lost in a crash
//! between creating it and writing the record, or a deleted record file) from its labels,
//! the `kernel.json` in its home and what the engine says about its resources.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bollard::models::ContainerInspectResponse;

use super::body::{LABEL_ARRAY, LABEL_PROCESS_DATA, LABEL_SCRATCH};
use super::client::{EngineError, LABEL_INSTANCE, LABEL_OWNER};
use super::cluster::{self, network_name, Members};
use super::local::ProcessData;
use super::rules::DockerRules;
use super::DockerRuntime;
use crate::config::ClusterConfig;
use crate::runtime::{Activity, Adopted, HostPort, Launch, Slots};
use crate::runtime::{Handle, Owned, RuntimeError};
use crate::spec::{self, Template};
use crate::util::now_ms;

impl DockerRuntime {
    /// The handle of container `cid`, with the process data its labels name.
    pub(super) fn handle(cid: &str, process_data: Option<&ProcessData>) -> Handle {
        Handle {
            runtime: super::NAME.into(),
            version: super::HANDLE_VERSION,
            instance: cid.to_string(),
            data: match process_data {
                Some(p) => serde_json::json!({ "process_data": p }),
                None => serde_json::Value::Null,
            },
        }
    }

    /// The process data a handle names (any handle version).
    pub(super) fn process_data(handle: &Handle) -> Option<ProcessData> {
        serde_json::from_value(handle.data.get("process_data")?.clone()).ok()
    }

    pub(super) async fn owned(&self) -> Result<Vec<Owned>, RuntimeError> {
        let list = self
            .client
            .list_labelled(&self.namespace, &self.agent_id)
            .await?;
        let mut out = Vec::new();
        // A cluster kernel's containers and network, by kernel id: one handle for all.
        let mut clusters: BTreeMap<String, (Members, Option<ProcessData>)> = BTreeMap::new();
        for c in list {
            let pd = c
                .labels
                .get(LABEL_PROCESS_DATA)
                .and_then(|v| ProcessData::from_label(v));
            if c.labels.contains_key(LABEL_INSTANCE) {
                let (m, _) = clusters.entry(c.kernel_id.clone()).or_insert_with(|| {
                    (
                        Members {
                            network: network_name(&self.namespace, &c.kernel_id),
                            ..Default::default()
                        },
                        pd,
                    )
                });
                cluster::place(&mut m.ids, &c);
                m.borrowed_network |= c.labels.contains_key(LABEL_OWNER);
                let peers = cluster::peers_of(&c);
                if !peers.is_empty() {
                    m.kernel = c.kernel_id.clone();
                    m.peers = peers;
                }
                continue;
            }
            out.push(Owned {
                handle: Self::handle(&c.id, pd.as_ref()),
                kernel_id: c.kernel_id,
            });
        }
        // A network whose instances were never made (or already removed).
        for (network, kernel_id) in self
            .client
            .list_networks(&self.namespace, &self.agent_id)
            .await?
        {
            clusters.entry(kernel_id).or_insert_with(|| {
                (
                    Members {
                        network,
                        ..Default::default()
                    },
                    None,
                )
            });
        }
        for (kernel_id, (members, pd)) in clusters {
            // The master's container; on a peer's part of a spanning cluster, its first.
            let master = members
                .ids
                .iter()
                .find(|id| !id.is_empty())
                .cloned()
                .unwrap_or_default();
            let mut handle = Self::handle(&master, pd.as_ref());
            members.store(&mut handle);
            out.push(Owned { kernel_id, handle });
        }
        Ok(out)
    }

    /// What a container of ours that has no record says of itself; see the module docs.
    pub(super) async fn adopt_container(
        &self,
        owned: &Owned,
        cfg: &ClusterConfig,
    ) -> Result<Adopted, RuntimeError> {
        let kid = owned.kernel_id.as_str();
        let cid = owned.handle.instance.as_str();
        let info: ContainerInspectResponse = self
            .client
            .api()
            .inspect_container(cid, None)
            .await
            .map_err(EngineError::from)?;
        let config = info.config.clone().unwrap_or_default();
        let host = info.host_config.clone().unwrap_or_default();
        let state = info.state.clone().unwrap_or_default();
        let labels = config.labels.clone().unwrap_or_default();
        let scratch_dir = labels
            .get(LABEL_SCRATCH)
            .cloned()
            .unwrap_or_else(|| self.scratch.root().join(kid).display().to_string());
        let base_id = kid.split('.').next().unwrap_or(kid).to_string();
        // The spec as it was shown (kernel.json), else what the container itself says.
        let shown: Template = std::fs::read(PathBuf::from(&scratch_dir).join("config/kernel.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| Template {
                kernel_id: base_id.clone(),
                image: config.image.clone().unwrap_or_default(),
                command: config.cmd.clone().unwrap_or_default(),
                ..Default::default()
            });
        let mut for_validation = shown.clone();
        for_validation.kernel_id = base_id.clone();
        let spec = spec::prepare_for(&for_validation, cfg, &DockerRules)
            .or_else(|_| {
                spec::validate_for(
                    &Template {
                        kernel_id: base_id.clone(),
                        image: shown.image.clone(),
                        ..Default::default()
                    },
                    &cfg.kernel,
                    &DockerRules,
                )
            })
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        let env = config.env.clone().unwrap_or_default();
        let gpus: Vec<String> = env
            .iter()
            .find_map(|e| e.strip_prefix("NVIDIA_VISIBLE_DEVICES="))
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let slots = Slots {
            cpu: host.nano_cpus.unwrap_or(0) as f64 / 1e9,
            memory: host.memory.unwrap_or(0).max(0) as u64,
            gpus,
        };
        let mut ports = Vec::new();
        for (key, bindings) in host.port_bindings.clone().unwrap_or_default() {
            let (port, protocol) = key.split_once('/').unwrap_or((&key, "tcp"));
            let Ok(container) = port.parse() else {
                continue;
            };
            for b in bindings.unwrap_or_default() {
                if let Some(h) = b.host_port.and_then(|p| p.parse().ok()) {
                    ports.push(HostPort {
                        container,
                        host: h,
                        protocol: protocol.to_string(),
                        host_ip: b.host_ip.unwrap_or_default(),
                    });
                }
            }
        }
        let running = state.running.unwrap_or(false);
        let paused = state.paused.unwrap_or(false);
        let restarting = state.restarting.unwrap_or(false);
        let started = parse_ms(state.started_at.as_deref());
        let activity = match (running, paused, started > 0) {
            _ if restarting => Activity::Restarting,
            (true, true, _) => Activity::Paused,
            (true, false, _) => Activity::Running,
            (false, _, true) => Activity::Stopped,
            (false, _, false) => Activity::Created,
        };
        let created = parse_ms(info.created.as_deref());
        let launch = Launch {
            id: kid.to_string(),
            name: shown.name.clone(),
            slug: shown.slug.clone(),
            array_id: labels.get(LABEL_ARRAY).cloned(),
            task_index: kid
                .split_once('.')
                .and_then(|(_, i)| i.parse().ok())
                .unwrap_or(0),
            shown_spec: shown.masked(),
            spec,
            runtime: super::NAME.to_string(),
            real_gpus: host.device_requests.as_ref().is_some_and(|d| !d.is_empty()),
            handle: Some(owned.handle.clone()),
            created_at_ms: if created == 0 { now_ms() } else { created },
            started_at_ms: started,
            finished_at_ms: 0,
            slots: Some(slots),
            ports,
            scratch_dir,
        };
        Ok(Adopted {
            launch,
            activity,
            restart_count: info.restart_count.unwrap_or(0).max(0) as u32,
        })
    }
}

/// Docker's RFC 3339 time → Unix ms (0 when absent or the zero time).
fn parse_ms(s: Option<&str>) -> i64 {
    s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.timestamp_millis())
        .filter(|ms| *ms > 0)
        .unwrap_or(0)
}
