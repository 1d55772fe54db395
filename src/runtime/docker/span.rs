//! Cluster kernels spanning agents: the engines of one Docker swarm.
//!
//! The manager places a cluster kernel too large for any one agent on several agents of one
//! swarm: each peer first gets a held *part* (workers `first…first+count-1`, on the owner's
//! network; its slots reserved whole or the placement is undone), then the *owner* (an agent
//! whose engine is a swarm manager) gets the kernel with the master and the first workers.
//! The owner makes an attachable **overlay** network the parts' containers join under the
//! same hostnames and environment as on one engine.
//!
//! The owner drives the parts through the peers' own `AgentService` (reached through the
//! [`Peers`] the agent hands the runtime): it releases them before
//! it starts its own instances, stops, signals, pauses and removes them with the kernel, and
//! follows each part's state from the peer's event stream (seeded from `GetKernel`, followed
//! again after a lost connection). What a part does counts like its instances on one engine
//! (see [`super::cluster::aggregate`]): a failed worker fails the kernel with the peer's
//! reason, and the parts still running when the kernel ended are stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::client::{ContainerStatus, Docker};
use crate::runtime::peers::{PartReport, PartState, PeerAction, PeerError, Peers};
use crate::runtime::{RuntimeError, SpanGroup};
use crate::spec::SpanPeer;
use crate::util::shutdown::Tasks;

/// What the owner last heard of one peer's part of a kernel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part {
    pub peer: SpanPeer,
    /// The part's state; unheard until the peer answered.
    pub state: PartState,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

impl Part {
    /// What instance `i` of this part looks like to the owner's aggregation: the part's
    /// state stands for each of its instances; the one its failure names carries its
    /// reason, the others read as ended well (they were stopped because of it).
    pub fn member(&self, i: u32) -> ContainerStatus {
        use PartState as S;
        let state = self.state;
        let started = self.started_at_ms.max(1);
        match state {
            S::Running | S::Suspended => ContainerStatus {
                exists: true,
                running: true,
                paused: state == S::Suspended,
                started_at_ms: started,
                ..Default::default()
            },
            S::Done | S::Ended => {
                let named = self.names(i);
                let failed = state != S::Done && named;
                ContainerStatus {
                    exists: true,
                    exit_code: if failed {
                        i64::from(self.exit_code.unwrap_or(1))
                    } else {
                        0
                    },
                    started_at_ms: started,
                    finished_at_ms: self.finished_at_ms.max(started),
                    part_reason: if failed {
                        format!("on agent `{}`: {}", self.peer.agent_id, self.reason)
                    } else {
                        String::new()
                    },
                    ..Default::default()
                }
            }
            // Not heard yet, or made and not started (held, creating).
            _ => ContainerStatus {
                exists: true,
                ..Default::default()
            },
        }
    }

    /// Whether the part's failure is about instance `i` (its reason names it, else its
    /// first instance).
    fn names(&self, i: u32) -> bool {
        let named = (self.peer.first..self.peer.first + self.peer.count)
            .find(|j| self.reason.contains(&format!("instance {j} ")));
        named.unwrap_or(self.peer.first) == i
    }
}

/// The owner's side of its spanning kernels: the swarm this engine is in, the parts each
/// kernel has on its peers, and a signal when one changed.
pub struct Spans {
    peers: Arc<dyn Peers>,
    /// The agent's tasks: watchers and stops run (and end on shutdown) among them.
    tasks: Tasks,
    group: Mutex<Option<SpanGroup>>,
    parts: Mutex<HashMap<String, Vec<Part>>>,
    watchers: Mutex<HashMap<String, CancellationToken>>,
    /// Peer address → its channel.
    /// Kernel ids whose parts changed (the event stream turns them into status).
    changed: broadcast::Sender<String>,
}

impl Spans {
    pub fn new(peers: Arc<dyn Peers>, tasks: Tasks) -> Arc<Self> {
        Arc::new(Self {
            peers,
            tasks,
            group: Mutex::new(None),
            parts: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            changed: broadcast::channel(256).0,
        })
    }

    /// The agent's tasks (what runs in the background for these kernels goes there).
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    pub fn group(&self) -> Option<SpanGroup> {
        self.group.lock().clone()
    }

    /// Reads which swarm the engine is in (when the agent starts).
    pub async fn read_group(&self, docker: &Docker) {
        let group = docker.swarm().await;
        if let Some(g) = &group {
            tracing::info!(swarm = %g.id, manager = g.owner, "Docker engine is in a swarm: cluster kernels can span its agents");
        }
        *self.group.lock() = group;
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    pub async fn control(
        &self,
        kernel_id: &str,
        peers: &[SpanPeer],
        action: PeerAction,
        signal: i32,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        let calls = peers.iter().map(|p| async move {
            match self
                .peers
                .control(p, kernel_id, action, signal, grace)
                .await
            {
                Ok(()) => Ok(()),
                // A part already gone is removed (and stopped); one already ended is
                // stopped. A part gone cannot be started: the cluster is not whole.
                Err(PeerError::NotFound(_)) if action != PeerAction::Release => Ok(()),
                Err(PeerError::Refused(_))
                    if matches!(action, PeerAction::Stop | PeerAction::Signal) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.on(p)),
            }
        });
        futures::future::try_join_all(calls).await.map(|_| ())
    }

    /// The parts of kernel `kernel_id` as last heard; a part not heard yet is asked for.
    pub async fn parts(
        &self,
        kernel_id: &str,
        peers: &[SpanPeer],
    ) -> Result<Vec<Part>, RuntimeError> {
        let known = self
            .parts
            .lock()
            .get(kernel_id)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        for peer in peers {
            match known
                .iter()
                .find(|p| p.peer.agent_id == peer.agent_id && p.state != PartState::Unheard)
            {
                Some(p) => out.push(p.clone()),
                None => {
                    let p = self.ask(kernel_id, peer).await?;
                    self.heard(kernel_id, p.clone());
                    out.push(p);
                }
            }
        }
        Ok(out)
    }

    /// The part as its peer reports it now.
    async fn ask(&self, kernel_id: &str, peer: &SpanPeer) -> Result<Part, RuntimeError> {
        let report = match self.peers.part(peer, kernel_id).await {
            Ok(r) => r,
            Err(PeerError::NotFound(_)) => PartReport {
                state: PartState::Ended,
                reason: format!(
                    "its part of the cluster (instances {}…{}) is gone",
                    peer.first,
                    peer.first + peer.count - 1
                ),
                ..Default::default()
            },
            Err(e) => return Err(e.on(peer)),
        };
        Ok(Part {
            peer: peer.clone(),
            state: report.state,
            exit_code: report.exit_code,
            reason: report.reason,
            started_at_ms: report.started_at_ms,
            finished_at_ms: report.finished_at_ms,
        })
    }

    fn heard(&self, kernel_id: &str, part: Part) {
        let mut all = self.parts.lock();
        let list = all.entry(kernel_id.to_string()).or_default();
        match list
            .iter_mut()
            .find(|p| p.peer.agent_id == part.peer.agent_id)
        {
            Some(p) if *p == part => return,
            Some(p) => *p = part,
            None => list.push(part),
        }
        drop(all);
        let _ = self.changed.send(kernel_id.to_string());
    }

    /// Follows the parts of kernel `kernel_id` until [`Spans::forget`] (one task per peer,
    /// reconnecting with backoff); a kernel already followed is left as it is.
    pub fn follow(self: &Arc<Self>, kernel_id: &str, peers: &[SpanPeer]) {
        let token = {
            let mut w = self.watchers.lock();
            if w.contains_key(kernel_id) {
                return;
            }
            let t = CancellationToken::new();
            w.insert(kernel_id.to_string(), t.clone());
            t
        };

        for peer in peers {
            let me = self.clone();
            let (kid, peer, token) = (kernel_id.to_string(), peer.clone(), token.clone());
            self.tasks.spawn_until_stopped("span-watch", async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = me.watch(&kid, &peer) => {}
                }
            });
        }
    }

    /// Stops following kernel `kernel_id` and forgets its parts.
    pub fn forget(&self, kernel_id: &str) {
        if let Some(t) = self.watchers.lock().remove(kernel_id) {
            t.cancel();
        }
        self.parts.lock().remove(kernel_id);
    }

    /// Stops the parts of a kernel that ended, in the background.
    pub fn stop_later(self: &Arc<Self>, kernel_id: &str, peers: Vec<SpanPeer>) {
        let (me, kid) = (self.clone(), kernel_id.to_string());
        // Awaited on shutdown: the parts are stopped before the agent exits.
        self.tasks.spawn("span-stop", async move {
            if let Err(e) = me.control(&kid, &peers, PeerAction::Stop, 0, None).await {
                tracing::warn!(kernel_id = %kid, error = %e, "cannot stop the parts of a cluster kernel that ended");
            }
        });
    }

    async fn watch(&self, kernel_id: &str, peer: &SpanPeer) {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .build();
        loop {
            match self.watch_once(kernel_id, peer).await {
                Ok(()) => {
                    tracing::info!(kernel_id, agent_id = %peer.agent_id, "a peer's event stream ended; following it again")
                }
                Err(e) => {
                    tracing::warn!(kernel_id, agent_id = %peer.agent_id, error = %e, "cannot follow a cluster part on its peer; trying again")
                }
            }
            tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
        }
    }

    async fn watch_once(&self, kernel_id: &str, peer: &SpanPeer) -> Result<(), RuntimeError> {
        let mut changes = self.peers.changes(peer).await.map_err(|e| e.on(peer))?;
        // Whatever happened while nobody listened.
        let part = self.ask(kernel_id, peer).await?;
        self.heard(kernel_id, part);
        while let Some(changed) = changes.next().await {
            if changed.map_err(|e| e.on(peer))? != kernel_id {
                continue;
            }
            let part = self.ask(kernel_id, peer).await?;
            self.heard(kernel_id, part);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(state: PartState, reason: &str, code: Option<i32>) -> Part {
        Part {
            peer: SpanPeer {
                agent_id: "b".into(),
                address: "x".into(),
                first: 2,
                count: 2,
            },
            state,
            exit_code: code,
            reason: reason.into(),
            started_at_ms: 10,
            finished_at_ms: 20,
        }
    }

    #[test]
    fn a_failed_part_names_the_instance_its_peer_named() {
        let p = part(
            PartState::Ended,
            "instance 3 (worker) exited with code 7",
            Some(7),
        );
        let (two, three) = (p.member(2), p.member(3));
        assert_eq!(three.exit_code, 7);
        assert_eq!(
            three.part_reason,
            "on agent `b`: instance 3 (worker) exited with code 7"
        );
        assert_eq!(two.exit_code, 0);
        assert!(two.part_reason.is_empty());
        assert_eq!(three.finished_at_ms, 20);
    }

    #[test]
    fn a_running_part_runs_and_one_not_heard_is_made_but_not_started() {
        let r = part(PartState::Running, "", None).member(2);
        assert!(r.exists && r.running && r.started_at_ms == 10);
        let h = part(PartState::Waiting, "", None).member(2);
        assert!(h.exists && !h.running && h.started_at_ms == 0);
        let d = part(PartState::Done, "", Some(0)).member(3);
        assert!(!d.running && d.exit_code == 0 && d.finished_at_ms == 20);
    }
}
