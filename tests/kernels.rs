//! Kernels on the real Docker engine, driven through the real manager and CLI: lifecycle,
//! scratch homes, job control, logs/exec/files, arrays, GPUs (fake ones from config: no GPU
//! exists on CI), ports and slots. Every container is removed by namespace label when the
//! test's cluster drops, also on failure.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{containers, docker_inspect, wait_for, KernelCluster, TEST_IMAGE};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_runs_in_its_scratch_home_and_exits_with_its_code() {
    let k = KernelCluster::start("run").await;
    let id = uuid::Uuid::new_v4().to_string();
    let out = k.c.cli(&[
        "run",
        "--id",
        &id,
        "-e",
        "GREETING=hello",
        TEST_IMAGE,
        "sh",
        "-c",
        "echo $GREETING from $(id -u); echo made > /home/work/made.txt; cat /home/config/environ.txt; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hello from 1000"), "{stdout}");
    assert!(stdout.contains("GREETING=hello"), "environ.txt: {stdout}");

    // The file the kernel wrote is in its scratch dir on the host, owned by the kernel uid.
    let dir = k.scratch().join(&id);
    let made = dir.join("work/made.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "made\n");
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), 1000);
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    let kernel_json = std::fs::read_to_string(dir.join("config/kernel.json")).unwrap();
    assert!(kernel_json.contains(&id));

    let info = k.inspect(&id);
    assert_eq!(info["state"], "FAILED");
    assert_eq!(info["drmaa2_state"], "FAILED");
    assert_eq!(info["exit_code"], 3);
    assert_eq!(info["reason"], "exited with code 3");
    assert!(info["finished_at_ms"].as_i64().unwrap() >= info["started_at_ms"].as_i64().unwrap());
    // The registry record is on disk beside the scratch dirs.
    let record = k.scratch().join(format!(".deckhand/kernels/{id}.json"));
    assert!(std::fs::read_to_string(&record)
        .unwrap()
        .contains("\"Failed\""));

    // Removal takes the container, the scratch dir and the record.
    k.c.cli_ok(&["rm", &id]);
    assert!(!dir.exists());
    assert!(!record.exists());
    assert!(containers(&k.c.ns).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_move_both_ways_and_paths_cannot_leave_the_home() {
    let k = KernelCluster::start("files").await;
    let id = k.run_detached(&[TEST_IMAGE, "sleep", "60"]);
    let local = k.c.dir.path().join("in.txt");
    std::fs::write(&local, "from the host\n").unwrap();
    k.c.cli_ok(&["files", "put", &id, local.to_str().unwrap(), "in.txt"]);
    let seen = k.c.cli_ok(&["exec", &id, "cat", "/home/work/in.txt"]);
    assert_eq!(seen, "from the host\n");
    k.c.cli_ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo back > /home/work/out.txt; ln -s /etc/passwd /home/work/link",
    ]);
    assert_eq!(k.c.cli_ok(&["files", "get", &id, "out.txt"]), "back\n");
    let ls = k.c.cli_ok(&["files", "ls", &id]);
    assert!(ls.contains("in.txt") && ls.contains("out.txt"), "{ls}");
    for bad in ["../../etc/passwd", "/etc/passwd", "link"] {
        let out = k.c.cli(&["files", "get", &id, bad]);
        assert!(!out.status.success(), "{bad} was served");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("path `{bad}`")), "{bad}: {err}");
    }
    let out = k.c.cli(&[
        "files",
        "put",
        &id,
        local.to_str().unwrap(),
        "../escape.txt",
    ]);
    assert!(!out.status.success());
    assert!(!k.scratch().join(&id).join("escape.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_pauses_resume_continues_and_exec_and_logs_go_through_the_manager() {
    let k = KernelCluster::start("jobctl").await;
    let id = k.run_detached(&[
        TEST_IMAGE,
        "sh",
        "-c",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    ]);
    let name = format!("deckhand-{}-{id}", k.c.ns);
    k.c.cli_ok(&["suspend", &id]);
    assert_eq!(k.inspect(&id)["state"], "SUSPENDED");
    assert_eq!(k.inspect(&id)["drmaa2_state"], "SUSPENDED");
    assert_eq!(docker_inspect(&name, "{{.State.Status}}"), "paused");
    // Exec needs a running kernel.
    let out = k.c.cli(&["exec", &id, "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot exec in a kernel that is SUSPENDED")
    );
    k.c.cli_ok(&["resume", &id]);
    assert_eq!(k.inspect(&id)["state"], "RUNNING");
    assert_eq!(docker_inspect(&name, "{{.State.Status}}"), "running");

    let out =
        k.c.cli(&["exec", &id, "sh", "-c", "echo out; echo err >&2; exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let logs = k.c.cli_ok(&["logs", "--tail", "2", &id]);
    assert_eq!(logs.lines().count(), 2, "{logs}");
    assert!(logs.lines().all(|l| l.starts_with("tick ")), "{logs}");

    // A signal the shell does not trap ends it: reported with the signal.
    k.c.cli_ok(&["kill", "-s", "9", &id]);
    let info = k.wait_state(&id, "FAILED", T).await;
    assert_eq!(info["exit_code"], 137);
    assert_eq!(info["signal"], "SIGKILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_honours_the_grace_period_of_a_process_that_traps_sigterm() {
    let k = KernelCluster::start("stop").await;
    // Traps TERM and finishes cleanly in about a second: inside a 10s grace period.
    let polite = k.run_detached(&[
        TEST_IMAGE,
        "sh",
        "-c",
        "trap 'sleep 1; echo cleaned; exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    // Ignores TERM: killed when its 2s grace period is over.
    let stubborn = k.run_detached(&[
        "--stop-timeout",
        "2s",
        TEST_IMAGE,
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ]);
    let t0 = Instant::now();
    k.c.cli_ok(&["stop", &polite]);
    let info = k.inspect(&polite);
    assert_eq!(info["state"], "DONE", "{info}");
    assert_eq!(info["exit_code"], 0);
    assert!(k.c.cli_ok(&["logs", &polite]).contains("cleaned"));
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "the trap ran to its end"
    );

    let t0 = Instant::now();
    k.c.cli_ok(&["stop", &stubborn]);
    let waited = t0.elapsed();
    let info = k.inspect(&stubborn);
    assert_eq!(info["state"], "FAILED");
    assert_eq!(info["signal"], "SIGKILL");
    assert!(
        waited >= Duration::from_secs(2),
        "killed before its grace period: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "the 2s grace period was not used: {waited:?}"
    );
    assert!(info["reason"]
        .as_str()
        .unwrap()
        .contains("stopped on request"));
    // Stopping a finished kernel is a wrong-state error naming the state.
    let out = k.c.cli(&["stop", &stubborn]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot stop a kernel that is FAILED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_kernel_starts_only_when_released() {
    let k = KernelCluster::start("hold").await;
    let id = k.c.cli_ok(&[
        "run",
        "--hold",
        TEST_IMAGE,
        "sh",
        "-c",
        "echo released; sleep 30",
    ]);
    let id = id.trim();
    let info = k.inspect(id);
    assert_eq!(info["state"], "HELD");
    assert_eq!(info["drmaa2_state"], "QUEUED_HELD");
    let name = format!("deckhand-{}-{id}", k.c.ns);
    assert_eq!(docker_inspect(&name, "{{.State.Status}}"), "created");
    let out = k.c.cli(&["suspend", id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot suspend a kernel that is HELD"));

    k.c.cli_ok(&["release", id]);
    assert_eq!(k.inspect(id)["state"], "RUNNING");
    wait_for(T, "output after release", || async {
        k.c.cli_ok(&["logs", id]).contains("released").then_some(())
    })
    .await;
    // A running kernel is removed only with force.
    let out = k.c.cli(&["rm", id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot remove a kernel that is RUNNING"));
    k.c.cli_ok(&["rm", "-f", id]);
    assert!(containers(&k.c.ns).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_dies_by_itself_is_reported_with_its_exit_code() {
    let k = KernelCluster::start("selfexit").await;
    let id = k.run_detached(&[TEST_IMAGE, "sh", "-c", "sleep 1; exit 5"]);
    assert_eq!(k.inspect(&id)["state"], "RUNNING");
    let info = k.wait_state(&id, "FAILED", Duration::from_secs(10)).await;
    assert_eq!(info["exit_code"], 5);
    let ok = k.run_detached(&[TEST_IMAGE, "true"]);
    let info = k.wait_state(&ok, "DONE", Duration::from_secs(10)).await;
    assert_eq!(info["exit_code"], 0);
    assert_eq!(info["drmaa2_state"], "DONE");
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_benchmark_runs_all_three_paths_and_cleans_up() {
    let k = KernelCluster::start("bench").await;
    let addr = format!("127.0.0.1:{}", k.agent.port);
    let out =
        k.c.cli_ok(&["bench", "start", "--agent-addr", &addr, "--n", "2"]);
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("ratio agent/docker-cli: "), "{out}");
    assert!(out.contains("bollard create+start"), "{out}");
    assert!(containers(&k.c.ns).is_empty(), "the benchmark left kernels");
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=io.deckhand.bench"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the benchmark left containers");
    assert!(k.ps().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_over_its_memory_limit_is_reported_oom_killed() {
    let k = KernelCluster::start("oom").await;
    let id = k.run_detached(&[
        "--memory",
        "16MiB",
        TEST_IMAGE,
        "sh",
        "-c",
        "a=$(head -c 200000000 /dev/zero | tr '\\000' a); echo survived",
    ]);
    let info = k.wait_state(&id, "FAILED", Duration::from_secs(30)).await;
    assert_eq!(info["oom_killed"], true, "{info}");
    assert!(info["reason"].as_str().unwrap().contains("OOM"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_beyond_the_concurrency_limit_wait_their_turn() {
    let k = KernelCluster::start("concur").await;
    k.c.cli_ok(&["config", "set", "agent/kernel_creation_concurrency", "1"]);
    wait_for(T, "concurrency 1 applied", || async {
        k.agent
            .log()
            .contains("kernel creation concurrency changed")
            .then_some(())
    })
    .await;
    // A registry that accepts connections and never answers: the pull holds the only
    // creation slot.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let image = format!(
        "127.0.0.1:{}/stalls/forever:latest",
        stall.local_addr().unwrap().port()
    );
    let stuck = uuid::Uuid::new_v4().to_string();
    let waiting = uuid::Uuid::new_v4().to_string();
    let mut first =
        k.c.command_for(&["run", "-d", "--id", &stuck, &image, "true"])
            .spawn()
            .unwrap();
    k.wait_state(&stuck, "PULLING", T).await;
    let mut second =
        k.c.command_for(&["run", "-d", "--id", &waiting, TEST_IMAGE, "sleep", "60"])
            .spawn()
            .unwrap();
    k.wait_state(&waiting, "PREPARING", T).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        k.inspect(&waiting)["state"],
        "PREPARING",
        "started past the limit"
    );
    // Raising the limit lets it through without a restart.
    k.c.cli_ok(&["config", "set", "agent/kernel_creation_concurrency", "2"]);
    k.wait_state(&waiting, "RUNNING", T).await;
    assert!(second.wait().unwrap().success());
    k.c.cli_ok(&["rm", "-f", &stuck, &waiting]);
    let _ = first.kill();
    let _ = first.wait();
    drop(stall);
}
