//! Cordon and drain (`deckhand node cordon|uncordon|drain`), against real etcd, Docker,
//! manager and agent: a cordoned agent gets no new kernel (placement refuses, naming the
//! cordon, and so does the agent itself when asked directly) while its own kernels go on;
//! the state lives in etcd and survives manager and agent restarts; a drain stops the
//! kernels still running at its deadline with a reason and events, lets those that end
//! first end, and is kept when the deadline passes while the manager is down or the agent
//! is down. Bad requests are refused naming the field.

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, KernelCluster, TEST_IMAGE};
use deckhand::wire::pb::agent_service_client::AgentServiceClient;
use deckhand::wire::pb::cluster_service_client::ClusterServiceClient;
use deckhand::wire::pb::{
    CreateKernelRequest, KernelSpec, KernelState, NodeAction, SetNodeScheduleRequest,
};
use futures::StreamExt;
use tonic::Code;

const T: Duration = Duration::from_secs(30);

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn schedule_is(k: &KernelCluster, want: &str) -> serde_json::Value {
    wait_for(T, &format!("a1 {want}"), || async {
        k.c.node("a1").filter(|n| n["schedule"] == want)
    })
    .await
}

fn restart_manager(k: &mut KernelCluster) {
    k.manager.kill9();
    k.manager = k.c.manager("m1", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_agent_gets_no_new_kernels_and_keeps_its_own() {
    let mut k = KernelCluster::start("cordon").await;
    assert_eq!(k.c.node("a1").unwrap()["schedule"], "schedulable");
    let running = k.run_detached(&[TEST_IMAGE, "sleep", "300"]);
    k.wait_state(&running, "RUNNING", T).await;

    let out = k.c.cli_ok(&["node", "cordon", "a1"]);
    assert!(out.contains("cordoned"), "{out}");
    let n = schedule_is(&k, "cordoned").await;
    assert!(n["cordoned_at_ms"].as_i64().unwrap_or_default() > 0, "{n}");
    let table = k.c.cli_ok(&["nodes"]);
    assert!(table.contains("cordoned"), "{table}");

    // Placement leaves it out, and names why.
    let out = k.c.cli(&["run", "-d", TEST_IMAGE, "true"]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("cordoned") && err.contains("`a1`"), "{err}");
    // Asked by name: refused naming the cordon and the way back.
    let out = k.c.cli(&["run", "-d", "--agent", "a1", TEST_IMAGE, "true"]);
    let err = stderr_of(&out);
    assert!(
        err.contains("agent `a1` is cordoned") && err.contains("deckhand node uncordon a1"),
        "{err}"
    );
    // The agent itself refuses too (it follows its etcd key), FAILED_PRECONDITION.
    let mut agent = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .unwrap();
    let spec = KernelSpec {
        kernel_id: uuid::Uuid::new_v4().to_string(),
        image: TEST_IMAGE.into(),
        command: vec!["true".into()],
        ..Default::default()
    };
    let err = agent
        .create_kernel(CreateKernelRequest {
            spec: Some(spec.clone()),
            array: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("cordoned"), "{err:?}");
    assert_eq!(k.inspect(&running)["state"], "RUNNING");

    // In etcd, not in a process: a new manager and a restarted agent still hold it.
    restart_manager(&mut k);
    k.restart_agent().await;
    schedule_is(&k, "cordoned").await;
    let out = k.c.cli(&["run", "-d", TEST_IMAGE, "true"]);
    assert!(stderr_of(&out).contains("cordoned"), "{out:?}");
    assert_eq!(k.inspect(&running)["state"], "RUNNING");

    k.c.cli_ok(&["node", "uncordon", "a1"]);
    schedule_is(&k, "schedulable").await;
    let id = wait_for(T, "a kernel placed after uncordon", || async {
        let out = k.c.cli(&["run", "-d", TEST_IMAGE, "true"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
    .await;
    k.wait_state(&id, "DONE", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_stops_the_kernels_still_running_at_its_deadline_with_events() {
    let k = KernelCluster::start("drain").await;
    let short = k.run_detached(&[TEST_IMAGE, "sleep", "2"]);
    let long = k.run_detached(&["--stop-timeout", "1s", TEST_IMAGE, "sleep", "300"]);
    k.wait_state(&long, "RUNNING", T).await;
    let mut events = k.agent_events().await;
    let asked = Instant::now();
    let out = k.c.cli_ok(&["node", "drain", "a1", "--deadline", "6s"]);
    assert!(out.contains("draining"), "{out}");
    let n = schedule_is(&k, "draining").await;
    assert!(
        n["drain_deadline_ms"].as_i64().unwrap_or_default() > 0,
        "{n}"
    );

    // The one that ends first ends by itself.
    let info = k.wait_ended(&short, T).await;
    assert_eq!(info["state"], "DONE", "{info}");
    let info = k.wait_ended(&long, T).await;
    assert!(
        asked.elapsed() >= Duration::from_secs(5),
        "stopped after {:?}, before the deadline",
        asked.elapsed()
    );
    let reason = info["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("node `a1` drained"), "{info}");
    assert_ne!(info["state"], "RUNNING");
    schedule_is(&k, "drained").await;

    // Events: the kernel was told when it would be stopped, then stopped naming the drain.
    let mut told = false;
    let mut stopped = false;
    while let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        if ev.kernel_id != long {
            continue;
        }
        told |= ev.reason.contains("is draining: the kernel is stopped at");
        stopped |= ev.state == KernelState::Terminating as i32 && ev.reason.contains("drained");
    }
    assert!(told && stopped, "told {told}, stopped {stopped}");
    // Still cordoned after the drain: nothing new lands on it.
    let out = k.c.cli(&["run", "-d", TEST_IMAGE, "true"]);
    let err = stderr_of(&out);
    assert!(
        err.contains("every alive agent is cordoned") && err.contains("`a1` (drained)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_that_passes_while_the_manager_or_the_agent_is_down_is_kept() {
    let mut k = KernelCluster::start("draindown").await;
    let a = k.run_detached(&["--stop-timeout", "1s", TEST_IMAGE, "sleep", "300"]);
    k.wait_state(&a, "RUNNING", T).await;
    k.c.cli_ok(&["node", "drain", "a1", "--deadline", "3s"]);
    // Manager down across the deadline: the agent carries it out by itself.
    k.manager.kill9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let container = format!("deckhand-{}-{a}", k.c.ns);
    wait_for(T, "the container stopped with no manager", || async {
        (common::docker_inspect(&container, "{{.State.Running}}") == "false").then_some(())
    })
    .await;
    k.manager = k.c.manager("m1", &[]);
    let info = k.wait_ended(&a, T).await;
    assert!(
        info["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("drained"),
        "{info}"
    );
    schedule_is(&k, "drained").await;

    // Agent down across a new drain's deadline: stopped as soon as it is back.
    k.c.cli_ok(&["node", "uncordon", "a1"]);
    schedule_is(&k, "schedulable").await;
    let b = wait_for(T, "a kernel placed after uncordon", || async {
        let out = k.c.cli(&[
            "run",
            "-d",
            "--stop-timeout",
            "1s",
            TEST_IMAGE,
            "sleep",
            "300",
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
    .await;
    k.wait_state(&b, "RUNNING", T).await;
    k.agent.kill9();
    k.c.cli_ok(&["node", "drain", "a1", "--deadline", "1s"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    k.agent = k.c.agent_on("a1", k.scratch());
    let info = k.wait_ended(&b, T).await;
    assert!(
        info["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("drained"),
        "{info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_node_requests_are_refused_naming_the_field_and_change_nothing() {
    let k = KernelCluster::start("drainbad").await;
    let mgr = format!("http://127.0.0.1:{}", k.manager.port);
    let mut c = ClusterServiceClient::connect(mgr).await.unwrap();
    let cases = [
        (
            "a1",
            NodeAction::Drain,
            "soon",
            Code::InvalidArgument,
            "deadline",
        ),
        (
            "a1",
            NodeAction::Drain,
            "-5m",
            Code::InvalidArgument,
            "deadline",
        ),
        (
            "a1",
            NodeAction::Drain,
            "400d",
            Code::InvalidArgument,
            "deadline",
        ),
        (
            "a1",
            NodeAction::Cordon,
            "5m",
            Code::InvalidArgument,
            "deadline",
        ),
        (
            "a1",
            NodeAction::Unspecified,
            "",
            Code::InvalidArgument,
            "action",
        ),
        (
            "",
            NodeAction::Cordon,
            "",
            Code::InvalidArgument,
            "agent_id",
        ),
        ("nope", NodeAction::Cordon, "", Code::NotFound, "agent_id"),
    ];
    for (agent, action, deadline, code, field) in cases {
        let err = c
            .set_node_schedule(SetNodeScheduleRequest {
                agent_id: agent.into(),
                action: action as i32,
                deadline: deadline.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{agent} {action:?} {deadline}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{agent} {action:?} {deadline}: {err:?}"
        );
    }
    // The CLI says the same, and nothing was written.
    let out = k.c.cli(&["node", "drain", "a1", "--deadline", "soon"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("deadline"), "{out:?}");
    let mut etcd = k.c.etcd_client().await;
    let key = format!("/deckhand/{}/nodes/agents/a1/drain", k.c.ns);
    assert_eq!(etcd.get(key, None).await.unwrap().kvs().len(), 0);
    assert_eq!(k.c.node("a1").unwrap()["schedule"], "schedulable");
}
