//! Task profiles (Qarnot's Docker profiles) as a Qarnot user would notice them, against the
//! real agent, manager, CLI, etcd and Docker engine: each profile's network really is as
//! named, the image comes from DOCKER_SRV/REPO/TAG with the kernel's own registry login (a
//! real private registry), progress read from the output reaches 100 in `inspect`, the
//! shutdown command runs on stop before the kernel is made to end, and write-only secrets
//! are seen by the task only. Resources and results (S3) are in `tests/profile_resources.rs`,
//! SSH access in `tests/profile_ssh.rs`; malformed constants in `tests/bad_input.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{wait_for, KernelCluster, Registry, TEST_IMAGE};
use deckhand::rpc::pb::agent_service_client::AgentServiceClient;
use deckhand::rpc::pb::WatchEventsRequest;
use futures::StreamExt;

const T: Duration = Duration::from_secs(60);

/// `deckhand run -d --profile PROFILE --constant K=V …` of the local test image, plus
/// `extra` flags; the output.
fn run(
    k: &KernelCluster,
    profile: &str,
    constants: &[(&str, &str)],
    extra: &[&str],
) -> std::process::Output {
    let mut args: Vec<String> = ["run", "-d", "--profile", profile]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut all = vec![
        ("DOCKER_REPO", "deckhand-test/busybox"),
        ("DOCKER_TAG", "latest"),
    ];
    all.extend_from_slice(constants);
    for (key, value) in all {
        args.push("--constant".into());
        args.push(format!("{key}={value}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    k.c.cli(&refs)
}

fn run_ok(k: &KernelCluster, profile: &str, constants: &[(&str, &str)], extra: &[&str]) -> String {
    let out = run(k, profile, constants, extra);
    assert!(
        out.status.success(),
        "run failed: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        k.agent.log()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until the kernel has ended (DONE, FAILED or CANCELLED); its JSON.
async fn ended(k: &KernelCluster, id: &str) -> serde_json::Value {
    wait_for(T, &format!("kernel {id} to end"), || async {
        let v: serde_json::Value =
            serde_json::from_slice(&k.c.cli(&["inspect", id]).stdout).ok()?;
        ["DONE", "FAILED", "CANCELLED"]
            .contains(&v["state"].as_str()?)
            .then_some(v)
    })
    .await
}

/// A one-request HTTP server on every host address (the kernels' bridge reaches it at its
/// gateway); answers `hello-from-host`. Stops by itself after `T`.
fn host_listener() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + T;
        while std::time::Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = s
                        .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nhello-from-host");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    port
}

/// Lists the kernel's interfaces and tries the host listener at its gateway.
const NET_SCRIPT: &str = r#"echo "interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"; gw=$(ip route | awk '/default/ {print $3}'); if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "${gw:-172.17.0.1}" "$PORT" | grep -q hello-from-host; then echo reached-host; else echo unreachable; fi"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_profiles_network_is_as_named() {
    let k = KernelCluster::start("profile-net").await;
    let port = host_listener().to_string();
    let mut seen = Vec::new();
    for profile in ["docker-batch", "docker-network"] {
        let id = run_ok(
            &k,
            profile,
            &[
                ("PORT", port.as_str()),
                ("SCRIPT", NET_SCRIPT),
                ("DOCKER_CMD", r#"sh -c 'eval "$SCRIPT"'"#),
            ],
            &[],
        );
        let info = ended(&k, &id).await;
        assert_eq!(info["state"], "DONE", "{info}");
        assert_eq!(info["qarnot_state"], "Success", "{info}");
        let logs = k.c.cli_ok(&["logs", &id]);
        seen.push((profile, logs));
    }
    let (_, batch) = &seen[0];
    assert!(
        batch
            .lines()
            .next()
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>() == ["interfaces:", "lo"]),
        "docker-batch has only loopback: {batch}"
    );
    assert!(
        batch.contains("unreachable"),
        "docker-batch reached the host: {batch}"
    );
    let (_, network) = &seen[1];
    assert!(
        network.contains("eth0"),
        "docker-network has an interface: {network}"
    );
    assert!(
        network.contains("reached-host"),
        "docker-network reaches the host: {network}"
    );
}

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
    let info = ended(&k, &id).await;
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
        let info = ended(&k, &id).await;
        assert_eq!(info["state"], "FAILED", "{info}");
        assert_eq!(info["qarnot_state"], "Failure", "{info}");
    } else {
        assert!(!out.status.success(), "{text}");
    }
    for (what, text) in [
        ("agent log", k.agent.log()),
        ("manager log", k.manager.log()),
        ("ps", k.c.cli_ok(&["ps", "--json"])),
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
    let mut agent = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .expect("agent gRPC");
    let mut events = agent
        .watch_events(WatchEventsRequest { after_seq: 0 })
        .await
        .expect("watch")
        .into_inner();
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
    let begun = std::time::Instant::now();
    k.c.cli_ok(&["stop", &id]);
    let info = ended(&k, &id).await;
    // container/shutdown_grace (2 s) and the stop grace (2 s), far below Qarnot's 30 s.
    assert!(
        begun.elapsed() < Duration::from_secs(30),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(info["state"], "FAILED", "{info}");
    assert_eq!(info["qarnot_state"], "Cancelled", "{info}");
    assert_eq!(info["signal"], "SIGKILL", "it ignored TERM: {info}");
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
    let mut agent = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .expect("agent gRPC");
    let mut events = agent
        .watch_events(WatchEventsRequest { after_seq: 0 })
        .await
        .expect("watch")
        .into_inner();
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
    let info = ended(&k, &id).await;
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
    for (what, text) in outputs {
        assert!(
            !text.contains(SECRET),
            "the secret is in the {what}: {text}"
        );
    }
}
