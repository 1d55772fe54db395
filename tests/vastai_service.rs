//! The Vast.ai runtime against the service as it answers today: the real `deckhand` agent,
//! manager and CLI against a real etcd, with Vast.ai's service played by the local stand-in
//! of its HTTP API (`tests/common/vast/`, answering as `shared/brief/reference/vastai-api.md`
//! says the service does now: Vast.ai itself cannot be reached from here), each rented
//! instance a real local Docker container. Money is at stake in each of these: an instance
//! rented twice, one never destroyed, a price that is not what is billed.

mod common;

use std::time::Duration;

use common::vast::e2e::{cluster, events_of, instance_of, run, run_ok, KEY, T};
use common::vast::{DestroyedAnswer, Offer, VastConfig, VastStandIn};
use common::{wait_for, TEST_IMAGE};
use deckhand::wire::pb::KernelState;

/// Requests to the v0 listing, which answers 410 today.
fn v0_listings(vast: &VastStandIn) -> usize {
    vast.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.trim_end_matches('/') == "/api/v0/instances")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_instances_with_the_kernels_on_page_3_are_followed_re_adopted_and_leaks_destroyed() {
    let vast = VastStandIn::start(
        VastConfig::new(KEY)
            .release_on_destroy(true)
            .offers(vec![Offer::new(5, "L4", 0.4), Offer::new(6, "L4", 0.5)]),
    );
    // 57 instances of the account's other users come first (ids ascending, 25 a page).
    let others = vast.stopped_instances("someone-else", 57);
    let mut k = cluster("vastpages", &vast, &[("vast_api/max_instances", "2")]).await;
    let keep = run_ok(&k, &[TEST_IMAGE, "sleep", "600"]);
    let ends = run_ok(&k, &[TEST_IMAGE, "sh", "-c", "sleep 5; exit 7"]);
    let keep_instance = instance_of(&k.wait_state(&keep, "RUNNING", T).await);
    assert!(keep_instance > *others.last().expect("others"));
    let leaked_label = format!("deckhand:{}:a1:{}:tok789", k.c.ns, uuid::Uuid::new_v4());
    let leaked = vast.preexisting(&leaked_label, TEST_IMAGE, &["sleep", "600"], &[]);
    // 60 instances: the kernels' and the leak are on page 3.
    assert_eq!(vast.live_instances().len(), 60);

    // Polling reads page 3: the kernel that exits is seen to, with its exit code.
    let info = k.wait_state(&ends, "FAILED", T).await;
    assert_eq!(info["exit_code"], 7, "{info}");
    wait_for(T, "the leak on page 3 destroyed", || async {
        vast.destroyed().contains(&leaked).then_some(())
    })
    .await;
    // Destroyed by start-up recovery (whose listing of every page may end after the leak
    // appeared) or by the poll loop, saying so either way.
    let log = k.agent.log();
    assert!(
        log.contains("no live kernel holds") || log.contains("no kernel record knows"),
        "{log}"
    );

    // After kill -9 and a restart, the instance on page 3 is re-adopted, not taken for a
    // leak nor for gone.
    k.agent.kill9();
    k.agent = k.c.agent_on("a1", k.scratch());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let info = k.wait_state(&keep, "RUNNING", T).await;
    assert_eq!(
        instance_of(&info),
        keep_instance,
        "re-adopted, same instance"
    );
    assert!(!vast.destroyed().contains(&keep_instance));
    for id in &others {
        assert!(
            !vast.destroyed().contains(id),
            "someone else's instance {id} destroyed"
        );
    }
    // Every page was read, through next_token; the v0 listing was never asked.
    let paged = vast
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/v1/instances") && r.query.contains("after_token"))
        .count();
    assert!(paged >= 2, "no page after the first was read");
    assert_eq!(v0_listings(&vast), 0);
    k.c.cli_ok(&["rm", "-f", &keep]);
    wait_for(T, "the kernel's instance destroyed", || async {
        vast.destroyed().contains(&keep_instance).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_answered_410_or_404_is_an_error_and_no_kernel_is_marked_gone() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![Offer::new(1, "T4", 0.1)]));
    let k = cluster("vast410", &vast, &[]).await;
    let id = run_ok(&k, &[TEST_IMAGE, "sleep", "600"]);
    k.wait_state(&id, "RUNNING", T).await;

    // The v1 listing retired: an error naming the endpoint, never "no instances".
    vast.retire("GET /api/v1/instances", true);
    wait_for(T, "the 410 reported", || async {
        let log = k.agent.log();
        (log.contains("GET /api/v1/instances/") && log.contains("410 deprecated_endpoint"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(k.inspect(&id)["state"], "RUNNING");
    vast.retire("GET /api/v1/instances", false);

    // A key the service stops taking: lists answer 404 Invalid user key. That is a refused
    // key, not an empty account: the kernel keeps its state and instance.
    vast.set_api_key("rotated-elsewhere");
    wait_for(T, "the refused key reported", || async {
        let log = k.agent.log();
        (log.contains("refused the key") && log.contains("404 Not Found Invalid user key"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = k.inspect(&id);
    assert_eq!(info["state"], "RUNNING", "{info}");
    assert!(vast.destroyed().is_empty());
    assert!(!k.agent.log().contains("is gone"), "{}", k.agent.log());
    // The key works again: the agent says so and the kernel can be stopped.
    vast.set_api_key(KEY);
    wait_for(T, "the key accepted again", || async {
        k.agent
            .log()
            .contains("Vast.ai API key accepted")
            .then_some(())
    })
    .await;
    wait_for(T, "a stop once the key works", || async {
        k.c.cli(&["stop", &id]).status.success().then_some(())
    })
    .await;
    k.wait_state(&id, "FAILED", T).await;
    assert!(vast.live_instances().is_empty());
    assert!(!k.agent.log().contains(KEY), "the key is in the agent log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_offer_answered_404_invalid_args_moves_to_the_next_naming_both() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![
        Offer::new(41, "RTX 4090", 0.10),
        Offer::new(42, "RTX 4090", 0.20),
    ]));
    vast.snatch_offer(41);
    let k = cluster("vasttaken", &vast, &[]).await;
    let mut events = k.agent_events().await;
    let id = run_ok(&k, &[TEST_IMAGE, "true"]);
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["runtime_info"]["offer_id"], "42", "{info}");
    let events = events_of(&mut events, &id).await;
    assert!(
        events.iter().any(|e| e.state() == KernelState::Preparing
            && e.reason
                .contains("offer 41 was taken meanwhile (no_such_ask")
            && e.reason.contains("taking the next offer, 42")),
        "{events:?}"
    );
    assert_eq!((vast.rent_attempts(41), vast.rentals(41)), (1, 0));
    assert_eq!(vast.rentals(42), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_rents_and_loses_its_reply_is_adopted_never_rented_twice() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![
        Offer::new(51, "A100", 1.0),
        Offer::new(52, "A100", 1.1),
    ]));
    let k = cluster("vastlost", &vast, &[("vast_api/max_instances", "2")]).await;
    let mut events = k.agent_events().await;
    // The service rents, then the reply is lost behind a 502.
    vast.lose_create_replies(1);
    let id = run_ok(&k, &[TEST_IMAGE, "sh", "-c", "echo once; exit 0"]);
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    assert_eq!(
        vast.count("PUT", "/api/v0/asks/"),
        1,
        "the create was sent again: {:?}\n{}",
        vast.requests()
            .iter()
            .map(|r| format!("{} {} {}", r.method, r.path, r.status))
            .collect::<Vec<_>>(),
        k.agent.log()
    );
    assert_eq!(vast.instances().len(), 1, "exactly one instance was rented");
    assert_eq!(vast.rentals(51) + vast.rentals(52), 1);
    let events = events_of(&mut events, &id).await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.contains("carries this kernel's label")),
        "{events:?}"
    );
    // The label was looked up before anything was ordered again.
    assert!(vast
        .requests()
        .iter()
        .any(|r| r.path.starts_with("/api/v1/instances") && r.query.contains("label")));
    wait_for(T, "no instance left", || async {
        vast.live_instances().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_prices_the_kernels_disk_so_max_dph_compares_what_is_billed() {
    // At 100 GB, offer 61's storage ($7.20/GB/month = $0.01/GB/h) adds $1.00/h: $1.20/h
    // billed, over vast_api/max_dph; offer 62 is $0.90/h whatever the disk.
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![
        Offer::new(61, "H100", 0.20).set("storage_cost", 7.2),
        Offer::new(62, "H100", 0.90),
    ]));
    let k = cluster("vastdisk", &vast, &[("vast_api/max_dph", "1.0")]).await;
    let id = run_ok(&k, &["--storage-opt", "size=100GB", TEST_IMAGE, "true"]);
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["runtime_info"]["offer_id"], "62", "{info}");
    assert_eq!(
        vast.rent_attempts(61),
        0,
        "an offer over max_dph as billed was ordered"
    );
    let search = vast
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/api/v0/bundles"))
        .expect("a search");
    // 100 GB as Docker reads it (GiB), in the decimal GB Vast.ai counts.
    let gb = search.body["allocated_storage"]
        .as_f64()
        .expect("allocated_storage");
    assert!((gb - 107.374182).abs() < 1e-3, "{}", search.body);
    let rented = &vast.instances()[0];
    assert!(
        (rented.disk - gb).abs() < 1e-9,
        "the instance's disk is the priced disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_429s_in_a_row_delay_a_kernel_in_preparing_and_never_fail_it() {
    let vast = VastStandIn::start(
        VastConfig::new(KEY)
            .release_on_destroy(true)
            .offers(vec![Offer::new(71, "T4", 0.1)]),
    );
    let k = cluster("vast429", &vast, &[("vast_api/max_instances", "2")]).await;
    vast.storm_429(20);
    let id = run_ok(&k, &[TEST_IMAGE, "true"]);
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    let limited = vast.requests().iter().filter(|r| r.status == 429).count();
    assert!(limited >= 20, "only {limited} requests met the storm");

    // A storm that outlasts every call's own retries: the kernel waits PREPARING, says why,
    // and runs once the API answers.
    let mut events = k.agent_events().await;
    vast.storm_429_for(Duration::from_secs(25));
    let id = std::thread::scope(|s| {
        let run = s.spawn(|| run(&k, &[TEST_IMAGE, "true"]));
        std::thread::sleep(Duration::from_secs(20));
        let ps = k.c.cli_ok(&["ps", "--json"]);
        assert!(
            ps.contains("PREPARING"),
            "not PREPARING during the storm: {ps}"
        );
        let out = run.join().expect("run");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    let info = k.wait_state(&id, "DONE", T).await;
    assert_eq!(info["exit_code"], 0, "{info}");
    let events = events_of(&mut events, &id).await;
    assert!(
        events.iter().any(|e| e.state() == KernelState::Preparing
            && e.reason.contains("trying again while the kernel waits")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e.state() == KernelState::Failed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_its_host_loses_fails_the_kernel_and_every_destroy_is_confirmed() {
    let vast = VastStandIn::start(
        VastConfig::new(KEY)
            .release_on_destroy(true)
            .offers(vec![Offer::new(81, "L4", 0.3)]),
    );
    let k = cluster("vasthost", &vast, &[]).await;
    let id = run_ok(&k, &[TEST_IMAGE, "sleep", "600"]);
    let instance = instance_of(&k.wait_state(&id, "RUNNING", T).await);
    vast.host_reports(instance, "offline", Some("machine 10081 lost its network"));
    let info = k.wait_state(&id, "FAILED", T).await;
    let reason = info["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("went offline after it was running")
            && reason.contains("machine 10081 lost its network"),
        "{info}"
    );
    assert!(vast.destroyed().contains(&instance));
    assert!(vast.live_instances().is_empty());

    // Each documented answer for a destroyed instance confirms the destroy.
    for answer in [
        DestroyedAnswer::NotFound,
        DestroyedAnswer::Unloaded,
        DestroyedAnswer::Terminated,
    ] {
        vast.set_destroyed_answer(answer);
        let id = run_ok(&k, &[TEST_IMAGE, "true"]);
        let info = k.wait_state(&id, "DONE", T).await;
        let instance = instance_of(&info);
        wait_for(T, "the ended instance destroyed", || async {
            vast.destroyed().contains(&instance).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !k.agent
                .log()
                .contains("still listed after it was destroyed"),
            "{answer:?}: {}",
            k.agent.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_input_limits_are_refused_before_any_call_naming_the_field() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![Offer::new(91, "T4", 0.1)]));
    let k = cluster("vastlimits", &vast, &[]).await;
    let long_env = format!("BIG={}", "x".repeat(300));
    let long_cmd = "y".repeat(4200);
    let parents: Vec<String> = (0..12)
        .flat_map(|i| {
            [
                "--parent".to_string(),
                format!("{}=step-{i}", uuid::Uuid::new_v4()),
            ]
        })
        .collect();
    let mut with_parents: Vec<&str> = parents.iter().map(String::as_str).collect();
    with_parents.extend([TEST_IMAGE, "true"]);
    let before = vast.requests().len();
    let searched = |vast: &VastStandIn| vast.count("POST", "/api/v0/bundles");
    let searches = searched(&vast);
    for (args, field) in [
        (
            vec!["-e", long_env.as_str(), TEST_IMAGE, "true"],
            "env[\"BIG\"]",
        ),
        (vec![TEST_IMAGE, "echo", long_cmd.as_str()], "command"),
        (with_parents, "parents"),
    ] {
        let out = run(&k, &args);
        assert!(!out.status.success(), "{field}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{field}: {err}");
        assert!(err.contains("Vast.ai takes"), "{field}: {err}");
        assert!(
            !err.contains(&"x".repeat(300)),
            "the value is echoed: {err}"
        );
    }
    assert_eq!(
        searched(&vast),
        searches,
        "a refused kernel searched offers"
    );
    assert_eq!(vast.count("PUT", "/api/v0/asks"), 0);
    assert!(vast.requests()[before..]
        .iter()
        .all(|r| !r.path.starts_with("/api/v0/asks") && !r.path.starts_with("/api/v0/bundles")));
}
