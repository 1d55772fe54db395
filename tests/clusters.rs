//! Cluster kernels (Qarnot's `docker-cluster*` profiles) as a user notices them, against the
//! real agent, manager, CLI, etcd and Docker engine: N instances run as one kernel on a
//! private network where each finds the others by hostname; `ps`, `logs`, `exec` and
//! `files` name one instance as `<id>/<index>`; the kernel ends with its master (workers
//! stopped), a failing worker fails it; slots are given to all instances or to none; a
//! `docker-cluster` has no route outside its network while `docker-cluster-network` has;
//! suspend/resume act on all instances; an agent killed while starting one never leaves
//! some instances running alone.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{containers, docker_inspect, networks, wait_for, HostListener, KernelCluster};

const T: Duration = Duration::from_secs(60);

/// `deckhand run -d --profile PROFILE --instances N` of the local test image with these
/// constants, plus `extra` flags.
fn run(
    k: &KernelCluster,
    profile: &str,
    n: u32,
    constants: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    let n = n.to_string();
    k.run_profile(&["--profile", profile, "--instances", &n], constants, extra)
}

fn run_ok(
    k: &KernelCluster,
    profile: &str,
    n: u32,
    constants: &[(&str, &str)],
    extra: &[&str],
) -> String {
    let n = n.to_string();
    k.run_profile_ok(&["--profile", profile, "--instances", &n], constants, extra)
}

/// The kernel's containers by instance index, from their labels.
fn instances(ns: &str, id: &str) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = containers(ns)
        .into_iter()
        .filter(|c| docker_inspect(c, "{{index .Config.Labels \"io.deckhand.kernel-id\"}}") == id)
        .map(|c| {
            let i = docker_inspect(&c, "{{index .Config.Labels \"io.deckhand.instance\"}}");
            (i.parse().unwrap_or(u32::MAX), c)
        })
        .collect();
    out.sort();
    out
}

fn running(container: &str) -> bool {
    docker_inspect(container, "{{.State.Running}}") == "true"
}

/// Waits for every instance to have resolved the others by hostname (the master's script
/// prints `resolved` once it has).
const MASTER: &str = r#"sh -c 'for h in $(echo $CLUSTER_HOSTS | tr , " "); do until nslookup $h >/dev/null 2>&1; do sleep 0.2; done; done; echo "master $INSTANCE_ID/$INSTANCE_COUNT on $(hostname) resolved $CLUSTER_HOSTS"; until [ -f /home/work/done ]; do sleep 0.2; done; exit 3'"#;
const WORKER: &str = r#"sh -c 'echo "worker $INSTANCE_ID/$INSTANCE_COUNT on $(hostname) master=$CLUSTER_MASTER"; nslookup master >/dev/null && echo "worker $INSTANCE_ID found master"; exec sleep 600'"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_as_one_kernel_and_ends_with_its_master() {
    let mut k = KernelCluster::start("cluster-life").await;
    let id = run_ok(
        &k,
        "docker-cluster",
        3,
        &[("DOCKER_CMD_MASTER", MASTER), ("DOCKER_CMD_WORKER", WORKER)],
        &["--stop-timeout", "2s", "--cpus", "0.25"],
    );
    let info = k.wait_state(&id, "RUNNING", T).await;
    assert_eq!(info["spec"]["instances"], 3, "{info}");
    // The slots of all three instances, held once by the kernel.
    assert_eq!(info["slots"]["cpu"], 0.75, "{info}");
    wait_for(T, "the heartbeat to report the cluster's slots", || async {
        (k.c.node("a1")?["slots"]["allocated"]["cpu"] == 0.75).then_some(())
    })
    .await;
    let members = instances(&k.c.ns, &id);
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|(_, c)| running(c)), "{members:?}");
    // One network, made for the kernel; each instance has its hostname on it.
    let nets = networks(&k.c.ns);
    assert_eq!(nets.len(), 1, "{nets:?}");
    assert_eq!(
        docker_inspect(&members[0].1, "{{.Config.Hostname}}"),
        "master"
    );
    assert_eq!(
        docker_inspect(&members[2].1, "{{.Config.Hostname}}"),
        "worker-2"
    );
    // inspect lists the instances; ps shows them as <id>/<index>.
    let rt = &info["runtime_info"];
    assert!(
        rt["instance/0"]
            .as_str()
            .unwrap_or("")
            .starts_with("master "),
        "{info}"
    );
    assert!(
        rt["instance/2"]
            .as_str()
            .unwrap_or("")
            .starts_with("worker-2 "),
        "{info}"
    );
    let ps = k.c.cli_ok(&["ps"]);
    for i in 0..3 {
        assert!(ps.contains(&format!("{id}/{i}")), "{ps}");
    }
    // Every instance found the others by name.
    let master_log = wait_for(T, "the master to resolve its workers", || async {
        let l = k.c.cli_ok(&["logs", &format!("{id}/0")]);
        l.contains("resolved").then_some(l)
    })
    .await;
    assert!(
        master_log.contains("master 0/3 on master resolved master,worker-1,worker-2"),
        "{master_log}"
    );
    let w1 = wait_for(T, "worker 1's output", || async {
        let l = k.c.cli_ok(&["logs", &format!("{id}/1")]);
        l.contains("found master").then_some(l)
    })
    .await;
    assert!(w1.contains("worker 1/3 on worker-1 master=master"), "{w1}");
    assert!(
        !w1.contains("resolved"),
        "instance 1's logs are its own: {w1}"
    );
    // exec in one instance.
    let out = k.c.cli_ok(&[
        "exec",
        &format!("{id}/2"),
        "sh",
        "-c",
        "echo id=$INSTANCE_ID host=$(hostname)",
    ]);
    assert!(out.contains("id=2 host=worker-2"), "{out}");
    // A restarted manager, which has to ask the agents where the kernel is, still routes
    // an instance id to it.
    k.manager.kill9();
    k.manager = k.c.manager("m1", &[]);
    let again = wait_for(T, "worker 1's output through the new manager", || async {
        let out = k.c.cli(&["logs", &format!("{id}/1")]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    })
    .await;
    assert!(again.contains("worker 1/3 on worker-1"), "{again}");
    // An instance that is not there is named.
    let bad = k.c.cli(&["exec", &format!("{id}/7"), "true"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("instances 0 to 2"),
        "{bad:?}"
    );

    // Suspend and resume act on every instance.
    k.c.cli_ok(&["suspend", &id]);
    k.wait_state(&id, "SUSPENDED", T).await;
    for (i, c) in &members {
        assert_eq!(
            docker_inspect(c, "{{.State.Paused}}"),
            "true",
            "instance {i}"
        );
    }
    k.c.cli_ok(&["resume", &id]);
    k.wait_state(&id, "RUNNING", T).await;
    for (i, c) in &members {
        assert_eq!(
            docker_inspect(c, "{{.State.Paused}}"),
            "false",
            "instance {i}"
        );
    }

    // The home is shared: a file put through instance 1 ends the master's wait; the
    // cluster ends with the master's exit code and its workers are stopped.
    let f = k.c.dir.path().join("done");
    std::fs::write(&f, "x").unwrap();
    k.c.cli_ok(&[
        "files",
        "put",
        &format!("{id}/1"),
        f.to_str().unwrap(),
        "done",
    ]);
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "FAILED", "{info}");
    assert_eq!(info["exit_code"], 3, "{info}");
    wait_for(T, "the workers to be stopped", || async {
        members.iter().all(|(_, c)| !running(c)).then_some(())
    })
    .await;
    // Its slots came back exactly once.
    wait_for(T, "the cluster's slots to be free again", || async {
        let allocated = k.c.node("a1")?["slots"]["allocated"]["cpu"]
            .as_f64()
            .unwrap_or(0.0);
        (allocated == 0.0).then_some(())
    })
    .await;
    // rm removes every instance and the network.
    k.c.cli_ok(&["rm", &id]);
    wait_for(T, "the cluster's containers and network to go", || async {
        (instances(&k.c.ns, &id).is_empty() && networks(&k.c.ns).is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_worker_fails_the_cluster_and_stops_the_rest() {
    let k = KernelCluster::start("cluster-fail").await;
    let id = run_ok(
        &k,
        "docker-cluster",
        3,
        &[
            ("DOCKER_CMD_MASTER", "sleep 600"),
            (
                "DOCKER_CMD_WORKER",
                r#"sh -c 'if [ "$INSTANCE_ID" = 2 ]; then sleep 1; exit 5; fi; exec sleep 600'"#,
            ),
        ],
        &["--stop-timeout", "1s"],
    );
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "FAILED", "{info}");
    assert_eq!(info["exit_code"], 5, "{info}");
    let reason = info["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("instance 2 (worker) exited with code 5"),
        "{info}"
    );
    let members = instances(&k.c.ns, &id);
    wait_for(
        T,
        "the master and the other worker to be stopped",
        || async { members.iter().all(|(_, c)| !running(c)).then_some(()) },
    )
    .await;
    // It stays failed with the worker's reason after the rest was stopped.
    let again = k.inspect(&id);
    assert_eq!(again["exit_code"], 5, "{again}");
    k.c.cli_ok(&["rm", &id]);
}

/// Tries the host listener at the instance's gateway and at Docker's bridge address, and
/// the worker by name.
const NET_SCRIPT: &str = r#"gw=$(ip route | awk '/default/ {print $3}'); r=unreachable; for ip in $gw 172.17.0.1; do if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$ip" "$PORT" | grep -q hello-from-host; then r=reached-host; fi; done; echo "$r"; nslookup worker-1 >/dev/null 2>&1 && echo found-worker"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cluster_has_no_route_outside_its_network_and_the_network_profile_has() {
    let k = KernelCluster::start("cluster-net").await;
    let host = HostListener::start();
    let port = host.port.to_string();
    for (profile, expect) in [
        ("docker-cluster", "unreachable"),
        ("docker-cluster-network", "reached-host"),
    ] {
        let id = run_ok(
            &k,
            profile,
            2,
            &[
                ("PORT", port.as_str()),
                ("SCRIPT", NET_SCRIPT),
                ("DOCKER_CMD_MASTER", r#"sh -c 'eval "$SCRIPT"'"#),
                ("DOCKER_CMD_WORKER", "sleep 600"),
            ],
            &["--stop-timeout", "1s"],
        );
        let info = k.wait_ended(&id, T).await;
        assert_eq!(info["state"], "DONE", "{profile}: {info}");
        let logs = k.c.cli_ok(&["logs", &id]);
        assert!(logs.contains(expect), "{profile}: {logs}");
        assert!(logs.contains("found-worker"), "{profile}: {logs}");
        k.c.cli_ok(&["rm", &id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_go_to_all_instances_or_none_and_bad_requests_are_named() {
    let k = KernelCluster::start("cluster-gang").await;
    // This agent has the machine's CPUs; three instances of all of them cannot fit.
    let cpus = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let out = run(
        &k,
        "docker-cluster",
        3,
        &[("DOCKER_CMD_WORKER", "sleep 1")],
        &["--cpus", &cpus],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpu"), "{err}");
    assert!(
        err.contains(&format!("{}", cpus.parse::<f64>().unwrap() * 3.0)),
        "the total asked: {err}"
    );
    assert!(containers(&k.c.ns).is_empty(), "no half-made cluster");
    assert!(networks(&k.c.ns).is_empty(), "no network left");
    assert!(k.ps().is_empty(), "{:?}", k.ps());

    // --instances without a cluster profile, a cluster profile without it.
    let out =
        k.c.cli(&["run", "-d", "--instances", "2", common::TEST_IMAGE]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("instances: needs a cluster profile"),
        "{out:?}"
    );
    let out = run(&k, "docker-batch", 2, &[], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("instances: needs a cluster profile"),
        "{out:?}"
    );
    let out = run(&k, "docker-cluster", 0, &[], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("instances"),
        "{out:?}"
    );
    // Cluster constants on a single-instance profile; restart policies on a cluster.
    let out = run(&k, "docker-batch", 0, &[("DOCKER_CMD_WORKER", "true")], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("constants[DOCKER_CMD_WORKER]"),
        "{out:?}"
    );
    let out = run(&k, "docker-cluster", 2, &[], &["--restart", "always"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restart_policy"),
        "{out:?}"
    );
    assert!(containers(&k.c.ns).is_empty());
    assert!(networks(&k.c.ns).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_starting_a_cluster_never_leaves_instances_running_alone() {
    let mut k = KernelCluster::start("cluster-crash").await;
    // The agent is killed at several points of creating and starting a 3-instance cluster;
    // after its restart each cluster either runs whole or has no instance running.
    for delay_ms in [0u64, 150, 300, 450, 600] {
        let out =
            k.c.command_for(&[
                "run",
                "-d",
                "--profile",
                "docker-cluster",
                "--instances",
                "3",
                "--constant",
                "DOCKER_REPO=deckhand-test/busybox",
                "--constant",
                "DOCKER_CMD_MASTER=sleep 600",
                "--constant",
                "DOCKER_CMD_WORKER=sleep 600",
                "--stop-timeout",
                "1s",
            ])
            .spawn()
            .expect("run");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        k.agent.kill9();
        let _ = out.wait_with_output();
        k.agent = k.c.agent("a1");
        wait_for(T, "agent a1 ALIVE again", || async {
            k.c.node("a1").filter(|n| n["state"] == "ALIVE").map(|_| ())
        })
        .await;
        // Settled: every kernel of the namespace either RUNNING with all of its instances
        // running, or none of its instances running.
        wait_for(T, "every cluster whole or stopped", || async {
            let ps = k.ps();
            for kern in &ps {
                let id = kern["kernel_id"].as_str()?;
                let state = kern["state"].as_str()?;
                let members = instances(&k.c.ns, id);
                let up = members.iter().filter(|(_, c)| running(c)).count();
                let whole = state == "RUNNING" && members.len() == 3 && up == 3;
                if !(whole || up == 0) {
                    return None;
                }
            }
            // No instance of a kernel that is not listed runs either.
            let listed: Vec<String> = ps
                .iter()
                .filter_map(|k| k["kernel_id"].as_str().map(String::from))
                .collect();
            for c in containers(&k.c.ns) {
                let kid = docker_inspect(&c, "{{index .Config.Labels \"io.deckhand.kernel-id\"}}");
                if !listed.contains(&kid) && running(&c) {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
    for kern in k.ps() {
        let id = kern["kernel_id"].as_str().unwrap().to_string();
        k.c.cli_ok(&["rm", "-f", &id]);
    }
    wait_for(T, "every container and network to go", || async {
        (containers(&k.c.ns).is_empty() && networks(&k.c.ns).is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_cannot_start_leaves_no_worker_running() {
    let k = KernelCluster::start("cluster-nostart").await;
    // The workers start first; the master's command does not exist, so its start fails.
    let constants = [
        ("DOCKER_CMD_MASTER", "/no/such/binary"),
        ("DOCKER_CMD_WORKER", "sleep 600"),
    ];
    // Started at creation: the failed kernel's instances are removed at once.
    let out = run(
        &k,
        "docker-cluster",
        3,
        &constants,
        &["--stop-timeout", "30s"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/binary"),
        "run says why: {out:?}"
    );
    let id = k
        .ps()
        .first()
        .and_then(|k| k["kernel_id"].as_str().map(String::from))
        .expect("the failed kernel is listed");
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "FAILED", "{info}");
    assert!(
        info["reason"]
            .as_str()
            .unwrap_or("")
            .contains("/no/such/binary"),
        "{info}"
    );
    wait_for(T, "the failed cluster's instances to go", || async {
        instances(&k.c.ns, &id).is_empty().then_some(())
    })
    .await;
    // Held, then released: the start fails the same way; the instances stay for
    // inspection, and none runs — at once, not after the 30 s grace period.
    let id = run_ok(
        &k,
        "docker-cluster",
        3,
        &constants,
        &["--stop-timeout", "30s", "--hold"],
    );
    k.wait_state(&id, "HELD", T).await;
    let out = k.c.cli(&["release", &id]);
    assert!(!out.status.success(), "{out:?}");
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "FAILED", "{info}");
    let members = instances(&k.c.ns, &id);
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members.iter().all(|(_, c)| !running(c)),
        "workers left running: {members:?}"
    );
    k.c.cli_ok(&["rm", &id]);
    wait_for(T, "the cluster's containers and network to go", || async {
        (containers(&k.c.ns).is_empty() && networks(&k.c.ns).is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_networks_of_one_name_left_by_a_crash_are_both_removed() {
    // An agent killed while the engine made a cluster's network, which made it again after
    // its restart, leaves two networks of one name (the engine does not refuse a second
    // bridge network of a name); both are its own and both must go.
    let mut k = KernelCluster::start("cluster-dupnet").await;
    let kernel = "0f5b1c2e-7a4b-4c1d-9e2f-00000000d0d0";
    let name = format!("deckhand-{}-{kernel}", k.c.ns);
    let docker = bollard::Docker::connect_with_local_defaults().expect("Docker engine");
    for _ in 0..2 {
        let labels = std::collections::HashMap::from([
            ("io.deckhand.namespace".to_string(), k.c.ns.clone()),
            ("io.deckhand.agent-id".to_string(), "a1".to_string()),
            ("io.deckhand.kernel-id".to_string(), kernel.to_string()),
        ]);
        docker
            .create_network(bollard::models::NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .expect("create network");
    }
    assert_eq!(networks(&k.c.ns), [name.clone(), name.clone()]);
    k.restart_agent().await;
    wait_for(
        T,
        "both networks removed by the restarted agent",
        || async { networks(&k.c.ns).is_empty().then_some(()) },
    )
    .await;
    assert!(k.ps().is_empty(), "{:?}", k.ps());
}
