//! The service's unhappy answers: a wrong key, 429/500 storms and outages, filters, prices, exit codes.

use super::*;

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
