//! Docker-mode settings from etcd, against a real private registry (Debian's
//! `docker-registry` with htpasswd auth, started per test on a loopback port), the real
//! Docker engine, etcd, manager and agent: registry credentials, the three cache policies,
//! one pull per image, pull progress and timeouts, volumes by slug, network, DNS, process
//! data and image garbage collection. Every setting is changed live, without a restart.

#[path = "../common/mod.rs"]
mod common;

mod pulls;
mod settings;

use std::time::Duration;

use common::{
    build_variant, docker_inspect, docker_ok, image_id, untag, wait_for, KernelCluster, Registry,
    Tags, TEST_IMAGE,
};
use deckhand::wire::pb::agent_service_client::AgentServiceClient;
use deckhand::wire::pb::cluster_service_client::ClusterServiceClient;
use deckhand::wire::pb::{
    CreateKernelRequest, KernelEvent, KernelSpec, RunKernelRequest, WatchEventsRequest,
};
use futures::StreamExt;

const T: Duration = Duration::from_secs(30);
const USER: &str = "deckhand";
const PASSWORD: &str = "pw-Kx81-never-shown";

/// A kernel cluster whose config knows `reg` with the right credentials.
async fn cluster_with_registry(test: &str, reg: &Registry) -> KernelCluster {
    let entry = format!(
        "{{url = \"{}\", username = \"{}\", password = \"{}\"}}",
        reg.addr(),
        reg.user,
        reg.password
    );
    KernelCluster::start_with(test, &[("docker/registries/private", &entry)]).await
}

/// The events the agent still keeps, in order (after its first: `after_seq` 0 means
/// "from now on").
async fn agent_events(k: &KernelCluster) -> Vec<KernelEvent> {
    let mut client = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .expect("agent gRPC");
    let mut s = client
        .watch_events(WatchEventsRequest { after_seq: 1 })
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    while let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_millis(500), s.next()).await {
        out.push(ev);
    }
    out
}

/// Runs `image` with `policy` detached; returns (kernel id, final JSON): RUNNING/DONE or
/// FAILED.
async fn run_with(k: &KernelCluster, policy: &str, image: &str) -> (String, serde_json::Value) {
    let id = uuid::Uuid::new_v4().to_string();
    let _ = k.c.cli(&[
        "run",
        "-d",
        "--id",
        &id,
        "--cache-usage",
        policy,
        "--cpus",
        "0.25",
        image,
        "sleep",
        "30",
    ]);
    let v = wait_for(T, &format!("kernel {id} settled"), || async {
        let out = k.c.cli(&["inspect", &id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        ["RUNNING", "FAILED"]
            .contains(&v["state"].as_str()?)
            .then_some(v)
    })
    .await;
    (id, v)
}

/// The image id the kernel's container was made from.
fn ran_image(v: &serde_json::Value) -> String {
    docker_inspect(v["container_id"].as_str().unwrap(), "{{.Image}}")
}

/// Removes a Docker network when dropped.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}
