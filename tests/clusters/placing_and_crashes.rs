//! Slots for all instances or none, and what crashes leave behind.

use super::*;

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
