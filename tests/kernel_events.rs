//! Kernel events and the persisted registry, against real etcd, Docker, manager and agent:
//! `WatchEvents` delivers every transition in order with consecutive sequence numbers, and
//! an agent killed with -9 rebuilds its kernels from the registry under the scratch root,
//! reporting a kernel that ended while it was down with its real exit code.

mod common;

use std::time::Duration;

use common::{wait_for, KernelCluster, TEST_IMAGE};
use deckhand::wire::pb::agent_service_client::AgentServiceClient;
use deckhand::wire::pb::{KernelState, WatchEventsRequest};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_sees_every_transition_in_order() {
    let k = KernelCluster::start("events").await;
    let mut client = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .expect("agent gRPC");
    let mut events = client
        .watch_events(WatchEventsRequest { after_seq: 0 })
        .await
        .expect("watch")
        .into_inner();
    let id = k.run_detached(&["--hold", TEST_IMAGE, "sh", "-c", "exit 0"]);
    k.c.cli_ok(&["release", &id]);
    let mut seen = Vec::new();
    let mut seqs = Vec::new();
    while seen.last() != Some(&KernelState::Done) {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event within 20s")
            .expect("stream open")
            .expect("event");
        assert_eq!(ev.kernel_id, id);
        seqs.push(ev.seq);
        seen.push(ev.state());
    }
    use KernelState::*;
    assert_eq!(seen, [Preparing, Held, Creating, Running, Done]);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // A watcher that reconnects with after_seq gets only what came later.
    let mut replay = client
        .watch_events(WatchEventsRequest { after_seq: seqs[2] })
        .await
        .unwrap()
        .into_inner();
    let next = tokio::time::timeout(Duration::from_secs(5), replay.next())
        .await
        .expect("replayed at once")
        .unwrap()
        .unwrap();
    assert_eq!(next.seq, seqs[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_with_minus_9_rebuilds_its_kernels_from_the_registry() {
    let mut k = KernelCluster::start("registry").await;
    let ends = k.run_detached(&[TEST_IMAGE, "sh", "-c", "sleep 3; exit 6"]);
    let stays = k.run_detached(&["--cpus", "0.5", TEST_IMAGE, "sleep", "120"]);
    k.agent.kill9();
    k.agent.wait_exit(Duration::from_secs(5)).await;
    // `ends` exits while no agent watches.
    tokio::time::sleep(Duration::from_secs(4)).await;
    k.agent = k.c.agent_on("a1", k.scratch());
    let info = k.wait_state(&ends, "FAILED", Duration::from_secs(30)).await;
    assert_eq!(info["exit_code"], 6);
    let info = k.inspect(&stays);
    assert_eq!(info["state"], "RUNNING");
    assert_eq!(info["slots"]["cpu"], 0.5);
    // Its slots are counted again: the heartbeat shows them allocated.
    wait_for(Duration::from_secs(20), "allocation rebuilt", || async {
        let n = k.c.node("a1")?;
        (n["slots"]["allocated"]["cpu"] == 0.5).then_some(())
    })
    .await;
    // And it is still controllable.
    k.c.cli_ok(&["stop", "-t", "1", &stays]);
    assert_eq!(k.inspect(&stays)["state"], "FAILED");
}
