//! Arrays, fake GPUs, slots and ports, idempotent ids, secrets, stage-in and cgroup limits.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_never_runs_more_than_max_parallel_tasks() {
    let k = KernelCluster::start("array").await;
    let array = k.c.cli_ok(&[
        "run",
        "--array",
        "1-6%2",
        "--output",
        "out-$DECKHAND_INDEX$.txt",
        TEST_IMAGE,
        "sh",
        "-c",
        "echo task $DECKHAND_TASK_INDEX arg $DECKHAND_INDEX$; sleep 1",
    ]);
    let array = array.trim().to_string();
    let most = std::sync::atomic::AtomicUsize::new(0);
    let done = wait_for(Duration::from_secs(60), "all 6 tasks DONE", || async {
        let tasks: Vec<serde_json::Value> = k
            .ps()
            .into_iter()
            .filter(|t| t["array_id"] == array.as_str())
            .collect();
        let running = tasks.iter().filter(|t| t["state"] == "RUNNING").count();
        most.fetch_max(running, std::sync::atomic::Ordering::Relaxed);
        assert!(running <= 2, "{running} tasks running at once");
        (tasks.len() == 6 && tasks.iter().all(|t| t["state"] == "DONE")).then_some(tasks)
    })
    .await;
    assert_eq!(most.into_inner(), 2, "the array should use its parallelism");
    for t in &done {
        let i = t["task_index"].as_u64().unwrap();
        let id = t["kernel_id"].as_str().unwrap();
        assert_eq!(id, format!("{array}.{i}"));
        let logs = k.c.cli_ok(&["logs", id]);
        assert_eq!(logs, format!("task {i} arg {i}\n"));
        let out = k.scratch().join(id).join(format!("work/out-{i}.txt"));
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            format!("task {i} arg {i}\n")
        );
    }
    // Removing the array removes every task.
    k.c.cli_ok(&["rm", &array]);
    assert!(k.ps().is_empty());
    assert!(containers(&k.c.ns).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_gpus_are_assigned_once_each_and_freed_on_removal() {
    let k = KernelCluster::start("gpus").await;
    // Stand-in: no GPU on CI, so two fake GPUs from config (exposed by env only).
    let g1 = "GPU-00000000-0000-0000-0000-0000000000a1";
    let g2 = "GPU-00000000-0000-0000-0000-0000000000a2";
    k.c.cli_ok(&["config", "set", "docker/fake_gpus/0/id", g1]);
    k.c.cli_ok(&["config", "set", "docker/fake_gpus/1/id", g2]);
    wait_for(T, "2 GPUs in the agent's slots", || async {
        let n = k.c.node("a1")?;
        (n["slots"]["total"]["gpus"] == 2).then_some(())
    })
    .await;
    let cmd = [
        "sh",
        "-c",
        "echo $NVIDIA_VISIBLE_DEVICES; grep GPUS= /home/config/resource.txt; sleep 60",
    ];
    let mut args = vec!["--gpus", "1", "--agent", "a1", TEST_IMAGE];
    args.extend_from_slice(&cmd);
    let k1 = k.run_detached(&args);
    let k2 = k.run_detached(&args);
    let gpu = |id: &str| k.inspect(id)["gpus"][0].as_str().unwrap().to_string();
    let (a, b) = (gpu(&k1), gpu(&k2));
    assert_ne!(a, b, "one GPU given to two kernels");
    assert!([g1, g2].contains(&a.as_str()) && [g1, g2].contains(&b.as_str()));
    wait_for(T, "kernel output", || async {
        let logs = k.c.cli_ok(&["logs", &k1]);
        (logs == format!("{a}\nGPUS={a}\n")).then_some(())
    })
    .await;

    let mut run3 = vec!["run", "-d"];
    run3.extend_from_slice(&args);
    let out = k.c.cli(&run3);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gpus: 1 requested, 0 of 2 free"),
        "{out:?}"
    );
    let out = k.c.cli(&[
        "run", "-d", "--gpus", "3", "--agent", "a1", TEST_IMAGE, "true",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("gpus: 3 requested, this agent has 2"));
    let out = k.c.cli(&[
        "run",
        "-d",
        "--gpus",
        "GPU-11111111-0000-0000-0000-000000000000",
        "--agent",
        "a1",
        TEST_IMAGE,
        "true",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a GPU of this agent"));
    assert_eq!(
        containers(&k.c.ns).len(),
        2,
        "a refused kernel left a container"
    );

    k.c.cli_ok(&["rm", "-f", &k1]);
    let k3 = k.run_detached(&args);
    assert_eq!(gpu(&k3), a, "the removed kernel's GPU is free again");
    wait_for(T, "2 GPUs allocated in heartbeats", || async {
        let n = k.c.node("a1")?;
        (n["slots"]["allocated"]["gpus"] == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_ports_and_refusals_name_what_is_wrong_and_create_nothing() {
    let k = KernelCluster::start("slots").await;
    let out = k.c.cli(&[
        "run", "-d", "--agent", "a1", "--cpus", "1000", TEST_IMAGE, "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpu: 1000 requested"), "{err}");
    let out =
        k.c.cli(&["run", "-d", "--cpus", "1000", TEST_IMAGE, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no alive agent"));
    let out = k.c.cli(&["run", "-d", "--privileged", TEST_IMAGE, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("config/security/allow_privileged"));
    let out = k.c.cli(&["run", "-d", "--pid", "host", TEST_IMAGE, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("config/security/allow_host_namespaces"));
    let out =
        k.c.cli(&["run", "-d", "-e", "BAD-NAME=x", TEST_IMAGE, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("env[\"BAD-NAME\"]: a variable name"), "{err}");
    let out =
        k.c.cli(&["run", "-d", "--output", "../../x", TEST_IMAGE, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("output_path"));
    let out = k.c.cli(&["run", "-d", "NOT A/valid::image", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("image:"));
    assert!(
        containers(&k.c.ns).is_empty(),
        "a refused kernel left a container"
    );
    assert!(k.ps().is_empty(), "a refused kernel was recorded");

    // Ports come from this cluster's own range and go back on removal.
    let port = common::free_port();
    let range = format!("{port}-{}", port + 20);
    k.c.cli_ok(&["config", "set", "container/port_range", &range]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = k.run_detached(&[
        "-p", "8080", "--cpus", "0.5", "--memory", "64MiB", TEST_IMAGE, "sleep", "60",
    ]);
    let info = k.inspect(&id);
    let host_port = info["ports"][0]["host_port"].as_u64().unwrap();
    assert!(
        (port as u64..=port as u64 + 20).contains(&host_port),
        "{info}"
    );
    let name = format!("deckhand-{}-{id}", k.c.ns);
    assert_eq!(
        docker_inspect(
            &name,
            "{{(index (index .HostConfig.PortBindings \"8080/tcp\") 0).HostPort}}"
        ),
        host_port.to_string()
    );
    assert_eq!(
        docker_inspect(&name, "{{.HostConfig.NanoCpus}}"),
        "500000000"
    );
    assert_eq!(
        docker_inspect(&name, "{{.HostConfig.Memory}}"),
        (64u64 << 20).to_string()
    );
    wait_for(T, "allocated slots in heartbeats", || async {
        let n = k.c.node("a1")?;
        (n["slots"]["allocated"]["cpu"] == 0.5).then_some(())
    })
    .await;
    k.c.cli_ok(&["rm", "-f", &id]);
    let again = k.run_detached(&["-p", "8080", TEST_IMAGE, "sleep", "60"]);
    assert_eq!(
        k.inspect(&again)["ports"][0]["host_port"].as_u64(),
        Some(host_port)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_kernel_id_twice_is_one_kernel_and_a_different_spec_conflicts() {
    let k = KernelCluster::start("idem").await;
    let id = uuid::Uuid::new_v4().to_string();
    let first = k.run_detached(&["--id", &id, TEST_IMAGE, "sleep", "60"]);
    let second = k.run_detached(&["--id", &id, TEST_IMAGE, "sleep", "60"]);
    assert_eq!(first, second);
    assert_eq!(containers(&k.c.ns).len(), 1);
    let out =
        k.c.cli(&["run", "-d", "--id", &id, TEST_IMAGE, "sleep", "61"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists with a different spec"));
    assert_eq!(containers(&k.c.ns).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_kernel_but_never_inspect_or_kernel_json() {
    let k = KernelCluster::start("secret").await;
    let id = k.run_detached(&[
        "--secret-env",
        "TOKEN=s3cr3t-value",
        TEST_IMAGE,
        "sleep",
        "60",
    ]);
    assert_eq!(
        k.c.cli_ok(&["exec", &id, "sh", "-c", "echo $TOKEN"]),
        "s3cr3t-value\n"
    );
    let shown = k.c.cli_ok(&["inspect", &id]);
    assert!(
        !shown.contains("s3cr3t-value") && shown.contains("***"),
        "{shown}"
    );
    let dir = k.scratch().join(&id).join("config");
    for f in ["kernel.json", "environ.txt"] {
        assert!(!std::fs::read_to_string(dir.join(f))
            .unwrap()
            .contains("s3cr3t-value"));
    }
    assert!(!k.agent.log().contains("s3cr3t-value"));
    assert!(!k.manager.log().contains("s3cr3t-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_in_limits_and_cgroup_usage_reach_the_container() {
    let k = KernelCluster::start("stagein").await;
    let allowed = k.c.dir.path().join("shared");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::write(allowed.join("input.txt"), "staged\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mount = format!("{}:/data:ro", allowed.display());
    // Not allowed until the cluster config lists the directory.
    let out = k.c.cli(&["run", "-d", "-v", &mount, TEST_IMAGE, "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config/container/stage_in_dirs"),
        "{out:?}"
    );
    k.c.cli_ok(&[
        "config",
        "set",
        "container/stage_in_dirs",
        allowed.to_str().unwrap(),
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = k.run_detached(&[
        "-v",
        &mount,
        "--shm-size",
        "32MiB",
        "--ulimit",
        "nofile=1024:2048",
        "--pids-limit",
        "64",
        "--memory",
        "128MiB",
        TEST_IMAGE,
        "sh",
        "-c",
        "cat /data/input.txt; (echo x > /data/new) 2>/dev/null || echo read-only; sleep 60",
    ]);
    wait_for(T, "staged file read", || async {
        let logs = k.c.cli_ok(&["logs", &id]);
        (logs == "staged\nread-only\n").then_some(())
    })
    .await;
    let name = format!("deckhand-{}-{id}", k.c.ns);
    assert_eq!(
        docker_inspect(&name, "{{.HostConfig.ShmSize}}"),
        (32u64 << 20).to_string()
    );
    assert_eq!(docker_inspect(&name, "{{.HostConfig.PidsLimit}}"), "64");
    assert_eq!(
        docker_inspect(
            &name,
            "{{range .HostConfig.Ulimits}}{{.Name}}={{.Soft}}:{{.Hard}}{{end}}"
        ),
        "nofile=1024:2048"
    );
    let bad = format!("{}:/data", outside.path().display());
    let out = k.c.cli(&["run", "-d", "-v", &bad, TEST_IMAGE, "true"]);
    assert!(!out.status.success());
    // Usage comes from the kernel's cgroup.
    let usage = wait_for(T, "cgroup usage in inspect", || async {
        let info = k.inspect(&id);
        let mem = info["usage"]["memory_bytes"].as_u64()?;
        (mem > 0).then_some(info["usage"].clone())
    })
    .await;
    assert!(
        usage["memory_bytes"].as_u64().unwrap() < 128 << 20,
        "{usage}"
    );
}
