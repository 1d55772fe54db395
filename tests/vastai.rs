//! The Vast.ai runtime end to end: the real `deckhand` agent, manager and CLI against a real
//! etcd, with Vast.ai's service played by the local stand-in of its HTTP API
//! (`tests/common/vast/`: Vast.ai itself cannot be reached from here) that runs every rented
//! instance as a real local Docker container, and logs shipped to a real S3-compatible
//! server (moto). The image, env, args and exit codes are real.

mod common;

use std::time::Duration;

use common::s3::S3Server;
use common::vast::{Offer, Provision, VastConfig, VastStandIn};
use common::{count_lines, wait_for, KernelCluster, Registry, TEST_IMAGE};
use deckhand::wire::pb::agent_service_client::AgentServiceClient;
use deckhand::wire::pb::{ControlKernelRequest, KernelAction, KernelState};

use common::vast::e2e::{cluster, events_of, instance_of, run, run_ok, states, vastai_of, KEY, T};

/// The key appears in no log, event or listing.
fn assert_key_hidden(k: &KernelCluster) {
    for (what, text) in [
        ("agent log", k.agent.log()),
        ("manager log", k.manager.log()),
    ] {
        assert!(!text.contains(KEY), "the API key is in the {what}");
    }
    let cfg = k.c.cli_ok(&["config", "get"]);
    assert!(!cfg.contains(KEY), "the API key is in config get: {cfg}");
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_one_clear_error_and_refuses_kernels_naming_the_setting() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![Offer::new(1, "T4", 0.1)]));
    let url = vast.url();
    let wrong = "vast-key-wrong-000111";
    let k = KernelCluster::start_with(
        "vastkey",
        &[
            ("vast_api/api_key", wrong),
            ("vast_api/api_url", url.as_str()),
        ],
    )
    .await;
    wait_for(T, "the refused key reported", || async {
        k.agent.log().contains("refused the key").then_some(())
    })
    .await;
    let out = run(&k, &[TEST_IMAGE, "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vast_api/api_key"), "{err}");
    assert_eq!(vast.count("PUT", "/api/v0/asks"), 0);
    // Said once, not once per poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count_lines(&k.agent.log(), "refused the key"),
        1,
        "{}",
        k.agent.log()
    );
    assert!(
        !k.agent.log().contains(wrong),
        "the key is in the agent log"
    );
    assert!(!err.contains(wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_a_500_storm_and_the_api_down_for_10s_lose_nothing() {
    let vast = VastStandIn::start(VastConfig::new(KEY).release_on_destroy(true).offers(vec![
        Offer::new(9, "H100", 2.0),
        Offer::new(10, "H100", 2.0),
    ]));
    let k = cluster(
        "vaststorm",
        &vast,
        &[
            ("vast_api/max_instances", "3"),
            ("vast_api/max_dph_total", "3.0"),
        ],
    )
    .await;
    vast.storm_429(6);
    let done = run_ok(&k, &[TEST_IMAGE, "sh", "-c", "exit 0"]);
    k.wait_state(&done, "DONE", T).await;
    let answered_429 = vast.requests().iter().filter(|r| r.status == 429).count();
    assert!(
        answered_429 >= 6,
        "only {answered_429} requests met the storm"
    );
    // Server errors are retried too.
    vast.storm_500(6);
    let done = run_ok(&k, &[TEST_IMAGE, "sh", "-c", "exit 0"]);
    k.wait_state(&done, "DONE", T).await;
    let answered_500 = vast.requests().iter().filter(|r| r.status == 500).count();
    assert!(
        answered_500 >= 6,
        "only {answered_500} requests met the storm"
    );

    let id = run_ok(&k, &[TEST_IMAGE, "sleep", "600"]);
    k.wait_state(&id, "RUNNING", T).await;
    // $2.00/h of $3.00/h in use: one more $2.00/h instance would pass the total.
    let out = run(&k, &[TEST_IMAGE, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("vast_api/max_dph_total"),
        "{err}"
    );
    // 500s for longer than the retries last: a stop answers UNAVAILABLE (nothing changed,
    // try again), not an internal error, and the kernel is as it was.
    vast.storm_500_for(Duration::from_secs(30));
    let mut agent = AgentServiceClient::connect(format!("http://127.0.0.1:{}", k.agent.port))
        .await
        .expect("agent gRPC");
    let stop = ControlKernelRequest {
        kernel_id: id.clone(),
        action: KernelAction::Stop as i32,
        ..Default::default()
    };
    let err = agent.control_kernel(stop).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("500"), "{err:?}");
    assert_eq!(k.inspect(&id)["state"], "RUNNING");
    vast.calm();
    vast.down_for(Duration::from_secs(10));
    let out = k.c.cli(&["stop", &id]);
    assert!(!out.status.success(), "stop while the API is down: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");
    assert_eq!(k.inspect(&id)["state"], "RUNNING");
    // Back: the kernel is still there and can be stopped.
    wait_for(
        Duration::from_secs(40),
        "stop once the API is back",
        || async { k.c.cli(&["stop", &id]).status.success().then_some(()) },
    )
    .await;
    k.wait_state(&id, "FAILED", T).await;
    assert!(vast.live_instances().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_filters_take_only_the_apis_fields_and_operators() {
    let c = common::Cluster::start("vastfilters").await;
    let out = c.cli(&[
        "config",
        "set",
        "vast_api/offer_filters/gpu_nam/eq",
        "RTX 3090",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vast_api/offer_filters/gpu_nam/eq"), "{err}");
    assert!(
        err.contains("verify your offer_filters are supported"),
        "{err}"
    );
    let out = c.cli(&[
        "config",
        "set",
        "vast_api/offer_filters/dph_total/about",
        "1",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`about` is not an operator"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vast.toml");
    std::fs::write(
        &file,
        format!(
            "[vast_api]\napi_key = \"{KEY}\"\nmax_instances = 2\n[vast_api.offer_filters]\ngpu_name = {{in = [\"RTX 3090\", \"RTX 4090\"]}}\nnum_gpus = {{gte = 1}}\n"
        ),
    )
    .unwrap();
    c.cli_ok(&["config", "put", file.to_str().unwrap()]);
    let shown = c.cli_ok(&["config", "get"]);
    assert!(
        shown.contains("RTX 4090") && shown.contains("max_instances = 2"),
        "{shown}"
    );
    assert!(!shown.contains(KEY) && shown.contains("***"), "{shown}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[vast_api.offer_filters]\ngpu_ram = {about = 24000}\n",
    )
    .unwrap();
    let out = c.cli(&["config", "put", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gpu_ram"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_over_max_dph_is_never_ordered() {
    // Stand-in for Vast.ai's service (unreachable from here).
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![
        Offer::new(1, "RTX 4090", 0.10),
        Offer::new(2, "RTX 4090", 0.30),
    ]));
    // The one offer within max_dph is taken between the search and the order: the next
    // offer costs more than max_dph, so there is none to take.
    vast.snatch_offer(1);
    let k = cluster("vastmaxdph", &vast, &[("vast_api/max_dph", "0.25")]).await;
    let out = run(&k, &[TEST_IMAGE, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("FAILED: no offer could be provisioned (offer 1: no_such_ask)"),
        "{err}"
    );
    assert_eq!(
        vast.rent_attempts(2),
        0,
        "the offer over max_dph was ordered"
    );
    // Now no offer is within max_dph: refused at once naming the setting, nothing ordered.
    let out = run(&k, &[TEST_IMAGE, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("vast_api/max_dph"),
        "{err}"
    );
    assert_eq!(vast.rent_attempts(2), 0);
    assert!(vast.instances().is_empty(), "{:?}", vast.instances());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_code_is_only_read_from_the_instances_output_never_invented() {
    // Stand-in for Vast.ai's service (unreachable from here); instances are real containers.
    let vast = VastStandIn::start(
        VastConfig::new(KEY)
            .release_on_destroy(true)
            .offers(vec![Offer::new(1, "T4", 0.1)]),
    );
    let k = cluster("vastexit", &vast, &[]).await;
    // The image's own command (busybox `sh` without input: it ends at once) prints no exit
    // marker: FAILED, no exit code, and the reason says it could not be learned.
    let own = run_ok(&k, &[TEST_IMAGE]);
    let info = k.wait_state(&own, "FAILED", T).await;
    assert!(info["exit_code"].is_null(), "{info}");
    assert!(
        info["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("exit code could not be learned"),
        "{info}"
    );
    let first = instance_of(&info);
    wait_for(T, "the first instance destroyed", || async {
        vast.destroyed().contains(&first).then_some(())
    })
    .await;

    // The output of an ended instance is not ready to read (its result URL answers 404 for
    // longer than the agent waits): the kernel stays as it is and the instance is kept (it
    // holds the only copy) until a later poll reads it.
    vast.set_logs_not_ready_gets(1000);
    let id = run_ok(&k, &[TEST_IMAGE, "sh", "-c", "sleep 1; exit 0"]);
    let info = k.wait_state(&id, "RUNNING", T).await;
    let instance = instance_of(&info);
    let fetched = vast.count("GET", "/logs/");
    wait_for(T, "one whole wait for the output given up", || async {
        (vast.count("GET", "/logs/") >= fetched + 30).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = k.inspect(&id);
    assert_eq!(info["state"], "RUNNING", "{info}");
    assert!(!vast.destroyed().contains(&instance));
    vast.set_logs_not_ready_gets(2);
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    wait_for(T, "the instance destroyed once read", || async {
        vast.destroyed().contains(&instance).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vastai_kernels_go_only_to_an_agent_with_the_runtime_which_reports_its_load() {
    // Stand-in for Vast.ai's service (unreachable from here).
    let vast = VastStandIn::start(
        VastConfig::new(KEY).offers(vec![Offer::new(1, "L4", 0.4), Offer::new(2, "L4", 0.5)]),
    );
    let url = vast.url();
    // No agent has a key: none offers vastai, and a vastai kernel is refused naming it.
    let k = KernelCluster::start_with(
        "vastplace",
        &[
            ("vast_api/api_url", url.as_str()),
            ("vast_api/poll_interval", "300ms"),
        ],
    )
    .await;
    let out = run(&k, &[TEST_IMAGE, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has the `vastai` runtime"),
        "{err}"
    );
    // a2 has a key of its own (a per-agent override): it offers vastai with its capacity.
    for (key, value) in [("vast_api/api_key", KEY), ("vast_api/max_instances", "2")] {
        k.c.cli_ok(&["config", "--agent", "a2", "set", key, value]);
    }
    let _a2 = k.c.agent("a2");
    let offered = wait_for(T, "a2 offers vastai", || async { vastai_of(&k, "a2") }).await;
    assert_eq!(offered["capacity"], 2, "{offered}");
    assert_eq!(offered["in_use"], 0, "{offered}");
    assert!(vastai_of(&k, "a1").is_none(), "{:?}", k.c.node("a1"));
    let id = run_ok(&k, &[TEST_IMAGE, "sleep", "600"]);
    let info = k.wait_state(&id, "RUNNING", T).await;
    assert_eq!(info["agent_id"], "a2", "{info}");
    wait_for(T, "one of a2's two vastai instances in use", || async {
        let v = vastai_of(&k, "a2")?;
        (v["in_use"] == 1 && v["capacity"] == 2).then_some(())
    })
    .await;
    k.c.cli_ok(&["rm", "-f", &id]);
    wait_for(T, "no instance left", || async {
        vast.live_instances().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_reach_the_image_login_and_nowhere_else() {
    // A real private registry holding the kernel's image; the stand-in for Vast.ai's service
    // (unreachable from here) logs in with image_login and pulls it, as a host does.
    let registry = Registry::start("vastuser", "vast-reg-pw-83c1e6").await;
    let image = registry.push(TEST_IMAGE, "vastreg/busybox:latest", false);
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![Offer::new(1, "A10", 0.3)]));
    let entry = format!(
        "{{url = \"{}\", username = \"{}\", password = \"{}\"}}",
        registry.addr(),
        registry.user,
        registry.password
    );
    let k = cluster(
        "vastregistry",
        &vast,
        &[("docker/registries/private", entry.as_str())],
    )
    .await;
    let mut events = k.agent_events().await;
    let id = run_ok(&k, &[&image, "sh", "-c", "echo pulled; exit 0"]);
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    let instance = instance_of(&info);
    let login = vast.instance(instance).and_then(|i| i.image_login);
    assert_eq!(
        login,
        Some(format!(
            "-u {} -p {} {}",
            registry.user,
            registry.password,
            registry.addr()
        ))
    );
    assert!(registry.pulls("vastreg/busybox") >= 1, "{}", registry.log());
    let events = events_of(&mut events, &id).await;
    for (what, text) in [
        ("agent log", k.agent.log()),
        ("manager log", k.manager.log()),
        ("inspect", info.to_string()),
        ("events", format!("{events:?}")),
        ("config get", k.c.cli_ok(&["config", "get"])),
    ] {
        assert!(
            !text.contains(&registry.password),
            "the registry password is in the {what}"
        );
    }
}
