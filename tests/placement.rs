//! Placement never refuses on a stale view: kernels run back to back on the one slot that
//! fits them (a fake GPU; memory kept scarce with `resource/reserved_memory`), removed and
//! created again at once, with no pause for a heartbeat — and with two full agents, the
//! one that just freed its slot gets the next kernel. Real manager, agents, etcd and Docker;
//! every container is removed by namespace label when the cluster drops, also on failure.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster, KernelCluster, Proc, TEST_IMAGE};

const T: Duration = Duration::from_secs(30);
const ROUNDS: usize = 50;
const MIB: u64 = 1 << 20;

/// `run -d ARGS…`: the new kernel's id, or the CLI's error.
fn try_run(c: &Cluster, args: &[&str]) -> Result<String, String> {
    let mut full = vec!["run", "-d"];
    full.extend_from_slice(args);
    let out = c.cli(&full);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Removes the kernel and runs the next one at once, `ROUNDS` times; returns the refusals.
async fn back_to_back(c: &Cluster, first: String, args: &[&str]) -> Vec<String> {
    let mut current = first;
    let mut refusals = Vec::new();
    for _ in 0..ROUNDS {
        c.cli_ok(&["rm", "-f", &current]);
        current = match try_run(c, args) {
            Ok(id) => id,
            Err(e) => {
                refusals.push(e);
                // Go on from a running kernel, so each round asks the same thing.
                wait_for(T, "a kernel after a refusal", || async {
                    try_run(c, args).ok()
                })
                .await
            }
        };
    }
    refusals
}

/// Waits until agent `id`'s heartbeats show `slot` with nothing free, so that the manager's
/// last report from it says it is full when the rounds begin.
async fn reported_full(c: &Cluster, id: &str, slot: &str, below: u64) {
    wait_for(
        T,
        &format!("{id}'s heartbeat to show {slot} taken"),
        || async {
            let free = c.node(id)?["slots"]["free"][slot].as_u64()?;
            (free < below).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_gpu_removed_and_asked_for_again_at_once_is_never_refused() {
    // Stand-in: no GPU on CI, so one fake GPU from config.
    let k = KernelCluster::start_with(
        "place-gpu",
        &[(
            "docker/fake_gpus/0/id",
            "GPU-00000000-0000-0000-0000-0000000000b1",
        )],
    )
    .await;
    wait_for(T, "1 GPU in the agent's slots", || async {
        (k.c.node("a1")?["slots"]["total"]["gpus"] == 1).then_some(())
    })
    .await;
    let args = ["--gpus", "1", TEST_IMAGE, "sleep", "600"];
    let first = try_run(&k.c, &args).expect("the first GPU kernel");
    // The GPU really is scarce: a second kernel is refused, naming the slot.
    let err = try_run(&k.c, &args).expect_err("two kernels on one GPU");
    assert!(err.contains("no alive agent"), "{err}");
    assert!(err.contains("gpus: 1 requested, 0 of 1 free"), "{err}");
    reported_full(&k.c, "a1", "gpus", 1).await;

    let refusals = back_to_back(&k.c, first, &args).await;
    assert!(
        refusals.is_empty(),
        "{} of {ROUNDS} refused: {refusals:#?}",
        refusals.len()
    );
    assert_eq!(k.ps().len(), 1, "one GPU kernel at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_kernel_that_ended_or_was_stopped_frees_its_gpu_for_the_next_at_once() {
    let k = KernelCluster::start_with(
        "place-end",
        &[(
            "docker/fake_gpus/0/id",
            "GPU-00000000-0000-0000-0000-0000000000d1",
        )],
    )
    .await;
    wait_for(T, "1 GPU in the agent's slots", || async {
        (k.c.node("a1")?["slots"]["total"]["gpus"] == 1).then_some(())
    })
    .await;
    // Ends at once on SIGTERM.
    let long = [
        "--gpus",
        "1",
        TEST_IMAGE,
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done",
    ];
    let short = ["--gpus", "1", TEST_IMAGE, "sh", "-c", "sleep 0.3"];
    let mut refusals = Vec::new();
    for round in 0..20 {
        // Even rounds: the kernel ends by itself, as a job does (a workflow engine submits
        // the next one when it sees the end). Odd rounds: it is stopped.
        let ended = round % 2 == 0;
        let args: &[&str] = if ended { &short } else { &long };
        let id = match try_run(&k.c, args) {
            Ok(id) => id,
            Err(e) => {
                refusals.push(format!("round {round}: {e}"));
                continue;
            }
        };
        if ended {
            k.wait_state(&id, "DONE", T).await;
        } else {
            k.c.cli_ok(&["stop", &id]);
        }
    }
    // The last kernel ended; one more must fit at once.
    if let Err(e) = try_run(&k.c, &long) {
        refusals.push(format!("after the rounds: {e}"));
    }
    assert!(refusals.is_empty(), "{refusals:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_for_one_kernel_removed_and_asked_for_again_at_once_is_never_refused() {
    let k = KernelCluster::start("place-mem").await;
    // Keep back all memory but 96 MiB: one kernel of 64 MiB fits, two do not.
    let total = wait_for(T, "the agent's memory total", || async {
        k.c.node("a1")?["slots"]["total"]["memory_bytes"].as_u64()
    })
    .await;
    let reserved = total - 96 * MIB;
    k.c.cli_ok(&[
        "config",
        "set",
        "resource/reserved_memory",
        &reserved.to_string(),
    ]);
    wait_for(T, "the reserve in the agent's slots", || async {
        (k.c.node("a1")?["slots"]["reserved"]["memory_bytes"].as_u64() == Some(reserved))
            .then_some(())
    })
    .await;
    let args = ["-m", "64MiB", TEST_IMAGE, "sleep", "600"];
    let first = try_run(&k.c, &args).expect("the first 64 MiB kernel");
    let err = try_run(&k.c, &args).expect_err("two 64 MiB kernels in 96 MiB");
    assert!(err.contains("no alive agent"), "{err}");
    assert!(err.contains("memory: 64"), "{err}");
    reported_full(&k.c, "a1", "memory_bytes", 64 * MIB).await;

    let refusals = back_to_back(&k.c, first, &args).await;
    assert!(
        refusals.is_empty(),
        "{} of {ROUNDS} refused: {refusals:#?}",
        refusals.len()
    );
    assert_eq!(k.ps().len(), 1, "one kernel at the end");
}

/// A manager and agents `a1`, `a2`, each with one fake GPU of its own.
struct TwoAgents {
    _agents: Vec<Proc>,
    _manager: Proc,
    c: Cluster,
}

impl TwoAgents {
    async fn start() -> Self {
        let c = Cluster::start("place-two").await;
        c.cli_ok(&["config", "set", "docker/cache_usage", "cache_first"]);
        for (id, gpu) in [
            ("a1", "GPU-00000000-0000-0000-0000-0000000000c1"),
            ("a2", "GPU-00000000-0000-0000-0000-0000000000c2"),
        ] {
            c.cli_ok(&["config", "set", "--agent", id, "docker/fake_gpus/0/id", gpu]);
        }
        let manager = c.manager("m1", &[]);
        let agents = vec![c.agent("a1"), c.agent("a2")];
        for id in ["a1", "a2"] {
            wait_for(T, &format!("{id} ALIVE with 1 GPU"), || async {
                let n = c.node(id)?;
                (n["state"] == "ALIVE" && n["slots"]["total"]["gpus"] == 1).then_some(())
            })
            .await;
        }
        Self {
            _agents: agents,
            _manager: manager,
            c,
        }
    }

    fn agent_of(&self, id: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.c.cli_ok(&["inspect", id])).expect("inspect JSON");
        v["agent_id"].as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_agents_full_the_one_that_just_freed_its_gpu_gets_the_next_kernel() {
    let t = TwoAgents::start().await;
    let args = ["--gpus", "1", TEST_IMAGE, "sleep", "600"];
    let x = try_run(&t.c, &args).expect("a first GPU kernel");
    let y = try_run(&t.c, &args).expect("a second GPU kernel");
    let (mut on_a1, mut on_a2) = (x, y);
    if t.agent_of(&on_a1) != "a1" {
        std::mem::swap(&mut on_a1, &mut on_a2);
    }
    assert_eq!(
        (t.agent_of(&on_a1), t.agent_of(&on_a2)),
        ("a1".to_string(), "a2".to_string()),
        "one GPU kernel on each agent"
    );
    let err = try_run(&t.c, &args).expect_err("both agents full");
    assert!(err.contains("no alive agent"), "{err}");
    reported_full(&t.c, "a1", "gpus", 1).await;
    reported_full(&t.c, "a2", "gpus", 1).await;

    for round in 0..10 {
        t.c.cli_ok(&["rm", "-f", &on_a2]);
        on_a2 = try_run(&t.c, &args)
            .unwrap_or_else(|e| panic!("round {round}: refused after a removal on a2: {e}"));
        assert_eq!(t.agent_of(&on_a2), "a2", "round {round}");
    }
    assert_eq!(t.agent_of(&on_a1), "a1", "a1's kernel untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_says_full_is_checked_with_the_agent_before_refusing() {
    use deckhand::wire::pb::agent_service_client::AgentServiceClient;
    use deckhand::wire::pb::{ControlKernelRequest, CreateKernelRequest, KernelAction, KernelSpec};

    // Heartbeats a minute apart: between them the manager knows only what it did itself.
    let k = KernelCluster::start_with(
        "place-stale",
        &[
            (
                "docker/fake_gpus/0/id",
                "GPU-00000000-0000-0000-0000-0000000000e1",
            ),
            ("agent/heartbeat_interval", "60s"),
        ],
    )
    .await;
    wait_for(T, "1 GPU in the agent's slots", || async {
        (k.c.node("a1")?["slots"]["total"]["gpus"] == 1).then_some(())
    })
    .await;
    // A GPU kernel made through the agent's own gRPC service: the manager never placed it,
    // so it learns of its GPU only from a heartbeat, and of its end from nothing it can
    // count (it never knew what the kernel held).
    let mut agent = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .expect("agent gRPC");
    let behind = uuid::Uuid::new_v4().to_string();
    agent
        .create_kernel(CreateKernelRequest {
            spec: Some(KernelSpec {
                kernel_id: behind.clone(),
                image: TEST_IMAGE.into(),
                command: vec!["sleep".into(), "600".into()],
                gpus: "1".into(),
                cache_usage: "cache_first".into(),
                ..Default::default()
            }),
            array: None,
        })
        .await
        .expect("a GPU kernel created on the agent directly");
    // A changed interval is reported at once: that heartbeat says the GPU is taken.
    k.c.cli_ok(&["config", "set", "agent/heartbeat_interval", "61s"]);
    reported_full(&k.c, "a1", "gpus", 1).await;
    let args = ["--gpus", "1", TEST_IMAGE, "sleep", "600"];
    let err = try_run(&k.c, &args).expect_err("the GPU is taken");
    assert!(
        err.contains("no alive agent") && err.contains("gpus 1"),
        "{err}"
    );

    // Removed behind the manager's back: the agent has the GPU free again, the manager's
    // view (until the next heartbeat, a minute away) still says it is taken.
    agent
        .control_kernel(ControlKernelRequest {
            kernel_id: behind.clone(),
            action: KernelAction::Remove as i32,
            signal: 0,
            grace_ms: 0,
            force: true,
        })
        .await
        .expect("removed on the agent directly");
    let node = k.c.node("a1").expect("node a1");
    assert_eq!(
        node["slots"]["free"]["gpus"], 0,
        "the view is stale: {node}"
    );

    // The manager asks the agent, whose answer is the authority: placed, not refused.
    let id = try_run(&k.c, &args).expect("placed although the view said the GPU was taken");
    let info: serde_json::Value =
        serde_json::from_str(&k.c.cli_ok(&["inspect", &id])).expect("inspect JSON");
    assert_eq!(info["agent_id"], "a1", "{info}");
    assert_eq!(info["state"], "RUNNING", "{info}");
    assert_eq!(info["slots"]["gpus"], 1, "{info}");
}
