//! A cluster runs as one kernel: its master, failing workers, networks.

use super::*;

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
