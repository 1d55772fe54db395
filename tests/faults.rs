//! Fault injection against the real components: the agent is killed with -9 and restarted
//! with kernels in every state, SIGTERMed with `agent/on_shutdown` keep and stop, the
//! manager is stopped and restarted, and a manager reconciles with `SyncKernels`. Each test
//! counts containers, scratch dirs and allocations before and after; containers that are not
//! this agent's (another namespace, another agent id, no deckhand labels at all) must be
//! untouched.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{containers, docker_inspect, docker_ok, wait_for, KernelCluster, TEST_IMAGE};
use deckhand::wire::pb::agent_service_client::AgentServiceClient;
use deckhand::wire::pb::SyncKernelsRequest;

const T: Duration = Duration::from_secs(30);

/// A container that is not ours; removed when dropped.
struct Foreign(String);

impl Foreign {
    fn start(name: &str, labels: &[(&str, &str)]) -> Self {
        let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), name.into()];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.extend([TEST_IMAGE.into(), "sleep".into(), "300".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self(docker_ok(&args))
    }

    fn running(&self) -> bool {
        docker_inspect(&self.0, "{{.State.Running}}") == "true"
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

fn allocated_cpu(k: &KernelCluster) -> Option<f64> {
    k.c.node("a1")?["slots"]["allocated"]["cpu"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_in_every_kernel_state_recovers_each_kernel_and_touches_nothing_else() {
    let mut k = KernelCluster::start_with(
        "kill9",
        &[
            ("agent/heartbeat_interval", "500ms"),
            ("docker/pull_inactivity_timeout", "10m"),
        ],
    )
    .await;
    let ns = k.c.ns.clone();
    let scratch = k.scratch();
    let cpu = ["--cpus", "0.25"];
    let run = |extra: &[&str]| {
        let mut args = cpu.to_vec();
        args.extend_from_slice(extra);
        k.run_detached(&args)
    };
    let running = run(&[TEST_IMAGE, "sleep", "300"]);
    let suspended = run(&[TEST_IMAGE, "sleep", "300"]);
    k.c.cli_ok(&["suspend", &suspended]);
    let held = run(&["--hold", TEST_IMAGE, "sh", "-c", "echo released"]);
    let exits = run(&[TEST_IMAGE, "sh", "-c", "sleep 4; exit 3"]);
    // Ignores SIGTERM: its stop (60 s grace) is still running when the agent dies; after
    // the restart the agent stops it again with the kernel's own grace (2 s).
    let terminating = run(&[
        "--stop-timeout",
        "2s",
        TEST_IMAGE,
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 1; done",
    ]);
    let mut stopper =
        k.c.command_for(&["stop", "-t", "60", &terminating])
            .spawn()
            .unwrap();
    k.wait_state(&terminating, "TERMINATING", T).await;
    // A pull that never finishes (a registry that accepts and never answers).
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled_image = format!(
        "127.0.0.1:{}/stalls/forever:latest",
        stall.local_addr().unwrap().port()
    );
    let pulling = uuid::Uuid::new_v4().to_string();
    let mut puller =
        k.c.command_for(&[
            "run",
            "-d",
            "--id",
            &pulling,
            "--cpus",
            "0.25",
            &stalled_image,
            "true",
        ])
        .spawn()
        .unwrap();
    k.wait_state(&pulling, "PULLING", T).await;
    // A running kernel whose record will be lost, one whose scratch dir will be lost.
    let unrecorded = run(&[TEST_IMAGE, "sleep", "300"]);
    let no_scratch = run(&[TEST_IMAGE, "sleep", "300"]);
    // Containers that are not this agent's.
    let other_ns = Foreign::start(
        &format!("foreign-ns-{ns}"),
        &[
            ("io.deckhand.namespace", "someone-else"),
            ("io.deckhand.agent-id", "a1"),
            ("io.deckhand.kernel-id", "x"),
        ],
    );
    let other_agent = Foreign::start(
        &format!("foreign-agent-{ns}"),
        &[
            ("io.deckhand.namespace", &ns),
            ("io.deckhand.agent-id", "a2"),
            ("io.deckhand.kernel-id", "y"),
        ],
    );
    let plain = Foreign::start(&format!("plain-{ns}"), &[]);
    // Eight kernels of 0.25 CPU each hold slots (two fewer once `exits` ended).
    wait_for(T, "all allocated", || async {
        (allocated_cpu(&k)? >= 1.75).then_some(())
    })
    .await;

    k.agent.kill9();
    k.agent.wait_exit(Duration::from_secs(5)).await;
    let _ = stopper.kill();
    let _ = stopper.wait();
    let _ = puller.kill();
    let _ = puller.wait();
    // While it is down: a kernel exits, a record and a scratch dir vanish, an orphan
    // scratch dir appears.
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::fs::remove_file(scratch.join(format!(".deckhand/kernels/{unrecorded}.json"))).unwrap();
    std::fs::remove_dir_all(scratch.join(&no_scratch)).unwrap();
    let orphan = scratch.join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(orphan.join("work")).unwrap();
    let containers_before = containers(&ns).len();

    k.agent = k.c.agent_on("a1", scratch.clone());
    wait_for(T, "recovery", || async {
        k.agent.log().contains("kernels recovered").then_some(())
    })
    .await;

    assert_eq!(
        k.wait_state(&running, "RUNNING", T).await["slots"]["cpu"],
        0.25
    );
    k.wait_state(&suspended, "SUSPENDED", T).await;
    k.wait_state(&held, "HELD", T).await;
    assert_eq!(
        k.wait_state(&exits, "FAILED", T).await["exit_code"],
        3,
        "real exit code"
    );
    let t = k.wait_state(&terminating, "FAILED", T).await;
    assert!(
        t["reason"].as_str().unwrap().contains("stopped on request"),
        "{t}"
    );
    k.wait_state(&pulling, "PULLING", T).await;
    // Re-adopted with its resources counted; scratch dir made again; orphan removed.
    let adopted = k.wait_state(&unrecorded, "RUNNING", T).await;
    assert_eq!(adopted["slots"]["cpu"], 0.25, "{adopted}");
    assert!(
        adopted["reason"].as_str().unwrap().contains("re-adopted"),
        "{adopted}"
    );
    assert!(scratch.join(&no_scratch).join("work").is_dir());
    assert!(!orphan.exists(), "the orphan scratch dir is still there");
    // Allocations exactly: running, suspended, held, pulling, unrecorded, no_scratch.
    wait_for(T, "allocations rebuilt", || async {
        (allocated_cpu(&k)? == 1.5).then_some(())
    })
    .await;
    // Nothing else touched, no container without an owner.
    assert!(other_ns.running() && other_agent.running() && plain.running());
    let ours: Vec<String> = containers(&ns)
        .into_iter()
        .filter(|c| !c.starts_with(&other_agent.0))
        .collect();
    let known: Vec<String> = k
        .ps()
        .iter()
        .filter_map(|v| v["container_id"].as_str().map(str::to_string))
        .filter(|c| !c.is_empty())
        .collect();
    for c in &ours {
        assert!(known.contains(c), "container {c} has no kernel");
    }
    assert_eq!(containers(&ns).len(), containers_before);
    // Everything is still controllable.
    k.c.cli_ok(&["resume", &suspended]);
    k.c.cli_ok(&["release", &held]);
    k.wait_state(&held, "DONE", T).await;
    k.c.cli_ok(&[
        "rm",
        "-f",
        &running,
        &suspended,
        &held,
        &exits,
        &terminating,
        &pulling,
        &unrecorded,
        &no_scratch,
    ]);
    wait_for(T, "everything released", || async {
        (allocated_cpu(&k)? == 0.0).then_some(())
    })
    .await;
    assert!(other_ns.running() && other_agent.running() && plain.running());
    drop(stall);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_kernels_by_default_and_stops_them_with_on_shutdown_stop() {
    let mut k = KernelCluster::start("shutdown").await;
    let kept = k.run_detached(&[TEST_IMAGE, "sleep", "300"]);
    k.agent.terminate();
    let status = k.agent.wait_exit(T).await.expect("agent exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    let v = k.inspect_container(&kept);
    assert_eq!(v, "true", "a kernel was stopped by a default shutdown");

    k.agent = k.c.agent_on("a1", k.scratch());
    k.wait_state(&kept, "RUNNING", T).await;
    let applied = k.agent.log().matches("config applied").count();
    k.c.cli_ok(&["config", "set", "agent/on_shutdown", "stop"]);
    // The setting is live: wait until the agent has it.
    wait_for(T, "on_shutdown applied", || async {
        (k.agent.log().matches("config applied").count() > applied).then_some(())
    })
    .await;
    k.agent.terminate();
    k.agent.wait_exit(T).await.expect("agent exits on SIGTERM");
    assert!(k.agent.log().contains("agent/on_shutdown = stop"));
    assert_eq!(
        k.inspect_container(&kept),
        "false",
        "still running after on_shutdown = stop"
    );
    // The record says how it ended.
    k.agent = k.c.agent_on("a1", k.scratch());
    let v = k.wait_state(&kept, "FAILED", T).await;
    assert!(
        v["reason"].as_str().unwrap().contains("stopped on request"),
        "{v}"
    );
    k.c.cli_ok(&["rm", &kept]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_events_wait_for_a_manager_and_sync_reconciles_its_view() {
    let mut k = KernelCluster::start("sync").await;
    let a = k.run_detached(&[TEST_IMAGE, "sleep", "300"]);
    // Manager down: kernels keep running, events wait in the agent.
    k.manager.kill9();
    let b = {
        let mut client = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
            .await
            .unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        client
            .create_kernel(deckhand::wire::pb::CreateKernelRequest {
                spec: Some(deckhand::wire::pb::KernelSpec {
                    kernel_id: id.clone(),
                    image: TEST_IMAGE.into(),
                    command: vec!["sleep".into(), "300".into()],
                    cache_usage: "cache_first".into(),
                    ..Default::default()
                }),
                array: None,
            })
            .await
            .expect("the agent creates kernels without a manager");
        id
    };
    assert!(k.agent.is_running());
    k.manager = k.c.manager("m1", &[]);
    // The new manager learns of `b` from the buffered events (it never placed it).
    wait_for(T, "events delivered to the new manager", || async {
        let out = k.c.cli(&["inspect", &b]);
        out.status.success().then_some(())
    })
    .await;

    // The new manager reconciled with the agent on its first heartbeat: it holds both.
    wait_for(T, "manager reconciled", || async {
        let log = k.manager.log();
        (log.contains("kernels reconciled with the agent") && log.contains("adopted=2"))
            .then_some(())
    })
    .await;

    // SyncKernels: the manager knows `a` and a kernel the agent never had.
    let ghost = uuid::Uuid::new_v4().to_string();
    let mut client = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .unwrap();
    let r = client
        .sync_kernels(SyncKernelsRequest {
            known_kernel_ids: vec![a.clone(), ghost.clone()],
            destroy_unknown: false,
        })
        .await
        .unwrap()
        .into_inner();
    let unknown: Vec<&str> = r.unknown.iter().map(|k| k.kernel_id.as_str()).collect();
    assert_eq!(unknown, [b.as_str()]);
    assert_eq!(r.lost.len(), 1);
    assert_eq!(r.lost[0].kernel_id, ghost);
    assert!(r.lost[0].reason.contains("has no kernel"), "{:?}", r.lost);
    assert!(r.destroyed.is_empty());
    assert_eq!(
        k.inspect(&b)["state"],
        "RUNNING",
        "reporting alone destroys nothing"
    );
    // With destroy_unknown the agent removes what the manager does not know.
    let r = client
        .sync_kernels(SyncKernelsRequest {
            known_kernel_ids: vec![a.clone()],
            destroy_unknown: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.destroyed, std::slice::from_ref(&b));
    let left = containers(&k.c.ns);
    assert_eq!(left.len(), 1, "only `a` keeps a container");
    assert!(!Path::new(&k.scratch().join(&b)).exists());
    k.c.cli_ok(&["rm", "-f", &a]);
}

trait ContainerState {
    fn inspect_container(&self, id: &str) -> String;
}

impl ContainerState for KernelCluster {
    /// `State.Running` of the kernel's container, read from Docker.
    fn inspect_container(&self, id: &str) -> String {
        let name = format!("deckhand-{}-{id}", self.c.ns);
        docker_inspect(&name, "{{.State.Running}}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_leaves_kernels_running_and_the_agent_registers_again() {
    let mut k = KernelCluster::start_with(
        "etcddown",
        &[
            ("agent/lease_ttl", "3s"),
            ("agent/heartbeat_interval", "500ms"),
        ],
    )
    .await;
    let id = k.run_detached(&["--cpus", "0.25", TEST_IMAGE, "sleep", "300"]);
    let container = k.inspect(&id)["container_id"].as_str().unwrap().to_string();
    k.c.etcd_mut().stop();
    // Longer than the lease: the registration is gone, the kernel is not.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(k.agent.is_running());
    assert_eq!(docker_inspect(&container, "{{.State.Running}}"), "true");
    k.c.etcd_mut().restart(false).await;
    wait_for(T, "registered again", || k.c.registered("a1")).await;
    // The manager still sees the kernel, in the same container, and its slots.
    let v = k.wait_state(&id, "RUNNING", T).await;
    assert_eq!(v["container_id"], container.as_str());
    wait_for(T, "allocation reported", || async {
        (allocated_cpu(&k)? == 0.25).then_some(())
    })
    .await;
    let log = k.agent.log();
    assert!(
        log.contains("etcd connection lost") || log.contains("etcd unreachable"),
        "the outage is logged: {log}"
    );
    k.c.cli_ok(&["rm", "-f", &id]);
}
