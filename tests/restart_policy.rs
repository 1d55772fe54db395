//! `--restart on-failure[:N] --restart-delay D` (Nomad's restart attempts and delay), against
//! real etcd, Docker, manager and agent: a failed run is started again by the agent after
//! the delay, no sooner, at most N times, then the kernel ends FAILED; a run that succeeds
//! ends DONE; the restart count shows in `inspect` and survives `kill -9` of the agent.

mod common;

use std::time::Duration;

use common::{docker_inspect, KernelCluster, TEST_IMAGE};
use deckhand::wire::pb::KernelState;
use futures::StreamExt;

const T: Duration = Duration::from_secs(60);

fn runs(k: &KernelCluster, id: &str) -> usize {
    std::fs::read_to_string(k.scratch().join(id).join("work/runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_kernel_restarts_after_its_delay_until_its_attempts_are_spent() {
    let k = KernelCluster::start("restartdelay").await;
    let mut events = k.agent_events().await;
    let id = k.run_detached(&[
        "--restart",
        "on-failure:2",
        "--restart-delay",
        "2s",
        TEST_IMAGE,
        "sh",
        "-c",
        "echo run >> /home/work/runs; exit 3",
    ]);
    let info = k.wait_state(&id, "FAILED", T).await;
    assert_eq!(info["exit_code"], 3, "{info}");
    assert_eq!(info["restart_count"], 2, "{info}");
    let reason = info["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("after 2 restarts") && reason.contains("on-failure:2"),
        "{info}"
    );
    assert_eq!(runs(&k, &id), 3, "one run and two restarts");
    // The agent restarted it, not Docker's policy.
    assert_eq!(
        docker_inspect(&format!("deckhand-{}-{id}", k.c.ns), "{{.RestartCount}}"),
        "0"
    );
    // Each RESTARTING (QUEUED) says the delay, and no run starts sooner than the delay after
    // the one before it. The delay counts from the exit, which the agent may record a moment
    // later under load, so runs are measured start to start (a run here lasts milliseconds).
    let mut restarting = 0;
    let mut running_at = Vec::new();
    while let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        if ev.kernel_id != id {
            continue;
        }
        if ev.state == KernelState::Restarting as i32 {
            assert!(ev.reason.contains("starts it again in 2s"), "{ev:?}");
            restarting += 1;
        } else if ev.state == KernelState::Running as i32 {
            running_at.push(ev.at_ms);
        }
    }
    assert_eq!(restarting, 2);
    assert_eq!(running_at.len(), 3, "{running_at:?}");
    for pair in running_at.windows(2) {
        assert!(
            pair[1] - pair[0] >= 1900,
            "restarted {} ms after the run before",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_that_succeeds_after_a_restart_ends_done_with_its_count() {
    let k = KernelCluster::start("restartok").await;
    let id = k.run_detached(&[
        "--restart",
        "on-failure",
        "--restart-delay",
        "1s",
        TEST_IMAGE,
        "sh",
        "-c",
        "test -f /home/work/once || { touch /home/work/once; exit 4; }",
    ]);
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    assert_eq!(info["restart_count"], 1, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_a_kernel_waits_to_restart_keeps_its_count() {
    let mut k = KernelCluster::start("restartkill").await;
    let id = k.run_detached(&[
        "--restart",
        "on-failure:3",
        "--restart-delay",
        "4s",
        TEST_IMAGE,
        "sh",
        "-c",
        "echo run >> /home/work/runs; exit 5",
    ]);
    let info = k.wait_state(&id, "RESTARTING", T).await;
    assert_eq!(info["restart_count"], 1, "{info}");
    assert_eq!(info["drmaa2_state"], "QUEUED", "{info}");
    k.restart_agent().await;
    // The restarted agent keeps the count and the schedule: it goes on from restart 1.
    let info = k.inspect(&id);
    assert!(
        info["restart_count"].as_u64().unwrap_or_default() >= 1,
        "{info}"
    );
    let info = k.wait_state(&id, "FAILED", T).await;
    assert_eq!(info["restart_count"], 3, "{info}");
    assert_eq!(info["exit_code"], 5, "{info}");
    assert_eq!(
        runs(&k, &id),
        4,
        "one run and three restarts, none lost or doubled"
    );
}
