//! A kernel's life: its scratch home, files, job control, holds, its own exit.

use super::*;

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
