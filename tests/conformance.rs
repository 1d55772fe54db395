//! DRMAA2 conformance, as a user of the DRMAA2 Docker tracker would notice it, against real
//! etcd, Docker, manager and agent: sizes read as Docker reads them (powers of 1024), a
//! container Docker restarts reads QUEUED between runs, `--input` feeds a file to stdin,
//! explicit host ports bind exactly what was asked, and `inspect` shows the slots a kernel
//! was given.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{docker_inspect, wait_for, KernelCluster, TEST_IMAGE};
use deckhand::wire::pb::KernelState;
use futures::StreamExt;

const T: Duration = Duration::from_secs(30);

fn container_of(k: &KernelCluster, id: &str) -> String {
    format!("deckhand-{}-{id}", k.c.ns)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_reach_the_container_as_docker_reads_them() {
    let k = KernelCluster::start("sizes").await;
    let id = k.run_detached(&[
        "-m",
        "16m",
        "--memory-swap",
        "32m",
        "--shm-size",
        "10g",
        "--tmpfs",
        "/scratch:rw,size=64m",
        TEST_IMAGE,
        "sleep",
        "60",
    ]);
    let name = container_of(&k, &id);
    // `docker run -m 16m --shm-size 10g` gives exactly these.
    assert_eq!(docker_inspect(&name, "{{.HostConfig.Memory}}"), "16777216");
    assert_eq!(
        docker_inspect(&name, "{{.HostConfig.ShmSize}}"),
        "10737418240"
    );
    assert_eq!(
        docker_inspect(&name, "{{.HostConfig.MemorySwap}}"),
        "33554432"
    );
    assert_eq!(
        docker_inspect(&name, "{{.HostConfig.Tmpfs}}"),
        "map[/scratch:rw,size=67108864]"
    );
    // The slots it holds, as DRMAA2 JobInfo shows them.
    let info = k.inspect(&id);
    assert_eq!(info["slots"]["memory_bytes"], 16777216, "{info}");
    // Refusals print binary units, which read back as the same amount.
    let out =
        k.c.cli(&["run", "-d", "--agent", "a1", "-m", "2t", TEST_IMAGE, "true"]);
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(err.contains("memory: 2.0 TiB requested"), "{err}");
    // A size Docker would not read is refused naming the field.
    let out =
        k.c.cli(&["run", "-d", "--shm-size", "10gb4", TEST_IMAGE, "true"]);
    assert!(stderr_of(&out).contains("shm_size"), "{out:?}");
}

/// A kernel of 0.5 CPU whose command fails after a second, restarted by Docker for ever.
fn run_restarting(k: &KernelCluster) -> String {
    k.run_detached(&[
        "--restart",
        "always",
        "--cpus",
        "0.5",
        TEST_IMAGE,
        "sh",
        "-c",
        "sleep 1; exit 3",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_docker_restarts_reads_queued_between_runs_and_keeps_its_slots() {
    let k = KernelCluster::start("restart").await;
    let mut events = k.agent_events().await;
    let id = run_restarting(&k);
    let name = container_of(&k, &id);
    // Docker's restart delay doubles each time: from the third restart on, the container
    // waits ≥ 400 ms between runs. Sample deckhand while Docker says "restarting" before and
    // after, with the same restart count.
    let (mut queued, mut running) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while queued < 2 || running < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "saw RESTARTING {queued} times and RUNNING {running} times"
        );
        let before = docker_inspect(&name, "{{.State.Restarting}} {{.RestartCount}}");
        let count: u64 = before
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if count < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let info = k.inspect(&id);
        let after = docker_inspect(&name, "{{.State.Restarting}} {{.RestartCount}}");
        let running_now = docker_inspect(&name, "{{.State.Running}}") == "true";
        if before != after {
            continue; // it changed while sampled: try again
        }
        if before.starts_with("true") {
            assert_eq!(info["state"], "RESTARTING", "{before}: {info}");
            assert_eq!(info["drmaa2_state"], "QUEUED", "{info}");
            assert_eq!(info["exit_code"], 3, "{info}");
            queued += 1;
        } else if running_now {
            assert_eq!(info["state"], "RUNNING", "{before}: {info}");
            assert_eq!(info["drmaa2_state"], "RUNNING", "{info}");
            running += 1;
        }
        assert_eq!(info["restart_count"], count, "{after}: {info}");
    }
    // The kernel has not ended: its slots stay allocated across restarts.
    let node = k.c.node("a1").expect("node a1");
    assert_eq!(node["slots"]["allocated"]["cpu"], 0.5, "{node}");
    // Each restart is an event: RESTARTING with the exit code, then RUNNING again.
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|s| **s == KernelState::Restarting)
        .count()
        < 2
    {
        let ev = tokio::time::timeout(T, events.next())
            .await
            .expect("an event")
            .expect("stream open")
            .expect("event");
        if ev.kernel_id == id {
            if ev.state() == KernelState::Restarting {
                assert_eq!(ev.exit_code, Some(3), "{ev:?}");
            }
            seen.push(ev.state());
        }
    }
    let after_first_restart: Vec<_> = seen
        .iter()
        .skip_while(|s| **s != KernelState::Restarting)
        .collect();
    assert!(
        after_first_restart.contains(&&KernelState::Running),
        "{seen:?}"
    );
    // Stopping a restarting kernel ends it and gives its slots back.
    k.c.cli_ok(&["stop", "-t", "1", &id]);
    let info = k.wait_state(&id, "FAILED", T).await;
    assert!(
        info["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped on request"),
        "{info}"
    );
    wait_for(T, "slots back", || async {
        let n = k.c.node("a1")?;
        (n["slots"]["allocated"]["cpu"] == 0.0).then_some(())
    })
    .await;
}

/// The CPU the agent itself says is allocated (`GetInfo`, what its heartbeats carry).
async fn agent_allocated_cpu(k: &KernelCluster) -> Option<f64> {
    let addr = format!("http://127.0.0.1:{}", k.agent.port);
    let info = deckhand::wire::pb::agent_service_client::AgentServiceClient::connect(addr)
        .await
        .ok()?
        .get_info(deckhand::wire::pb::GetInfoRequest {})
        .await
        .ok()?
        .into_inner();
    Some(info.slots?.allocated?.cpu)
}

fn restart_count(info: &serde_json::Value) -> u64 {
    info["restart_count"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_kernel_keeps_its_state_count_and_slots_across_an_agent_restart() {
    let mut k = KernelCluster::start("restartrecover").await;
    let id = run_restarting(&k);
    let name = container_of(&k, &id);
    let before = wait_for(Duration::from_secs(60), "two restarts", || async {
        let info = k.inspect(&id);
        (restart_count(&info) >= 2).then_some(info)
    })
    .await;
    assert_eq!(agent_allocated_cpu(&k).await, Some(0.5));

    // kill -9 while Docker keeps restarting it, then start the agent again on its root.
    k.restart_agent().await;

    // Recovered: still restarting or running, never ended, the count not dropped, and its
    // slots still held by the agent and in what the manager shows.
    let info = k.inspect(&id);
    assert!(
        ["RESTARTING", "RUNNING"].contains(&info["state"].as_str().unwrap_or_default()),
        "{info}"
    );
    assert!(
        ["QUEUED", "RUNNING"].contains(&info["drmaa2_state"].as_str().unwrap_or_default()),
        "{info}"
    );
    assert!(
        restart_count(&info) >= restart_count(&before),
        "{before} then {info}"
    );
    assert_eq!(agent_allocated_cpu(&k).await, Some(0.5));
    wait_for(T, "the manager sees 0.5 CPU allocated", || async {
        (k.c.node("a1")?["slots"]["allocated"]["cpu"] == 0.5).then_some(())
    })
    .await;

    // The recovered agent keeps following Docker's restarts: RESTARTING/QUEUED while Docker
    // says restarting, the count rising past what it was before the kill.
    let seen = wait_for(
        Duration::from_secs(60),
        "RESTARTING after recovery",
        || async {
            let docker = docker_inspect(&name, "{{.State.Restarting}} {{.RestartCount}}");
            // As above: give the agent's event handling a moment to see what Docker says.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let info = k.inspect(&id);
            let again = docker_inspect(&name, "{{.State.Restarting}} {{.RestartCount}}");
            (docker == again
                && docker.starts_with("true")
                && restart_count(&info) > restart_count(&before))
            .then_some((docker, info))
        },
    )
    .await;
    let (docker, info) = seen;
    assert_eq!(info["state"], "RESTARTING", "{docker}: {info}");
    assert_eq!(info["drmaa2_state"], "QUEUED", "{info}");
    assert_eq!(
        info["restart_count"].to_string(),
        docker.split(' ').nth(1).unwrap_or_default(),
        "{info}"
    );
    assert_eq!(agent_allocated_cpu(&k).await, Some(0.5));
    let node = k.c.node("a1").expect("node a1");
    assert_eq!(node["slots"]["allocated"]["cpu"], 0.5, "{node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_policy_that_gives_up_ends_the_kernel_failed_with_the_last_exit_code() {
    let k = KernelCluster::start("giveup").await;
    let id = k.run_detached(&[
        "--restart",
        "on-failure:2",
        TEST_IMAGE,
        "sh",
        "-c",
        "exit 3",
    ]);
    let info = k.wait_state(&id, "FAILED", Duration::from_secs(60)).await;
    assert_eq!(info["exit_code"], 3, "{info}");
    assert_eq!(info["restart_count"], 2, "{info}");
    let reason = info["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("after 2 restarts"), "{info}");
    assert!(reason.contains("on-failure:2"), "{info}");
    assert_eq!(
        docker_inspect(&container_of(&k, &id), "{{.RestartCount}}"),
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_input_file_reaches_the_commands_stdin() {
    let k = KernelCluster::start("input").await;
    let staged = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(staged.path()).unwrap();
    std::fs::write(dir.join("in.txt"), "hello\nworld\n").unwrap();
    k.c.cli_ok(&[
        "config",
        "set",
        "container/stage_in_dirs",
        dir.to_str().unwrap(),
    ]);
    let input = dir.join("in.txt");
    let input = input.to_str().unwrap();
    let id = wait_for(T, "stage_in_dirs applied", || async {
        let out = k.c.cli(&[
            "run",
            "-d",
            "--input",
            input,
            TEST_IMAGE,
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
    .await;
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["exit_code"], 0);
    assert_eq!(k.c.cli_ok(&["logs", &id]), "HELLO\nWORLD\ndone\n");

    // A missing file is refused before anything is created.
    let before = common::containers(&k.c.ns).len();
    let missing = dir.join("nope.txt");
    let out = k.c.cli(&[
        "run",
        "-d",
        "--input",
        missing.to_str().unwrap(),
        TEST_IMAGE,
        "cat",
    ]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("input_path"), "{out:?}");
    assert_eq!(common::containers(&k.c.ns).len(), before);
    // Outside the allowed dirs: refused naming the field and the setting.
    let out =
        k.c.cli(&["run", "-d", "--input", "/etc/hostname", TEST_IMAGE, "cat"]);
    let err = stderr_of(&out);
    assert!(
        err.contains("input_path") && err.contains("stage_in_dirs"),
        "{err}"
    );
    // Relative to the work dir: only a held kernel can have it there.
    let out =
        k.c.cli(&["run", "-d", "--input", "in.txt", TEST_IMAGE, "cat"]);
    assert!(stderr_of(&out).contains("input_path"), "{out:?}");
    let held = k.run_detached(&["--hold", "--input", "in.txt", TEST_IMAGE, "wc", "-l"]);
    let out = k.c.cli(&["release", &held]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("input_path"), "{out:?}");
    assert_eq!(k.inspect(&held)["state"], "HELD");
    let local = dir.join("three.txt");
    std::fs::write(&local, "a\nb\nc\n").unwrap();
    k.c.cli_ok(&["files", "put", &held, local.to_str().unwrap(), "in.txt"]);
    k.c.cli_ok(&["release", &held]);
    k.wait_state(&held, "DONE", T).await;
    assert_eq!(k.c.cli_ok(&["logs", &held]).trim(), "3");
}

/// A port inside the default `container/port_range` that is free right now.
fn free_port_in_range() -> u16 {
    let start = 30000 + (std::process::id() % 500) as u16;
    (start..31000)
        .find(|p| TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .expect("a free port in 30000-31000")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_host_port_binds_exactly_that_and_is_held_until_removal() {
    let mut k = KernelCluster::start("hostport").await;
    let port = free_port_in_range();
    let spec = format!("127.0.0.1:{port}:80/tcp");
    let id = k.run_detached(&["-p", &spec, TEST_IMAGE, "sleep", "60"]);
    let name = container_of(&k, &id);
    assert_eq!(
        docker_inspect(
            &name,
            "{{range $p, $b := .HostConfig.PortBindings}}{{$p}}={{(index $b 0).HostIp}}:{{(index $b 0).HostPort}}{{end}}"
        ),
        format!("80/tcp=127.0.0.1:{port}")
    );
    let info = k.inspect(&id);
    assert_eq!(info["ports"][0]["host_port"], port, "{info}");
    assert_eq!(info["ports"][0]["host_ip"], "127.0.0.1", "{info}");

    // The same port again: taken by a kernel.
    let out =
        k.c.cli(&["run", "-d", "-p", &format!("{port}:81"), TEST_IMAGE, "true"]);
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("ports[0].host_port: {port}/tcp is in use")),
        "{err}"
    );
    // Outside the range, and a host address that is not this host's.
    let out = k.c.cli(&["run", "-d", "-p", "8080:80", TEST_IMAGE, "true"]);
    let err = stderr_of(&out);
    assert!(
        err.contains("ports[0].host_port") && err.contains("port_range"),
        "{err}"
    );
    let out =
        k.c.cli(&["run", "-d", "-p", "192.0.2.7::80", TEST_IMAGE, "true"]);
    assert!(stderr_of(&out).contains("ports[0].host_ip"), "{out:?}");
    // A port something else on the host holds.
    let other = free_port_in_range();
    let holder = TcpListener::bind(("0.0.0.0", other)).unwrap();
    let out = k.c.cli(&[
        "run",
        "-d",
        "-p",
        &format!("{other}:80"),
        TEST_IMAGE,
        "true",
    ]);
    assert!(
        stderr_of(&out).contains(&format!("ports[0].host_port: {other}/tcp is in use")),
        "{out:?}"
    );
    drop(holder);

    // Recovery keeps it reserved: after kill -9 and a restart it is still refused.
    k.restart_agent().await;
    let out =
        k.c.cli(&["run", "-d", "-p", &format!("{port}:82"), TEST_IMAGE, "true"]);
    assert!(
        stderr_of(&out).contains(&format!("{port}/tcp is in use")),
        "{out:?}"
    );
    // Released exactly once, with the kernel.
    k.c.cli_ok(&["rm", "-f", &id]);
    wait_for(T, "the port free again", || async {
        TcpListener::bind(("127.0.0.1", port)).ok().map(|_| ())
    })
    .await;
    let again = k.run_detached(&["-p", &spec, TEST_IMAGE, "sleep", "60"]);
    assert_eq!(k.inspect(&again)["ports"][0]["host_port"], port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_the_slots_a_kernel_was_given_also_after_it_ended() {
    // Stand-in: no GPU on CI, so one fake GPU from config (exposed by env only).
    let fake = "GPU-0d6d1a2a-1111-2222-3333-444455556666";
    let k = KernelCluster::start_with("slotsshown", &[("docker/fake_gpus/0/id", fake)]).await;
    wait_for(T, "one GPU in the slots", || async {
        (k.c.node("a1")?["slots"]["total"]["gpus"] == 1).then_some(())
    })
    .await;
    let id = k.run_detached(&[
        "--cpus", "0.25", "-m", "32m", "--gpus", "1", TEST_IMAGE, "sh", "-c", "exit 0",
    ]);
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["slots"]["cpu"], 0.25, "{info}");
    assert_eq!(info["slots"]["memory_bytes"], 32 << 20, "{info}");
    assert_eq!(info["slots"]["gpus"], 1, "{info}");
    assert_eq!(info["gpus"][0], fake, "{info}");
    // Given back all the same.
    wait_for(T, "the GPU free again", || async {
        (k.c.node("a1")?["slots"]["allocated"]["gpus"] == 0).then_some(())
    })
    .await;
}
