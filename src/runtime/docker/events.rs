//! Docker's container events for this agent's kernels (one stream, filtered by namespace
//! and agent-id labels, never polling), turned into [`RuntimeEvent`]s: each `die`, `start`,
//! `pause` and `unpause` is followed by an inspect, so the supervisor sees what the
//! container looks like now (ended, restarting, running again, paused).

use futures::StreamExt;

use std::sync::Arc;

use tokio_stream::wrappers::BroadcastStream;

use super::client::{ContainerStatus, Docker, LABEL_OWNER};
use super::cluster::{self, Members};
use super::span::Spans;
use crate::runtime::{EventStream, Observed, RuntimeError, RuntimeEvent, Status};

impl From<ContainerStatus> for Status {
    fn from(st: ContainerStatus) -> Self {
        Self {
            exists: st.exists,
            // Docker counts a restarting container as running; the seam does not.
            running: st.running && !st.restarting,
            paused: st.paused,
            restarting: st.restarting,
            exit_code: st.exists.then_some(st.exit_code),
            oom_killed: st.oom_killed,
            error: st.error,
            started_at_ms: st.started_at_ms,
            finished_at_ms: st.finished_at_ms,
            restart_count: st.restart_count,
        }
    }
}

/// The agent's container events as the supervisor reads them, with the changes of the
/// parts its spanning cluster kernels have on other agents.
pub fn stream(docker: Docker, namespace: &str, agent_id: &str, spans: Arc<Spans>) -> EventStream {
    let parts = BroadcastStream::new(spans.subscribe()).filter_map(|r| async move { r.ok() });
    let raw = docker.events(namespace, agent_id);
    let (namespace, agent_id) = (namespace.to_string(), agent_id.to_string());
    let d = docker.clone();
    let (ns, agent) = (namespace.clone(), agent_id.clone());
    let sp = spans.clone();
    let parts = parts.filter_map(move |kernel_id| {
        let (docker, spans) = (d.clone(), sp.clone());
        let (namespace, agent_id) = (ns.clone(), agent.clone());
        async move { cluster_status(&docker, &namespace, &agent_id, &spans, kernel_id).await }
    });
    let containers = raw.filter_map(move |r| {
        let docker = docker.clone();
        let spans = spans.clone();
        let (namespace, agent_id) = (namespace.clone(), agent_id.clone());
        async move {
            let ev = match r {
                Ok(ev) => ev,
                Err(e) => return Some(Err(RuntimeError::from(e))),
            };
            if ev.member.is_some() {
                if !matches!(
                    ev.action.as_str(),
                    "die" | "start" | "pause" | "unpause" | "destroy"
                ) {
                    return None;
                }
                return cluster_status(&docker, &namespace, &agent_id, &spans, ev.kernel_id).await;
            }
            let what = match ev.action.as_str() {
                "die" | "start" | "pause" | "unpause" => {
                    let st = docker.inspect(&ev.container_id).await.unwrap_or_default();
                    if st.exists {
                        let mut status: Status = st.into();
                        // A container its restart policy already started again reads exit
                        // code 0: the `die` event carries the code of the run that ended.
                        if ev.action == "die" && ev.exit_code.is_some() {
                            status.exit_code = ev.exit_code;
                        }
                        Observed::Changed(status)
                    } else if ev.action == "die" {
                        Observed::ExitedAndGone {
                            exit_code: ev.exit_code,
                        }
                    } else {
                        return None;
                    }
                }
                "oom" => Observed::OomKilled,
                "destroy" => Observed::Gone {
                    reason: "the container was removed outside deckhand".into(),
                },
                _ => return None,
            };
            Some(Ok(RuntimeEvent {
                kernel_id: ev.kernel_id,
                instance: ev.container_id,
                what,
            }))
        }
    });
    // The engine's stream ends the merged one (the supervisor reconnects).
    let containers = containers
        .map(Some)
        .chain(futures::stream::once(async { None }));
    Box::pin(
        futures::stream::select(containers, parts.map(Some))
            .take_while(|e| futures::future::ready(e.is_some()))
            .filter_map(|e| async move { e }),
    )
}

/// What a cluster kernel is doing now, after an event of one of its instances here or of
/// one of its parts on another agent ([`cluster::status`], which also stops the instances
/// of a cluster that ended), as an event of its master (on a peer's part: of its first
/// instance here).
async fn cluster_status(
    docker: &Docker,
    namespace: &str,
    agent_id: &str,
    spans: &Arc<Spans>,
    kernel_id: String,
) -> Option<Result<RuntimeEvent, RuntimeError>> {
    let list = match docker.list_labelled(namespace, agent_id).await {
        Ok(l) => l,
        Err(e) => return Some(Err(e.into())),
    };
    let mut ids: Vec<String> = Vec::new();
    for c in list.iter().filter(|c| c.kernel_id == kernel_id) {
        cluster::place(&mut ids, c);
    }
    let part = list
        .iter()
        .any(|c| c.kernel_id == kernel_id && c.labels.contains_key(LABEL_OWNER));
    let Some(first) = ids.iter().find(|id| !id.is_empty()).cloned() else {
        // Its instances are gone: the cluster was removed (or is being removed).
        return None;
    };
    if !part && ids.first().is_none_or(|m| m.is_empty()) {
        // The master is gone: the cluster was removed (or is being removed).
        return None;
    }
    let peers = list
        .iter()
        .filter(|c| c.kernel_id == kernel_id)
        .map(cluster::peers_of)
        .find(|p| !p.is_empty())
        .unwrap_or_default();
    let parts = match spans.parts(&kernel_id, &peers).await {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    let members = Members {
        network: cluster::network_name(namespace, &kernel_id),
        ids,
        ..Default::default()
    };
    let (sp, kid) = (spans.clone(), kernel_id.clone());
    let stop = move |peers| sp.stop_later(&kid, peers);
    let status = match cluster::status(docker, &members, &parts, spans.tasks(), stop).await {
        Ok(s) => s,
        Err(e) => return Some(Err(e.into())),
    };
    Some(Ok(RuntimeEvent {
        kernel_id,
        instance: first,
        what: Observed::Changed(status),
    }))
}
