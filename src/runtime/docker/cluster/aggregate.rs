//! One status for a cluster kernel from its instances' (and its parts' on peers): who
//! failed first, with which reason, and when it ended.

use super::*;

/// What the cluster is doing, from its instances (index order, master first), and which
/// instances must be stopped because the cluster ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub status: Status,
    pub stop: Vec<usize>,
}

fn ended(c: &ContainerStatus) -> bool {
    c.exists && !c.running && !c.restarting && c.started_at_ms > 0
}

fn role(i: usize) -> &'static str {
    if i == 0 {
        "master"
    } else {
        "worker"
    }
}

/// See the module docs. `members[i]` is instance `i`; a missing one reads `exists: false`.
pub fn aggregate(members: &[ContainerStatus]) -> Aggregate {
    let Some(master) = members.first() else {
        return Aggregate {
            status: Status::default(),
            stop: Vec::new(),
        };
    };
    let running: Vec<usize> = (0..members.len()).filter(|&i| members[i].running).collect();
    if !master.exists {
        return Aggregate {
            status: Status {
                error: "instance 0 (master) was removed outside deckhand".into(),
                ..Status::default()
            },
            stop: running,
        };
    }
    let mut st = Status::from(master.clone());
    // A worker that failed (or vanished) before the master ended fails the cluster.
    let master_end = if ended(master) {
        master.finished_at_ms
    } else {
        i64::MAX
    };
    let failed = members.iter().enumerate().skip(1).find(|(_, w)| {
        !w.exists
            || (ended(w) && (w.exit_code != 0 || w.oom_killed) && w.finished_at_ms <= master_end)
    });
    if let Some((i, w)) = failed {
        // Before the master started, workers that ended were stopped by a start that failed
        // (whose own error ends the kernel) or belong to a start that recovery undoes.
        if master.started_at_ms > 0 {
            st.running = false;
            st.paused = false;
            st.exit_code = w.exists.then_some(w.exit_code);
            st.oom_killed = w.oom_killed;
            st.error = if !w.part_reason.is_empty() {
                w.part_reason.clone()
            } else if !w.exists {
                format!("instance {i} (worker) was removed outside deckhand")
            } else if w.oom_killed {
                format!("instance {i} (worker) ran out of memory")
            } else {
                format!("instance {i} (worker) exited with code {}", w.exit_code)
            };
            if st.finished_at_ms <= 0 || (w.exists && w.finished_at_ms < st.finished_at_ms) {
                st.finished_at_ms = w.finished_at_ms;
            }
            if st.started_at_ms <= 0 {
                st.started_at_ms = w.started_at_ms;
            }
            return Aggregate {
                status: st,
                stop: running,
            };
        }
    }
    if ended(master) {
        if st.error.is_empty() && master.oom_killed {
            st.error = format!("instance 0 ({}) ran out of memory", role(0));
        }
        return Aggregate {
            status: st,
            stop: running,
        };
    }
    if master.running {
        // RUNNING once every instance has started; paused when the master is.
        let all_started = members.iter().all(|m| m.started_at_ms > 0);
        if !all_started {
            st.running = false;
            st.started_at_ms = 0;
        }
    }
    Aggregate {
        status: st,
        stop: Vec::new(),
    }
}

/// What a peer's part of a spanning cluster is doing, from its instances (`(index,
/// status)`): RUNNING once every one runs; failed by the first that failed or vanished
/// (the rest are stopped); ended well when all ended well; else made and not started.
pub fn aggregate_part(members: &[(usize, ContainerStatus)]) -> Aggregate {
    let running: Vec<usize> = members
        .iter()
        .filter(|(_, c)| c.running)
        .map(|(i, _)| *i)
        .collect();
    let started = members
        .iter()
        .map(|(_, c)| c.started_at_ms)
        .max()
        .unwrap_or(0);
    let failed = members
        .iter()
        .find(|(_, w)| !w.exists || (ended(w) && (w.exit_code != 0 || w.oom_killed)));
    if let Some((i, w)) = failed {
        let error = if !w.exists {
            format!("instance {i} (worker) was removed outside deckhand")
        } else if w.oom_killed {
            format!("instance {i} (worker) ran out of memory")
        } else {
            format!("instance {i} (worker) exited with code {}", w.exit_code)
        };
        return Aggregate {
            status: Status {
                exists: true,
                exit_code: Some(if w.exists { w.exit_code } else { 1 }),
                oom_killed: w.oom_killed,
                error,
                started_at_ms: started.max(1),
                finished_at_ms: w.finished_at_ms.max(started),
                ..Status::default()
            },
            stop: running,
        };
    }
    if !members.is_empty() && members.iter().all(|(_, c)| ended(c)) {
        let finished = members
            .iter()
            .map(|(_, c)| c.finished_at_ms)
            .max()
            .unwrap_or(0);
        return Aggregate {
            status: Status {
                exists: true,
                exit_code: Some(0),
                started_at_ms: started,
                finished_at_ms: finished,
                ..Status::default()
            },
            stop: Vec::new(),
        };
    }
    let all_run = !members.is_empty() && members.iter().all(|(_, c)| c.running);
    Aggregate {
        status: Status {
            exists: true,
            running: all_run,
            paused: all_run && members.iter().all(|(_, c)| c.paused),
            started_at_ms: if all_run { started } else { 0 },
            exit_code: Some(0),
            ..Status::default()
        },
        stop: Vec::new(),
    }
}

/// Reads every member here (and, on the owner of a spanning cluster, what its peers said
/// of their parts: `parts`) and aggregates them; stops, in the background, the members
/// still running in a cluster that ended (on a peer through `stop_peers`).
pub async fn status(
    docker: &Docker,
    members: &Members,
    parts: &[crate::runtime::docker::span::Part],
    tasks: &crate::util::shutdown::Tasks,
    stop_peers: impl FnOnce(Vec<crate::spec::SpanPeer>) + Send,
) -> Result<Status, crate::runtime::docker::EngineError> {
    let reads = members.ids.iter().map(|id| async move {
        if id.is_empty() {
            Ok(ContainerStatus::default())
        } else {
            docker.inspect(id).await
        }
    });
    let mut all: Vec<ContainerStatus> = futures::future::try_join_all(reads).await?;
    let agg = if members.ids.first().is_some_and(|m| m.is_empty()) {
        // A peer's part: workers only.
        let mine: Vec<(usize, ContainerStatus)> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !members.ids[*i].is_empty())
            .collect();
        aggregate_part(&mine)
    } else {
        for p in parts {
            for i in p.peer.first..p.peer.first + p.peer.count {
                if let Some(slot) = all.get_mut(i as usize) {
                    *slot = p.member(i);
                }
            }
        }
        aggregate(&all)
    };
    if !agg.stop.is_empty() {
        let ids: Vec<String> = agg
            .stop
            .iter()
            .map(|&i| members.ids[i].clone())
            .filter(|id| !id.is_empty())
            .collect();
        let peers: Vec<_> = parts
            .iter()
            .filter(|p| agg.stop.contains(&(p.peer.first as usize)))
            .map(|p| p.peer.clone())
            .collect();
        if !peers.is_empty() {
            stop_peers(peers);
        }
        let docker = docker.clone();
        // Awaited on shutdown: the members are stopped before the agent exits.
        tasks.spawn("cluster-stop", async move {
            if let Err(e) = stop_all(&docker, &ids, None).await {
                tracing::warn!(error = %e, "cannot stop the instances of a cluster kernel that ended");
            }
        });
    }
    Ok(agg.status)
}

/// Stops containers in parallel, each with `grace` (`None`: the container's own stop
/// timeout, the kernel's grace period); one already stopped counts as stopped.
pub async fn stop_all(
    docker: &Docker,
    ids: &[String],
    grace: Option<Duration>,
) -> Result<(), crate::runtime::docker::EngineError> {
    let stops = ids.iter().map(|id| docker.stop_within(id, grace));
    futures::future::try_join_all(stops).await.map(|_| ())
}
