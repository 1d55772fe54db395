//! Renting: the cheapest offer, shipped logs, the next offer after a refusal, re-adoption after a crash.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cheapest_matching_offer_runs_the_kernel_with_its_env_and_its_exit_code() {
    // Stand-in for Vast.ai's service (unreachable from here); instances are real containers.
    let vast = VastStandIn::start(VastConfig::new(KEY).release_on_destroy(true).offers(vec![
        Offer::new(101, "RTX 3090", 0.30),
        Offer::new(102, "RTX 3090", 0.20),
        Offer::new(103, "RTX 4090", 0.10),
        Offer::new(104, "RTX 3090", 0.05).set("verified", false),
        Offer::new(105, "RTX 3090", 0.12).set("num_gpus", 2),
        Offer::new(106, "RTX 3090", 0.15).set("reliability", 0.5),
    ]));
    let k = cluster(
        "vastcheap",
        &vast,
        &[
            ("vast_api/offer_filters/gpu_name/eq", "RTX 3090"),
            ("vast_api/offer_filters/reliability/gte", "0.9"),
            ("vast_api/max_dph", "0.25"),
        ],
    )
    .await;
    let mut events = k.agent_events().await;
    let id = run_ok(
        &k,
        &[
            "--parent",
            "p-7=ocr",
            "--parent",
            "p-9=train",
            "-e",
            "FOO=bar",
            TEST_IMAGE,
            "sh",
            "-c",
            "echo FOO=$FOO; echo BOOT=$TASK_BOOTSTRAP; echo PARENTS=$TASK_PARENTS; exit 0",
        ],
    );
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    assert_eq!(info["runtime"], "vastai");
    // What an instance cannot do is refused naming the runtime.
    for op in [
        vec!["suspend", &id],
        vec!["resume", &id],
        vec!["exec", &id, "true"],
        vec!["files", "ls", &id],
    ] {
        let out = k.c.cli(&op);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{op:?}");
        assert!(
            err.contains(&format!("{} is not supported by the vastai runtime", op[0])),
            "{op:?}: {err}"
        );
    }
    assert_eq!(info["runtime_info"]["offer_id"], "102", "{info}");
    assert_eq!(info["runtime_info"]["gpu"], "RTX 3090");
    assert_eq!(info["runtime_info"]["dph"], "0.200");
    // What it cost: the instance's $/h for the time it ran, never nothing.
    let cost: f64 = info["runtime_info"]["cost_so_far"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no cost_so_far in {info}"));
    assert!(cost > 0.0 && cost < 0.01, "{info}");
    // Each step is an event: the offer ordered, the instance coming up, running.
    let events = events_of(&mut events, &id).await;
    assert_eq!(
        states(&events),
        [
            KernelState::Preparing,
            KernelState::Creating,
            KernelState::Running,
            KernelState::Done
        ],
        "{events:?}"
    );
    let instance = instance_of(&info);
    let said = |state: KernelState, text: &str| {
        events
            .iter()
            .any(|e| e.state() == state && e.reason.contains(text))
    };
    assert!(
        said(
            KernelState::Preparing,
            "ordering offer 102 (RTX 3090, $0.200/h)"
        ),
        "{events:?}"
    );
    assert!(
        said(
            KernelState::Creating,
            &format!("instance {instance} is running (offer 102, RTX 3090, $0.200/h)")
        ),
        "{events:?}"
    );
    assert_eq!(vast.rentals(102), 1);
    for other in [101, 103, 104, 105, 106] {
        assert_eq!(vast.rent_attempts(other), 0, "offer {other} was tried");
    }
    // The instance is destroyed once its command ended.
    wait_for(T, "the ended instance destroyed", || async {
        vast.destroyed().contains(&instance).then_some(())
    })
    .await;
    // What the real container printed: the same env a Docker kernel gets, plus the task's.
    let out = k.c.cli(&["logs", &id]);
    assert!(
        out.status.success(),
        "{out:?}\n{:?}\n{}",
        std::fs::read_dir(k.scratch().join(".deckhand/vastai-logs"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>()),
        k.agent.log()
    );
    let logs = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(logs.contains("FOO=bar\n"), "{logs}");
    assert!(logs.contains("BOOT=true\n"), "{logs}");
    assert!(
        logs.contains(r#"PARENTS={"p-7":"ocr","p-9":"train"}"#),
        "{logs}"
    );
    assert!(!logs.contains("deckhand-exit"), "{logs}");

    // A command that exits 3: FAILED with that code (read from the instance's output).
    let failing = run_ok(&k, &[TEST_IMAGE, "sh", "-c", "exit 3"]);
    let info = k.wait_state(&failing, "FAILED", T).await;
    assert_eq!(info["exit_code"], 3, "{info}");
    assert_eq!(info["reason"], "exited with code 3");
    assert_key_hidden(&k);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_shipped_to_s3_and_read_back_after_the_instance_is_gone_within_the_rate_limits() {
    let s3 = S3Server::start().await;
    s3.create_bucket("vast-logs");
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![Offer::new(7, "A100", 1.1)]));
    // The stand-in enforces the service's documented per-endpoint limits (a call sooner
    // than its interval is a 429 "endpoint threshold"): the agent keeps to them.
    vast.documented_rate_limits();
    let endpoint = s3.endpoint();
    let k = cluster(
        "vastlogs",
        &vast,
        &[
            // Kernels that name no runtime run on Vast.ai.
            ("agent/default_runtime", "vastai"),
            ("vast_api/logs/endpoint", endpoint.as_str()),
            ("vast_api/logs/bucket", "vast-logs"),
            ("vast_api/logs/region", "us-east-1"),
            ("vast_api/logs/prefix", "runs"),
            ("vast_api/logs/access_key", s3.access_key.as_str()),
            ("vast_api/logs/secret_key", s3.secret_key.as_str()),
            ("vast_api/log_interval", "1s"),
        ],
    )
    .await;
    let id = k.run_detached(&[
        TEST_IMAGE,
        "sh",
        "-c",
        "echo line one; sleep 2; echo line two; exit 0",
    ]);
    // While it runs, its log is shipped every log_interval.
    let key = format!("runs/{}/{id}.log", k.c.ns);
    wait_for(T, "a first shipped log", || async {
        s3.get_string("vast-logs", &key)
            .await
            .filter(|t| t.contains("line one"))
    })
    .await;
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["runtime"], "vastai", "{info}");
    let instance = instance_of(&info);
    wait_for(T, "the instance destroyed", || async {
        vast.destroyed().contains(&instance).then_some(())
    })
    .await;
    let shipped = s3.get_string("vast-logs", &key).await.expect("shipped log");
    assert_eq!(shipped, "line one\nline two\n");
    // The instance is gone: `logs` reads the shipped copy.
    assert_eq!(k.c.cli_ok(&["logs", &id]), "line one\nline two\n");
    assert!(
        !k.agent.log().contains(&s3.secret_key),
        "the S3 secret is in the agent log"
    );
    let cfg = k.c.cli_ok(&["config", "get", "vast_api/logs/secret_key"]);
    assert!(
        cfg.contains("***") && !cfg.contains(&s3.secret_key),
        "{cfg}"
    );
    assert_key_hidden(&k);
    // No call came sooner than its endpoint's documented interval.
    let limited: Vec<_> = vast
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(limited.is_empty(), "answered 429: {limited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_offer_is_taken_after_no_such_ask_and_after_a_provisioning_timeout() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![
        Offer::new(1, "RTX 4090", 0.10),
        Offer::new(2, "RTX 4090", 0.20).provision(Provision::Never),
        Offer::new(3, "RTX 4090", 0.30),
    ]));
    // Offer 1 is taken by someone else between the search and the order.
    vast.snatch_offer(1);
    let k = cluster("vastnext", &vast, &[("vast_api/provision_timeout", "3s")]).await;
    let id = run_ok(&k, &[TEST_IMAGE, "sleep", "600"]);
    let info = k.wait_state(&id, "RUNNING", T).await;
    assert_eq!(info["runtime_info"]["offer_id"], "3", "{info}");
    assert!(vast.rent_attempts(1) >= 1);
    assert_eq!(vast.rentals(1), 0);
    assert_eq!(vast.rentals(2), 1);
    // The instance that never came up was destroyed.
    let never: Vec<u64> = vast
        .instances()
        .iter()
        .filter(|i| i.offer_id == 2)
        .map(|i| i.id)
        .collect();
    assert_eq!(never.len(), 1);
    assert!(vast.destroyed().contains(&never[0]));
    let log = k.agent.log();
    assert!(log.contains("no_such_ask"), "{log}");
    assert!(log.contains("vast_api/provision_timeout"), "{log}");
    // One instance at most (vast_api/max_instances defaults to 1): a second is refused.
    let out = run(&k, &[TEST_IMAGE, "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vast_api/max_instances"), "{err}");
    // stop destroys the instance (and confirms it is gone).
    let instance = instance_of(&info);
    k.c.cli_ok(&["stop", &id]);
    let info = k.wait_state(&id, "FAILED", T).await;
    assert!(
        info["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped on request"),
        "{info}"
    );
    assert!(vast.destroyed().contains(&instance));
    assert!(
        vast.live_instances().is_empty(),
        "{:?}",
        vast.live_instances()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_run_re_adopts_its_instance_and_destroys_leaked_ones_then_and_later() {
    let vast = VastStandIn::start(
        VastConfig::new(KEY)
            .release_on_destroy(true)
            .offers(vec![Offer::new(5, "L4", 0.4), Offer::new(6, "L4", 0.5)]),
    );
    let mut k = cluster("vastkill", &vast, &[("vast_api/max_instances", "2")]).await;
    let keep = run_ok(&k, &[TEST_IMAGE, "sleep", "600"]);
    let vanish = run_ok(&k, &[TEST_IMAGE, "sleep", "600"]);
    let keep_instance = instance_of(&k.wait_state(&keep, "RUNNING", T).await);
    let vanish_instance = instance_of(&k.wait_state(&vanish, "RUNNING", T).await);
    k.agent.kill9();
    // While the agent is down: an instance labelled as its own that no record knows (as a
    // crash between ordering and recording would leave), and one of its kernels' instances
    // destroyed by someone else.
    let leaked_label = format!("deckhand:{}:a1:{}:tok123", k.c.ns, uuid::Uuid::new_v4());
    let leaked = vast.preexisting(&leaked_label, TEST_IMAGE, &["sleep", "600"], &[]);
    let client = common::vast::VastClient::new(&vast);
    client.destroy(vanish_instance).await;
    k.agent = k.c.agent_on("a1", k.scratch());
    wait_for(T, "the leaked instance destroyed", || async {
        vast.destroyed().contains(&leaked).then_some(())
    })
    .await;
    let info = k.wait_state(&vanish, "FAILED", T).await;
    assert!(
        info["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("is gone"),
        "{info}"
    );
    let info = k.wait_state(&keep, "RUNNING", T).await;
    assert_eq!(
        instance_of(&info),
        keep_instance,
        "re-adopted, same instance"
    );
    assert!(!vast.destroyed().contains(&keep_instance));
    assert!(
        k.agent.log().contains("no kernel record knows"),
        "{}",
        k.agent.log()
    );
    // One leaked while the agent runs (as a rental whose recording failed would leave) is
    // destroyed by the poll loop, saying so; the running kernel's instance is kept.
    let later_label = format!("deckhand:{}:a1:{}:tok456", k.c.ns, uuid::Uuid::new_v4());
    let later = vast.preexisting(&later_label, TEST_IMAGE, &["sleep", "600"], &[]);
    wait_for(T, "the instance leaked later destroyed", || async {
        vast.destroyed().contains(&later).then_some(())
    })
    .await;
    assert!(
        k.agent.log().contains("no live kernel holds"),
        "{}",
        k.agent.log()
    );
    assert!(!vast.destroyed().contains(&keep_instance));
    assert_eq!(k.inspect(&keep)["state"], "RUNNING");
    k.c.cli_ok(&["rm", "-f", &keep]);
    wait_for(T, "no instance left", || async {
        vast.live_instances().is_empty().then_some(())
    })
    .await;
}
