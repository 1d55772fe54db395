//! The image and its login, progress from the output, the shutdown command and write-only secrets.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_comes_from_docker_srv_repo_tag_pulled_with_the_kernels_own_login() {
    let registry = Registry::start("qarnot", "reg-pass-91c4").await;
    let image = registry.push(TEST_IMAGE, "team/profiled:v1", false);
    let k = KernelCluster::start("profile-image").await;
    let srv = registry.addr();
    let login = [
        ("DOCKER_SRV", srv.as_str()),
        ("DOCKER_REPO", "team/profiled"),
        ("DOCKER_TAG", "v1"),
        ("DOCKER_REGISTRY_LOGIN", "qarnot"),
        ("DOCKER_CMD", "echo pulled-and-ran"),
    ];
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--profile".into(),
        "docker-batch".into(),
    ];
    let with = |pw: &str| {
        let mut a = args.clone();
        for (key, value) in login
            .iter()
            .chain([("DOCKER_REGISTRY_PASSWORD", pw)].iter())
        {
            a.push("--constant".into());
            a.push(format!("{key}={value}"));
        }
        a
    };
    let ok = with("reg-pass-91c4");
    let out = k.c.cli(&ok.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let first = id.clone();
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "DONE", "{info}");
    assert_eq!(info["image"], image, "{info}");
    assert!(k.c.cli_ok(&["logs", &id]).contains("pulled-and-ran"));
    assert_eq!(
        info["spec"]["constants"]["DOCKER_REGISTRY_PASSWORD"], "***",
        "the password reads back as ***: {info}"
    );
    // A wrong password: the pull is refused by the registry, and the kernel says so.
    common::untag(&image);
    args = with("wrong-pass");
    let out =
        k.c.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let id = text
        .split_whitespace()
        .find(|w| uuid::Uuid::parse_str(w).is_ok())
        .map(str::to_string);
    if let Some(id) = id {
        let info = k.wait_ended(&id, T).await;
        assert_eq!(info["state"], "FAILED", "{info}");
        assert_eq!(info["qarnot_state"], "Failure", "{info}");
    } else {
        assert!(!out.status.success(), "{text}");
    }
    for (what, text) in [
        ("agent log", k.agent.log()),
        ("manager log", k.manager.log()),
        ("ps", k.c.cli_ok(&["ps", "--json"])),
        ("inspect", k.c.cli_ok(&["inspect", &first])),
        (
            "kernel.json",
            std::fs::read_to_string(k.scratch().join(&first).join("config/kernel.json"))
                .unwrap_or_default(),
        ),
        ("etcd", etcd_dump(&k).await),
    ] {
        assert!(
            !text.contains("reg-pass-91c4"),
            "the registry password is in the {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_read_from_the_output_reaches_100_in_inspect_ps_and_events() {
    let k = KernelCluster::start("profile-progress").await;
    let mut events = k.agent_events().await;
    let id = run_ok(
        &k,
        "docker-batch",
        &[
            ("DOCKER_PROGRESS1", r"step (\d+)/100"),
            ("DOCKER_PROGRESS2", r"^ignored (\d+)"),
            (
                "DOCKER_CMD",
                "sh -c 'for i in 10 20 30 40 50 60 70 80 90 100; do echo step $i/100; echo noise >&2; sleep 0.1; done; sleep 300'",
            ),
        ],
        &[],
    );
    let info = wait_for(T, "progress 100", || async {
        let v = k.inspect(&id);
        (v["progress"] == 100.0).then_some(v)
    })
    .await;
    assert_eq!(info["state"], "RUNNING", "{info}");
    assert_eq!(info["qarnot_state"], "Executing", "{info}");
    let ps = k.c.cli_ok(&["ps"]);
    assert!(
        ps.lines().any(|l| l.contains(&id) && l.contains("100%")),
        "{ps}"
    );
    // Events carry the progress, rising to 100.
    let mut seen = Vec::new();
    while seen.last() != Some(&100.0) {
        let ev = tokio::time::timeout(T, events.next())
            .await
            .expect("an event")
            .expect("stream")
            .expect("event");
        if ev.kernel_id == id {
            if let Some(p) = ev.progress {
                seen.push(p);
            }
        }
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    // Heartbeats carry it to the manager: `nodes` shows it for the agent.
    wait_for(T, "the manager to hear progress 100", || async {
        let node = k.c.node("a1")?;
        (node["kernel_progress"][&id] == 100.0).then_some(())
    })
    .await;
    k.c.cli_ok(&["rm", "-f", &id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_runs_the_shutdown_command_then_ends_a_kernel_that_ignores_term() {
    let k =
        KernelCluster::start_with("profile-shutdown", &[("container/shutdown_grace", "2s")]).await;
    let id = run_ok(
        &k,
        "docker-batch",
        &[
            (
                "DOCKER_CMD",
                r#"sh -c 'trap "echo got TERM, ignoring it" TERM; while true; do sleep 1; done'"#,
            ),
            (
                "DOCKER_SHUTDOWN_CMD",
                "touch /home/work/shutdown-ran; echo shutdown command ran",
            ),
        ],
        &["--stop-timeout", "2s"],
    );
    k.wait_state(&id, "RUNNING", T).await;
    k.c.cli_ok(&["stop", &id]);
    // container/shutdown_grace (2 s) and the stop grace (2 s) here, Qarnot's 30 s by default:
    // the kernel ends though it ignores TERM, killed by the agent.
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "FAILED", "{info}");
    assert_eq!(info["qarnot_state"], "Cancelled", "{info}");
    assert_eq!(info["signal"], "SIGKILL", "it ignored TERM: {info}");
    let container = info["container_id"].as_str().unwrap_or_default();
    assert_eq!(
        common::docker_inspect(container, "{{.State.Running}}"),
        "false",
        "the container is gone from the running ones"
    );
    let marker = k.scratch().join(&id).join("work/shutdown-ran");
    assert!(
        marker.exists(),
        "the shutdown command's marker {} is missing",
        marker.display()
    );
    let logs = k.c.cli_ok(&["logs", &id]);
    assert!(
        logs.contains("shutdown command ran"),
        "its output is in the kernel's logs: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_only_secrets_reach_the_task_and_no_read_back() {
    const SECRET: &str = "s3cr3t-7c1d9e2b";
    let k = KernelCluster::start("profile-secret").await;
    let mut events = k.agent_events().await;
    let id = run_ok(
        &k,
        "docker-batch",
        &[
            ("QARNOT_SECRET__TOKEN", SECRET),
            (
                "API_URL",
                "https://user:${QARNOT_SECRET__TOKEN}@example.com",
            ),
            ("PLAIN", "visible"),
            (
                "DOCKER_CMD",
                r#"sh -c 'test "$QARNOT_SECRET__TOKEN" = s3cr3t-7c1d9e2b && test "$API_URL" = "https://user:s3cr3t-7c1d9e2b@example.com" && echo "secret seen; plain=$PLAIN"'"#,
            ),
        ],
        &[],
    );
    let info = k.wait_ended(&id, T).await;
    assert_eq!(info["state"], "DONE", "the task saw its secret: {info}");
    assert!(k
        .c
        .cli_ok(&["logs", &id])
        .contains("secret seen; plain=visible"));
    assert_eq!(
        info["spec"]["constants"]["QARNOT_SECRET__TOKEN"], "[SECRET]",
        "{info}"
    );
    // Every read-back: inspect, ps, events, kernel.json and environ.txt, the logs of both
    // daemons, an error naming the constants.
    let home = k.scratch().join(&id).join("config");
    let mut outputs = vec![
        ("inspect", k.c.cli_ok(&["inspect", &id])),
        ("ps", k.c.cli_ok(&["ps", "--json"])),
        (
            "kernel.json",
            std::fs::read_to_string(home.join("kernel.json")).unwrap_or_default(),
        ),
        (
            "environ.txt",
            std::fs::read_to_string(home.join("environ.txt")).unwrap_or_default(),
        ),
        (
            "registry record",
            std::fs::read_to_string(k.scratch().join(format!(".deckhand/kernels/{id}.json")))
                .map(|r| {
                    // The record keeps what the kernel needs to run again; its shown spec is masked.
                    let v: serde_json::Value = serde_json::from_str(&r).unwrap_or_default();
                    v["shown_spec"].to_string()
                })
                .unwrap_or_default(),
        ),
    ];
    assert!(
        outputs[3].1.contains("PLAIN=visible"),
        "environ.txt: {}",
        outputs[3].1
    );
    let bad = run(
        &k,
        "docker-batch",
        &[("QARNOT_SECRET__TOKEN", SECRET), ("DOCKER_BOGUS", "1")],
        &[],
    );
    assert!(!bad.status.success());
    outputs.push(("error", String::from_utf8_lossy(&bad.stderr).into_owned()));
    let mut evs = String::new();
    while let Ok(Some(Ok(ev))) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        evs.push_str(&format!("{ev:?}\n"));
    }
    outputs.push(("events", evs));
    outputs.push(("agent log", k.agent.log()));
    outputs.push(("manager log", k.manager.log()));
    outputs.push(("etcd", etcd_dump(&k).await));
    for (what, text) in outputs {
        assert!(
            !text.contains(SECRET),
            "the secret is in the {what}: {text}"
        );
    }
}
