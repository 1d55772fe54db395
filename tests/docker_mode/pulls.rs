//! Pulls: the cache policies, registry credentials, one pull per image, progress and stalls.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_policies_decide_which_image_runs_with_the_registry_changed_unchanged_and_down() {
    let mut reg = Registry::start(USER, PASSWORD).await;
    let k = cluster_with_registry("policies", &reg).await;
    // The harness defaults to cache_first; this test wants the documented default.
    k.c.cli_ok(&["config", "unset", "docker/cache_usage"]);
    let ns = k.c.ns.clone();
    let local = build_variant(&format!("{ns}-local"), "");
    let remote = build_variant(&format!("{ns}-remote"), "");
    let _tags = Tags(vec![local.clone(), remote.clone()]);
    let (local_id, remote_id) = (image_id(&local), image_id(&remote));
    assert_ne!(local_id, remote_id);
    // The registry has `remote`; the same reference points at `local` on this host.
    let image = reg.push(&remote, &format!("policy/{ns}:v1"), false);
    let set_local = |present: bool| {
        untag(&image);
        if present {
            docker_ok(&["tag", &local, &image]);
        }
    };

    // Registry up, image changed since the local copy.
    let cases = [
        ("cache_first", &local_id),
        ("remote_first", &remote_id),
        ("require_pull", &remote_id),
    ];
    for (policy, want) in cases {
        set_local(true);
        let (id, v) = run_with(&k, policy, &image).await;
        assert_eq!(v["state"], "RUNNING", "{policy}: {v}");
        assert_eq!(&ran_image(&v), want, "{policy} with a changed image");
        k.c.cli_ok(&["rm", "-f", &id]);
    }
    // Registry up and unchanged: the local copy is what the registry has.
    for policy in ["cache_first", "remote_first", "require_pull"] {
        untag(&image);
        docker_ok(&["tag", &remote, &image]);
        let (id, v) = run_with(&k, policy, &image).await;
        assert_eq!(v["state"], "RUNNING", "{policy}: {v}");
        assert_eq!(ran_image(&v), remote_id, "{policy} unchanged");
        k.c.cli_ok(&["rm", "-f", &id]);
    }
    // The default (no override) is remote_first.
    set_local(true);
    let id = k.run_detached(&[&image, "sleep", "30"]);
    let v = k.wait_state(&id, "RUNNING", T).await;
    assert_eq!(ran_image(&v), remote_id, "default policy pulls first");
    k.c.cli_ok(&["rm", "-f", &id]);

    // Registry down, with a local copy.
    reg.stop();
    set_local(true);
    let (a, v) = run_with(&k, "cache_first", &image).await;
    assert_eq!(v["state"], "RUNNING", "{v}");
    assert_eq!(ran_image(&v), local_id);
    let (b, v) = run_with(&k, "remote_first", &image).await;
    assert_eq!(v["state"], "RUNNING", "remote_first falls back: {v}");
    assert_eq!(ran_image(&v), local_id);
    let said = agent_events(&k)
        .await
        .into_iter()
        .filter(|e| e.kernel_id == b)
        .any(|e| e.reason.contains("using the local image"));
    assert!(said, "the fallback is reported in the kernel's events");
    let (c, v) = run_with(&k, "require_pull", &image).await;
    assert_eq!(
        v["state"], "FAILED",
        "require_pull never uses the local copy"
    );
    assert!(
        v["reason"].as_str().unwrap().contains("registry `private`"),
        "{v}"
    );
    k.c.cli_ok(&["rm", "-f", &a, &b, &c]);

    // Registry down, no local copy: nothing can run it.
    set_local(false);
    for policy in ["cache_first", "remote_first", "require_pull"] {
        let (id, v) = run_with(&k, policy, &image).await;
        assert_eq!(v["state"], "FAILED", "{policy} without any copy: {v}");
        assert!(v["reason"].as_str().unwrap().contains(&image), "{v}");
        k.c.cli_ok(&["rm", &id]);
    }
    untag(&local);
    untag(&remote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_registry_password_fails_the_kernel_and_is_shown_nowhere() {
    let reg = Registry::start(USER, PASSWORD).await;
    let wrong = "wrong-Zq93-secret";
    let entry = format!(
        "{{url = \"{}\", username = \"{USER}\", password = \"{wrong}\"}}",
        reg.addr()
    );
    let k = KernelCluster::start_with("badpw", &[("docker/registries/private", &entry)]).await;
    let ns = k.c.ns.clone();
    let image = reg.push(TEST_IMAGE, &format!("auth/{ns}:v1"), false);
    let (id, v) = run_with(&k, "remote_first", &image).await;
    assert_eq!(v["state"], "FAILED", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("registry `private`"), "{reason}");
    assert!(reason.contains("authentication failed"), "{reason}");

    // `config get` shows the password as ***, in TOML and JSON.
    let toml = k.c.cli_ok(&["config", "get"]);
    assert!(toml.contains("password = \"***\""), "{toml}");
    let json =
        k.c.cli_ok(&["config", "get", "docker/registries", "--json"]);
    assert!(json.contains("\"***\""), "{json}");
    let one =
        k.c.cli_ok(&["config", "get", "docker/registries/private/password"]);
    assert_eq!(one.trim(), "***");

    // Nowhere else either: events, inspect, logs, the registration in etcd.
    let events = format!("{:?}", agent_events(&k).await);
    let inspect = k.c.cli_ok(&["inspect", &id]);
    let mut etcd = k.c.etcd_client().await;
    let registration = etcd
        .get(k.c.agent_key("a1"), None)
        .await
        .unwrap()
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    for (what, text) in [
        ("agent log", k.agent.log()),
        ("manager log", k.manager.log()),
        ("events", events),
        ("inspect", inspect),
        ("registration", registration),
        ("config get", toml),
    ] {
        assert!(!text.contains(wrong), "the password appears in the {what}");
        assert!(!text.contains(PASSWORD), "a password appears in the {what}");
    }
    k.c.cli_ok(&["rm", &id]);

    // With the right password the same image runs: the registry entry took effect live.
    k.c.cli_ok(&[
        "config",
        "set",
        "docker/registries/private/password",
        PASSWORD,
    ]);
    wait_for(T, "new password applied", || async {
        let (id, v) = run_with(&k, "remote_first", &image).await;
        k.c.cli_ok(&["rm", "-f", &id]);
        (v["state"] == "RUNNING").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kernels_of_one_uncached_image_cause_one_pull() {
    let reg = Registry::start(USER, PASSWORD).await;
    let k = cluster_with_registry("onepull", &reg).await;
    let ns = k.c.ns.clone();
    let manager = ClusterServiceClient::connect(format!("http://127.0.0.1:{}", k.manager.port))
        .await
        .expect("manager gRPC");

    // Ten separate kernels asked for at once (cache_first: whoever comes after the pull
    // finds the image; whoever comes during it waits on it).
    let repo = format!("burst/{ns}");
    let image = reg.push(TEST_IMAGE, &format!("{repo}:v1"), false);
    let calls = (0..10).map(|_| {
        let mut m = manager.clone();
        let req = RunKernelRequest {
            request: Some(CreateKernelRequest {
                spec: Some(KernelSpec {
                    kernel_id: uuid::Uuid::new_v4().to_string(),
                    image: image.clone(),
                    command: vec!["sleep".into(), "30".into()],
                    cache_usage: "cache_first".into(),
                    ..Default::default()
                }),
                array: None,
            }),
            agent_id: String::new(),
        };
        async move { m.run_kernel(req).await }
    });
    let results = futures::future::join_all(calls).await;
    for r in &results {
        let kernels = &r.as_ref().expect("RunKernel").get_ref().kernels;
        assert_eq!(kernels[0].state().as_str_name(), "KERNEL_STATE_RUNNING");
    }
    assert_eq!(reg.pulls(&repo), 1, "one pull for ten kernels");

    // Ten array tasks under remote_first (every task wants a fresh pull; one that ended
    // after they were asked for serves them all, even past the creation concurrency of 4).
    let repo2 = format!("array/{ns}");
    let image2 = reg.push(TEST_IMAGE, &format!("{repo2}:v1"), false);
    let array =
        k.c.cli_ok(&["run", "--array", "1-10", &image2, "sleep", "30"]);
    let array = array.trim().to_string();
    wait_for(T, "ten tasks running", || async {
        let running = k
            .ps()
            .iter()
            .filter(|v| v["array_id"] == array.as_str() && v["state"] == "RUNNING")
            .count();
        (running == 10).then_some(())
    })
    .await;
    assert_eq!(reg.pulls(&repo2), 1, "one pull for ten array tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_progress_reaches_the_events_and_the_run_progress_bar_and_ends_at_100_percent() {
    let reg = Registry::start(USER, PASSWORD).await;
    let k = cluster_with_registry("progress", &reg).await;
    let ns = k.c.ns.clone();
    // A 24 MiB layer, so bytes really move.
    let big = build_variant(
        &format!("{ns}-big"),
        "RUN head -c 25165824 /dev/urandom > /blob",
    );
    let _tags = Tags(vec![big.clone()]);
    let image = reg.push(&big, &format!("big/{ns}:v1"), false);
    untag(&big);
    assert!(image_id(&image).is_empty(), "the image must not be cached");

    // Attached `deckhand run` draws the bar on stderr (one line per update off a terminal).
    let out = k.c.cli(&["run", &image, "sh", "-c", "wc -c < /blob"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "25165824");
    let bars: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pulling "))
        .collect();
    assert!(!bars.is_empty(), "no progress shown: {stderr}");
    let last = bars.last().unwrap();
    assert!(last.contains("100%"), "{last}");
    assert!(last.contains(&image), "{last}");

    // The same progress as events: bytes and layers, ending with everything done.
    let pulls: Vec<_> = agent_events(&k)
        .await
        .into_iter()
        .filter_map(|e| e.pull)
        .collect();
    assert!(!pulls.is_empty());
    let end = pulls.last().unwrap();
    assert!(end.bytes_total >= 24 << 20, "{end:?}");
    assert_eq!(end.bytes_done, end.bytes_total, "{end:?}");
    assert_eq!(end.layers_done, end.layers_total, "{end:?}");
    assert!(end.layers_total >= 2, "{end:?}");
    assert!(
        pulls.windows(2).all(|w| w[1].bytes_done >= w[0].bytes_done),
        "progress never goes back: {pulls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pull_fails_the_kernel_with_its_reason_and_frees_its_slots() {
    let k = KernelCluster::start_with(
        "stall",
        &[
            ("docker/pull_inactivity_timeout", "2s"),
            ("agent/heartbeat_interval", "500ms"),
        ],
    )
    .await;
    // A registry that accepts connections and never answers.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let image = format!(
        "127.0.0.1:{}/stalls/forever:latest",
        stall.local_addr().unwrap().port()
    );
    let id = uuid::Uuid::new_v4().to_string();
    let mut run =
        k.c.command_for(&["run", "-d", "--id", &id, "--cpus", "0.5", &image, "true"])
            .spawn()
            .unwrap();
    let pulling = k.wait_state(&id, "PULLING", T).await;
    assert_eq!(pulling["slots"]["cpu"], 0.5, "{pulling}");
    wait_for(T, "allocated while pulling", || async {
        let n = k.c.node("a1")?;
        (n["slots"]["allocated"]["cpu"] == 0.5).then_some(())
    })
    .await;
    let v = k.wait_state(&id, "FAILED", T).await;
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("stalled: no progress for 2s"), "{reason}");
    assert!(
        reason.contains("docker/pull_inactivity_timeout"),
        "{reason}"
    );
    let _ = run.wait();
    wait_for(T, "slots freed", || async {
        let n = k.c.node("a1")?;
        (n["slots"]["allocated"]["cpu"].as_f64().unwrap_or(0.0) == 0.0).then_some(())
    })
    .await;
    k.c.cli_ok(&["rm", &id]);
    drop(stall);
}
