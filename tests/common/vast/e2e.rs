//! Helpers for the Vast.ai runtime's end-to-end tests: a cluster whose agent rents from a
//! stand-in, `run` with `--runtime vastai`, and readers of what the agent reports.
use std::time::Duration;

use deckhand::wire::pb::{KernelEvent, KernelState};
use futures::StreamExt;

use super::VastStandIn;
use crate::common::{wait_for, KernelCluster};

pub const KEY: &str = "vast-key-5f1e9c0a7b3d";
pub const T: Duration = Duration::from_secs(60);

/// A cluster whose agent rents from `vast` with `settings` on top of the API URL and key.
pub async fn cluster(test: &str, vast: &VastStandIn, settings: &[(&str, &str)]) -> KernelCluster {
    let url = vast.url();
    let mut all: Vec<(&str, &str)> = vec![
        ("vast_api/api_key", KEY),
        ("vast_api/api_url", url.as_str()),
        ("vast_api/poll_interval", "300ms"),
        ("vast_api/provision_timeout", "30s"),
    ];
    all.extend_from_slice(settings);
    let k = KernelCluster::start_with(test, &all).await;
    wait_for(T, "the agent offers the vastai runtime", || async {
        let n = k.c.node("a1")?;
        let runtimes = n["runtimes"].as_array()?;
        runtimes.iter().any(|r| r["name"] == "vastai").then_some(())
    })
    .await;
    k
}

pub fn run(k: &KernelCluster, args: &[&str]) -> std::process::Output {
    let mut full = vec!["run", "-d", "--runtime", "vastai"];
    full.extend_from_slice(args);
    k.c.cli(&full)
}

pub fn run_ok(k: &KernelCluster, args: &[&str]) -> String {
    let out = run(k, args);
    assert!(
        out.status.success(),
        "run failed: {out:?}\nagent log:\n{}",
        k.agent.log()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn instance_of(info: &serde_json::Value) -> u64 {
    info["runtime_info"]["instance_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no instance id in {info}"))
}

/// Kernel `id`'s events in `stream` (the agent's `WatchEvents`, opened before the kernel
/// was run) up to its first one in a final state.
pub async fn events_of(stream: &mut tonic::Streaming<KernelEvent>, id: &str) -> Vec<KernelEvent> {
    let mut out = Vec::new();
    loop {
        let ev = tokio::time::timeout(T, stream.next())
            .await
            .expect("an event")
            .expect("stream")
            .expect("event");
        if ev.kernel_id != id {
            continue;
        }
        let last = matches!(
            ev.state(),
            KernelState::Done | KernelState::Failed | KernelState::Cancelled
        );
        out.push(ev);
        if last {
            return out;
        }
    }
}

/// The states `events` went through, each once, in order.
pub fn states(events: &[KernelEvent]) -> Vec<KernelState> {
    let mut out: Vec<KernelState> = events.iter().map(KernelEvent::state).collect();
    out.dedup();
    out
}

/// The `vastai` entry of agent `agent`'s runtimes in `nodes --json`.
pub fn vastai_of(k: &KernelCluster, agent: &str) -> Option<serde_json::Value> {
    let n = k.c.node(agent)?;
    n["runtimes"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == "vastai")
        .cloned()
}
