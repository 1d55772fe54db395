//! Cluster kernels on Docker: N containers of one image that run as one kernel (Qarnot's
//! `docker-cluster*` profiles, Backend.AI's multi-container sessions).
//!
//! - Instance 0 is the master: container `deckhand-<ns>-<kernel>` (the name a single kernel
//!   has), hostname `master`. Instances 1…N-1 are workers: `deckhand-<ns>-<kernel>-<i>`,
//!   hostname `worker-<i>`. On the cluster's network each is also `instance-<i>`.
//! - The instances share a bridge network made for the kernel, `deckhand-<ns>-<kernel>`,
//!   removed with it; `internal` (no route outside it) unless the profile has the network.
//! - Every instance sees `INSTANCE_ID`, `INSTANCE_COUNT`, `CLUSTER_HOSTS` (the hostnames,
//!   master first, comma-separated) and `CLUSTER_MASTER`.
//! - The handle's instance is the master's container id; its data lists every member, so
//!   the supervisor sees one kernel and the runtime answers for all of its containers.
//! - What the cluster is doing is read from all of them ([`aggregate`]): RUNNING when every
//!   instance runs; ended when the master ended (its exit code), or failed when a worker
//!   failed before the master ended (that worker's exit code and reason). Instances still
//!   running once the cluster ended are stopped with the kernel's grace period (the
//!   containers' own stop timeout).

mod aggregate;

pub use aggregate::{aggregate, aggregate_part, status, stop_all, Aggregate};

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, EndpointSettings, NetworkingConfig};
use serde::{Deserialize, Serialize};

use super::body::container_name;
use super::client::{ContainerStatus, Docker, LABEL_INSTANCE, LABEL_INSTANCES};
use crate::runtime::{Handle, RuntimeError, Status};

/// What a cluster kernel's handle holds beside the master's container id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The cluster's network.
    pub network: String,
    /// Container ids by instance index (0: the master); empty for an instance on another
    /// agent (a cluster spanning agents).
    pub ids: Vec<String>,
    /// The kernel, when its instances span agents.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel: String,
    /// On the owner of a spanning cluster: the peers holding the other instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<crate::spec::SpanPeer>,
    /// On a peer's part: the network is the owner's (never removed here).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub borrowed_network: bool,
}

impl Members {
    /// The members a handle names; `None` for a single kernel.
    pub fn of(handle: &Handle) -> Option<Self> {
        serde_json::from_value(handle.data.get("cluster")?.clone()).ok()
    }

    /// Puts the members into a handle's data.
    pub fn store(&self, handle: &mut Handle) {
        if !handle.data.is_object() {
            handle.data = serde_json::json!({});
        }
        handle.data["cluster"] = serde_json::to_value(self).unwrap_or_default();
    }

    /// `network` and `instance/<i>` → `<hostname> <container id>` (or the agent an
    /// instance runs on), for `deckhand show`.
    pub fn describe(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert("network".into(), self.network.clone());
        for p in &self.peers {
            for i in p.first..p.first + p.count {
                out.insert(
                    format!("instance/{i}"),
                    format!("{} on agent {}", hostname(i), p.agent_id),
                );
            }
        }
        for (i, id) in self.ids.iter().enumerate().filter(|(_, id)| !id.is_empty()) {
            out.insert(
                format!("instance/{i}"),
                format!("{} {}", hostname(i as u32), id.get(..12).unwrap_or(id)),
            );
        }
        out
    }

    /// The handle of instance `index` of the kernel `handle` names; an instance on another
    /// agent, or past the last one, is NOT_FOUND saying which.
    pub fn member(&self, handle: &Handle, index: u32) -> Result<Handle, RuntimeError> {
        if let Some(p) = self
            .peers
            .iter()
            .find(|p| (p.first..p.first + p.count).contains(&index))
        {
            return Err(RuntimeError::NotFound(format!(
                "instance {index} runs on agent `{}`",
                p.agent_id
            )));
        }
        let Some(id) = self.ids.get(index as usize).filter(|id| !id.is_empty()) else {
            return Err(RuntimeError::NotFound(format!(
                "instance {index}: the cluster has instances 0 to {}",
                self.ids.len().saturating_sub(1)
            )));
        };
        Ok(Handle {
            instance: id.clone(),
            data: serde_json::Value::Null,
            ..handle.clone()
        })
    }
}

/// The peers of a spanning cluster kernel as its owner's containers carry them.
pub fn peers_label(peers: &[crate::spec::SpanPeer]) -> String {
    serde_json::to_string(peers).unwrap_or_default()
}

/// The peers a listed container of a spanning cluster's owner names (none otherwise).
pub fn peers_of(c: &super::client::Labelled) -> Vec<crate::spec::SpanPeer> {
    c.labels
        .get(super::client::LABEL_PEERS)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// Where a listed container of a cluster kernel goes in its members' ids: its instance
/// index, with room for as many instances as its labels say (a missing one stays empty);
/// `None` for a container of a single kernel.
pub fn place(ids: &mut Vec<String>, c: &super::client::Labelled) -> Option<()> {
    let index: usize = c.labels.get(LABEL_INSTANCE)?.parse().ok()?;
    let count = c
        .labels
        .get(LABEL_INSTANCES)
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
        .clamp(index + 1, 1024);
    if ids.len() < count {
        ids.resize(count, String::new());
    }
    ids[index] = c.id.clone();
    Some(())
}

/// The network of kernel `kernel_id`.
pub fn network_name(namespace: &str, kernel_id: &str) -> String {
    container_name(namespace, kernel_id)
}

/// The overlay network of a kernel spanning agents: swarm names are at most 63
/// characters, so the namespace is named by a hash.
pub fn overlay_name(namespace: &str, kernel_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let ns = Sha256::digest(namespace.as_bytes());
    let short: String = ns.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("deckhand-{short}-{kernel_id}")
}

/// The container name of instance `i`.
pub fn member_name(namespace: &str, kernel_id: &str, i: u32) -> String {
    match i {
        0 => container_name(namespace, kernel_id),
        i => format!("{}-{i}", container_name(namespace, kernel_id)),
    }
}

/// The hostname of instance `i` on the cluster's network.
pub fn hostname(i: u32) -> String {
    match i {
        0 => "master".into(),
        i => format!("worker-{i}"),
    }
}

/// What makes instance `i` of `n` differ from the master's body.
pub struct Member<'a> {
    pub index: u32,
    pub count: u32,
    pub network: &'a str,
    /// The worker command (empty: the image's); the master keeps the body's command.
    pub worker_command: &'a [String],
    /// The GPUs of this instance (its share of the kernel's).
    pub gpus: &'a [String],
}

/// The create body of one instance, from the body the kernel would have alone: its own
/// hostname, command, GPUs and environment, on the cluster's network. Host ports and the
/// input file belong to the master only.
pub fn member_body(mut body: ContainerCreateBody, m: &Member<'_>) -> ContainerCreateBody {
    let name = hostname(m.index);
    let hosts: Vec<String> = (0..m.count).map(hostname).collect();
    let mut env: Vec<String> = body
        .env
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !e.starts_with("NVIDIA_VISIBLE_DEVICES="))
        .collect();
    env.push(format!("INSTANCE_ID={}", m.index));
    env.push(format!("INSTANCE_COUNT={}", m.count));
    env.push(format!("CLUSTER_HOSTS={}", hosts.join(",")));
    env.push(format!("CLUSTER_MASTER={}", hostname(0)));
    if !m.gpus.is_empty() {
        env.push(format!("NVIDIA_VISIBLE_DEVICES={}", m.gpus.join(",")));
    }
    body.env = Some(env);
    body.hostname = Some(name.clone());
    let labels = body.labels.get_or_insert_with(HashMap::new);
    labels.insert(LABEL_INSTANCE.into(), m.index.to_string());
    labels.insert(LABEL_INSTANCES.into(), m.count.to_string());
    if let Some(hc) = body.host_config.as_mut() {
        hc.network_mode = Some(m.network.to_string());
        if let Some(reqs) = hc.device_requests.as_mut() {
            for r in reqs.iter_mut() {
                r.device_ids = Some(m.gpus.to_vec());
            }
            if m.gpus.is_empty() {
                hc.device_requests = None;
            }
        }
        if m.index > 0 {
            hc.port_bindings = None;
        }
    }
    body.networking_config = Some(NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            m.network.to_string(),
            EndpointSettings {
                aliases: Some(vec![name, format!("instance-{}", m.index)]),
                ..Default::default()
            },
        )])),
    });
    if m.index > 0 {
        body.exposed_ports = None;
        body.open_stdin = None;
        body.stdin_once = None;
        body.attach_stdin = None;
        body.cmd = (!m.worker_command.is_empty()).then(|| m.worker_command.to_vec());
    }
    body
}

/// The GPUs of instance `i`: the kernel's GPUs split evenly, in order.
pub fn gpu_share(gpus: &[String], count: u32, i: u32) -> &[String] {
    let per = gpus.len() / count.max(1) as usize;
    let start = (i as usize * per).min(gpus.len());
    &gpus[start..(start + per).min(gpus.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(started: i64) -> ContainerStatus {
        ContainerStatus {
            exists: true,
            running: true,
            started_at_ms: started,
            ..Default::default()
        }
    }

    fn exited(code: i64, finished: i64) -> ContainerStatus {
        ContainerStatus {
            exists: true,
            exit_code: code,
            started_at_ms: 1,
            finished_at_ms: finished,
            ..Default::default()
        }
    }

    fn created() -> ContainerStatus {
        ContainerStatus {
            exists: true,
            ..Default::default()
        }
    }

    #[test]
    fn running_only_when_every_instance_runs() {
        let a = aggregate(&[running(5), running(3), running(4)]);
        assert!(a.status.running);
        assert_eq!(a.status.started_at_ms, 5);
        assert!(a.stop.is_empty());
        // Killed mid-start: the master runs, a worker never started — not RUNNING, not
        // started, so recovery undoes the start instead of taking it as running.
        let a = aggregate(&[running(5), created()]);
        assert!(!a.status.running);
        assert_eq!(a.status.started_at_ms, 0);
    }

    #[test]
    fn the_master_ending_ends_the_cluster_with_its_code_and_stops_the_workers() {
        let a = aggregate(&[exited(3, 100), running(1), exited(0, 50)]);
        assert!(!a.status.running);
        assert_eq!(a.status.exit_code, Some(3));
        assert_eq!(a.status.finished_at_ms, 100);
        assert_eq!(a.stop, vec![1]);
        // Workers stopped after the master ended (143) do not change its result.
        let a = aggregate(&[exited(0, 100), exited(143, 130)]);
        assert_eq!(a.status.exit_code, Some(0));
        assert!(a.status.error.is_empty());
        assert!(a.stop.is_empty());
    }

    #[test]
    fn a_failing_worker_fails_the_cluster_with_its_code_and_stops_the_rest() {
        let a = aggregate(&[running(1), exited(7, 40), running(1)]);
        assert!(!a.status.running);
        assert_eq!(a.status.exit_code, Some(7));
        assert_eq!(a.status.error, "instance 1 (worker) exited with code 7");
        assert_eq!(a.stop, vec![0, 2]);
        // Once the master was stopped because of it, the worker's failure still decides.
        let a = aggregate(&[exited(143, 60), exited(7, 40), exited(143, 61)]);
        assert_eq!(a.status.exit_code, Some(7));
        assert_eq!(a.status.finished_at_ms, 40);
        // A worker that finished its part (exit 0) before the master does not end it.
        let a = aggregate(&[running(1), exited(0, 40)]);
        assert!(a.status.running || a.status.started_at_ms > 0);
        assert_eq!(a.status.exit_code, Some(0));
        assert!(a.stop.is_empty());
    }

    #[test]
    fn workers_ending_before_the_master_ever_started_do_not_end_the_cluster() {
        let a = aggregate(&[created(), exited(137, 40), running(1)]);
        assert_eq!(a.status.started_at_ms, 0);
        assert!(!a.status.running);
        assert!(a.status.error.is_empty(), "{:?}", a.status);
    }

    #[test]
    fn a_vanished_instance_is_named() {
        let a = aggregate(&[ContainerStatus::default(), running(1)]);
        assert!(!a.status.exists);
        assert!(a.status.error.contains("instance 0 (master)"));
        assert_eq!(a.stop, vec![1]);
        let a = aggregate(&[running(1), ContainerStatus::default()]);
        assert!(a.status.exists && !a.status.running);
        assert!(a.status.error.contains("instance 1 (worker) was removed"));
    }

    #[test]
    fn a_part_runs_when_all_its_workers_run_and_fails_by_the_first_that_failed() {
        let a = aggregate_part(&[(2, running(5)), (3, running(7))]);
        assert!(a.status.running && a.status.started_at_ms == 7);
        let a = aggregate_part(&[(2, running(5)), (3, created())]);
        assert!(!a.status.running && a.status.started_at_ms == 0 && a.status.exists);
        let a = aggregate_part(&[(2, running(5)), (3, exited(7, 40))]);
        assert_eq!(a.status.exit_code, Some(7));
        assert_eq!(a.status.error, "instance 3 (worker) exited with code 7");
        assert_eq!(a.stop, vec![2]);
        // Workers that did their part (exit 0) end the part well.
        let a = aggregate_part(&[(2, exited(0, 40)), (3, exited(0, 50))]);
        assert_eq!(a.status.exit_code, Some(0));
        assert!(a.status.error.is_empty() && a.status.finished_at_ms == 50);
    }

    #[test]
    fn a_peers_failed_part_fails_the_owners_cluster_with_the_peers_words() {
        let mut worker = exited(7, 40);
        worker.part_reason = "on agent `b`: instance 2 (worker) exited with code 7".into();
        let a = aggregate(&[running(1), running(1), worker]);
        assert_eq!(a.status.exit_code, Some(7));
        assert_eq!(
            a.status.error,
            "on agent `b`: instance 2 (worker) exited with code 7"
        );
        assert_eq!(a.stop, vec![0, 1]);
    }

    #[test]
    fn gpus_are_split_evenly_in_order() {
        let g: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(gpu_share(&g, 2, 0), &g[0..2]);
        assert_eq!(gpu_share(&g, 2, 1), &g[2..4]);
        assert!(gpu_share(&[], 3, 2).is_empty());
    }

    #[test]
    fn handles_keep_their_members() {
        let mut h = Handle {
            runtime: "docker".into(),
            version: 1,
            instance: "m".into(),
            data: serde_json::Value::Null,
        };
        assert_eq!(Members::of(&h), None);
        let m = Members {
            network: "n".into(),
            ids: vec!["m".into(), "w".into()],
            ..Default::default()
        };
        m.store(&mut h);
        assert_eq!(Members::of(&h), Some(m));
    }
}
