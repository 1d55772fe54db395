//! Docker's container events for this agent's kernels (one stream, filtered by namespace
//! and agent-id labels, never polling), turned into [`RuntimeEvent`]s: each `die`, `start`,
//! `pause` and `unpause` is followed by an inspect, so the supervisor sees what the
//! container looks like now (ended, restarting, running again, paused).

use futures::StreamExt;

use super::client::{ContainerEvent, ContainerStatus, Docker};
use super::cluster::{self, Members};
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

/// The agent's container events as the supervisor reads them.
pub fn stream(docker: Docker, namespace: &str, agent_id: &str) -> EventStream {
    let raw = docker.events(namespace, agent_id);
    let (namespace, agent_id) = (namespace.to_string(), agent_id.to_string());
    Box::pin(raw.filter_map(move |r| {
        let docker = docker.clone();
        let (namespace, agent_id) = (namespace.clone(), agent_id.clone());
        async move {
            let ev = match r {
                Ok(ev) => ev,
                Err(e) => return Some(Err(RuntimeError::from(e))),
            };
            if ev.member.is_some() {
                return cluster_event(&docker, &namespace, &agent_id, ev).await;
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
    }))
}

/// An event of one instance of a cluster kernel: what the whole cluster is doing now
/// ([`cluster::status`], which also stops the instances of a cluster that ended), as an
/// event of its master.
async fn cluster_event(
    docker: &Docker,
    namespace: &str,
    agent_id: &str,
    ev: ContainerEvent,
) -> Option<Result<RuntimeEvent, RuntimeError>> {
    if !matches!(
        ev.action.as_str(),
        "die" | "start" | "pause" | "unpause" | "destroy"
    ) {
        return None;
    }
    let list = match docker.list_labelled(namespace, agent_id).await {
        Ok(l) => l,
        Err(e) => return Some(Err(e.into())),
    };
    let mut ids: Vec<String> = Vec::new();
    for c in list.iter().filter(|c| c.kernel_id == ev.kernel_id) {
        cluster::place(&mut ids, c);
    }
    let master = ids.first().cloned().unwrap_or_default();
    if master.is_empty() {
        // The master is gone: the cluster was removed (or is being removed).
        return None;
    }
    let members = Members {
        network: cluster::network_name(namespace, &ev.kernel_id),
        ids,
    };
    let status = match cluster::status(docker, &members).await {
        Ok(s) => s,
        Err(e) => return Some(Err(e.into())),
    };
    Some(Ok(RuntimeEvent {
        kernel_id: ev.kernel_id,
        instance: master,
        what: Observed::Changed(status),
    }))
}
