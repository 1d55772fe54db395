//! The test harness's stand-ins, exercised over real HTTP the way the official Vast.ai CLI
//! talks to the service. Vast.ai cannot be reached from here, so `common::vast` is a local
//! stand-in for its API (each instance a real local Docker container); `common::s3` is a
//! real S3-compatible server (moto). These tests pin down that the stand-in behaves like
//! the documented API, so the Vast.ai runtime's tests can rely on it.
mod common;

use std::time::{Duration, Instant};

use common::s3::S3Server;
use common::vast::{Offer, Provision, VastClient as Cli, VastConfig, VastStandIn};
use common::{wait_for, TEST_IMAGE};
use reqwest::Method;
use serde_json::{json, Value};

const KEY: &str = "test-key-0123456789abcdef";

/// The CLI's default search filters plus `extra`, ordered by price.
fn cheapest_query(extra: Value) -> Value {
    let mut q = json!({
        "verified": {"eq": true}, "external": {"eq": false},
        "rentable": {"eq": true}, "rented": {"eq": false},
        "order": [["dph_total", "asc"]], "type": "on-demand", "allocated_storage": 5.0,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        q[k] = v.clone();
    }
    q
}

fn market() -> Vec<Offer> {
    vec![
        Offer::new(101, "RTX 4090", 0.40),
        Offer::new(102, "RTX 4090", 0.30).set("verified", false),
        Offer::new(103, "RTX 4090", 0.35),
        Offer::new(104, "RTX 3090", 0.20),
        Offer::new(105, "RTX 4090", 0.32).set("rented", true),
        Offer::new(106, "RTX 4090", 0.33).set("external", true),
        Offer::new(107, "RTX 4090", 0.31).set("reliability", 0.90),
        Offer::new(108, "RTX 4090", 0.60),
    ]
}

/// An instance row's `status_msg`.
fn msg(row: &Value) -> &str {
    row["status_msg"].as_str().unwrap_or_default()
}

fn ids(offers: &Value) -> Vec<u64> {
    offers["offers"]
        .as_array()
        .expect("offers list")
        .iter()
        .map(|o| o["id"].as_u64().expect("offer id"))
        .collect()
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_key_is_refused_with_401() {
    let vast = VastStandIn::start(VastConfig::new(KEY).older_answers());
    let (status, user) = Cli::new(&vast)
        .call(Method::GET, "/users/current", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(user["api_key"], KEY);
    let (status, body) = Cli::with_key(&vast, "wrong")
        .call(Method::GET, "/users/current", None)
        .await;
    assert_eq!(status, 401, "{body}");
    let r = reqwest::get(format!("{}/bundles/", vast.api_url()))
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    // A rotated key: the old one stops working.
    vast.set_api_key("rotated");
    let (status, _) = Cli::with_key(&vast, KEY)
        .call(Method::POST, "/bundles/", Some(json!({})))
        .await;
    assert_eq!(status, 401);
    let (status, _) = Cli::with_key(&vast, "rotated")
        .call(Method::POST, "/bundles/", Some(json!({})))
        .await;
    assert_eq!(status, 200);
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_returns_matching_offers_cheapest_first_under_the_cli_defaults() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(market()));
    let cli = Cli::new(&vast);
    // Values as the CLI's parse_query sends them: strings, also for numbers.
    let q = cheapest_query(json!({
        "gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": "1"},
        "reliability": {"gte": "0.95"}, "dph_total": {"lte": "0.5"},
    }));
    let r = cli
        .send(Method::POST, "/bundles/", Some(q))
        .await
        .expect("search");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.expect("JSON");
    // 102 unverified, 105 rented, 106 external, 107 unreliable, 108 over max price.
    assert_eq!(ids(&body), vec![103, 101]);
    assert_eq!(body["offers"][0]["dph_total"], 0.35);

    let q = cheapest_query(json!({"gpu_name": {"in": ["RTX 3090", "RTX 4090"]}, "limit": 2}));
    let (_, body) = cli.search(q).await;
    assert_eq!(ids(&body), vec![104, 107]);
    let q = json!({"gpu_name": {"notin": ["RTX 4090"]}, "order": [["dph_total", "desc"]]});
    let (_, body) = cli.search(q).await;
    assert_eq!(ids(&body), vec![104]);
    // Without the default filters every offer is listed, by score (dlperf per $) first.
    let (_, body) = cli.search(json!({})).await;
    assert_eq!(ids(&body), vec![104, 102, 107, 105, 106, 103, 101, 108]);

    for bad in [
        json!({"gpu_name": {"like": "RTX"}}),
        json!({"no_such_field": {"eq": 1}}),
        json!({"gpu_name": {"in": "RTX 4090"}}),
        json!({"gpu_name": "RTX 4090"}),
        json!({"order": [["dph_total", "up"]]}),
    ] {
        let (status, body) = cli.search(bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert_eq!(body["success"], false);
    }
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_offer_answers_no_such_ask() {
    let vast = VastStandIn::start(VastConfig::new(KEY).older_answers().offers(market()));
    let cli = Cli::new(&vast);
    let (status, body) = cli.rent(103, json!({}), &["sleep", "300"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert!(body["new_contract"].as_u64().is_some());

    let (status, body) = cli.rent(103, json!({}), &["true"]).await;
    assert_eq!(
        (status, &body["error"]),
        (410, &json!("no_such_ask")),
        "{body}"
    );
    assert_eq!(body["success"], false);
    let (status, body) = cli.rent(999, json!({}), &["true"]).await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("no_such_ask")),
        "{body}"
    );

    // Taken by someone else between the search and the rental.
    vast.snatch_offer(101);
    let (_, found) = cli.search(cheapest_query(json!({}))).await;
    assert!(ids(&found).contains(&101));
    let (status, body) = cli.rent(101, json!({}), &["true"]).await;
    assert_eq!(
        (status, &body["error"]),
        (410, &json!("no_such_ask")),
        "{body}"
    );
    let (_, found) = cli.search(cheapest_query(json!({}))).await;
    assert!(!ids(&found).contains(&101) && !ids(&found).contains(&103));

    assert_eq!((vast.rentals(103), vast.rent_attempts(103)), (1, 2));
    assert_eq!((vast.rentals(101), vast.rent_attempts(101)), (0, 1));
    assert_eq!(vast.rented_offers(), vec![103]);
    assert_eq!(vast.count("PUT", "/api/v0/asks/"), 4);
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rented_instance_is_a_real_container_with_the_env_and_args_and_its_exit_reads_exited() {
    let vast = VastStandIn::start(
        VastConfig::new(KEY)
            .offers(market())
            .provision_delay(Duration::from_secs(1)),
    );
    let cli = Cli::new(&vast);
    let parents = r#"{"4b1c0e2a-parent":"train-model"}"#;
    let env = json!({"TASK_BOOTSTRAP": "true", "TASK_PARENTS": parents, "-p 8080:8080": "1"});
    let script = "echo out-$TASK_BOOTSTRAP; echo err-line >&2; sleep 3; exit 3";
    let (status, body) = cli.rent(103, env, &["sh", "-c", script]).await;
    assert_eq!(status, 200, "{body}");
    let id = body["new_contract"].as_u64().expect("instance id");

    let row = cli.instance(id).await;
    assert_eq!(row["actual_status"], Value::Null, "provisioning: {row}");
    assert_eq!(row["intended_status"], "running");
    assert_eq!(
        (row["gpu_name"].as_str(), row["dph_total"].as_f64()),
        (Some("RTX 4090"), Some(0.35))
    );
    assert_eq!(row["label"], "deckhand-test");
    assert!(row["extra_env"]
        .as_array()
        .expect("extra_env")
        .contains(&json!(["TASK_PARENTS", parents])));

    cli.wait_status(id, "running", Duration::from_secs(15))
        .await;
    let env = vast.container_env(id);
    assert_eq!(env.get("TASK_PARENTS").map(String::as_str), Some(parents));
    assert_eq!(env.get("TASK_BOOTSTRAP").map(String::as_str), Some("true"));
    assert!(!env.contains_key("-p 8080:8080"));
    assert_eq!(vast.container_command(id), vec!["sh", "-c", script]);
    // The listing as the CLI reads it today (the v0 one answers 410).
    let list = cli.list_v1(&[]).await;
    assert_eq!(list["instances"][0]["id"], id);

    let row = cli.wait_status(id, "exited", Duration::from_secs(15)).await;
    assert_eq!(row["intended_status"], "running");
    assert_eq!(vast.container_exit_code(id), Some(3));
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_after_404s_and_destroy_removes_the_container() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(market()).logs_not_ready_gets(2));
    let cli = Cli::new(&vast);
    let (_, body) = cli
        .rent(
            101,
            json!({}),
            &[
                "sh",
                "-c",
                "for i in 1 2 3; do echo line-$i; done; sleep 1; echo oops >&2; sleep 300",
            ],
        )
        .await;
    let id = body["new_contract"].as_u64().expect("instance id");
    cli.wait_status(id, "running", Duration::from_secs(15))
        .await;
    // stdout and stderr are interleaved by Docker's timestamps: the script leaves a second
    // between them, so the order is certain.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let url = cli.request_logs(id, json!({"tail": "1000"})).await;
    // The result URL needs no key, and is not there at first (the host is uploading).
    assert_eq!(cli.fetch(&url).await.0, 404);
    assert_eq!(cli.fetch(&url).await.0, 404);
    let expected = "line-1\nline-2\nline-3\noops\n".to_string();
    assert_eq!(cli.fetch(&url).await, (200, expected));
    vast.set_logs_not_ready_gets(0);
    let url = cli.request_logs(id, json!({"tail": "2"})).await;
    assert_eq!(cli.fetch(&url).await, (200, "line-3\noops\n".to_string()));

    let container = vast.container_of(id).expect("container");
    let (status, body) = cli.destroy(id).await;
    assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");
    assert_eq!(cli.instance(id).await, Value::Null);
    assert!(
        common::docker_inspect(&container, "{{.Id}}").is_empty(),
        "container still there"
    );
    assert_eq!(vast.destroyed(), vec![id]);
    let list = cli.list_v1(&[]).await;
    assert_eq!(list["instances"], json!([]));
    assert_eq!(cli.destroy(id).await.0, 404);
    let (status, _) = cli
        .call(Method::PUT, &format!("/instances/request_logs/{id}/"), None)
        .await;
    assert_eq!(status, 404);
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_can_stall_or_fail() {
    let offers = vec![
        Offer::new(1, "RTX 4090", 0.3).provision(Provision::Never),
        Offer::new(2, "RTX 4090", 0.3)
            .provision(Provision::StuckLoading(Duration::from_millis(100))),
        Offer::new(3, "RTX 4090", 0.3).provision(Provision::Fails(
            Duration::from_millis(100),
            "Error response from daemon: OCI runtime create failed".into(),
        )),
        Offer::new(4, "RTX 4090", 0.3),
    ];
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(offers));
    let cli = Cli::new(&vast);
    let mut ids = Vec::new();
    for offer in 1..=3 {
        let (_, body) = cli.rent(offer, json!({}), &["sleep", "300"]).await;
        ids.push(body["new_contract"].as_u64().expect("instance id"));
    }
    let body = json!({"client_id": "me", "image": "deckhand-test/absent:nope", "disk": 10, "runtype": "args", "args": ["true"]});
    let (_, body) = cli.call(Method::PUT, "/asks/4/", Some(body)).await;
    ids.push(body["new_contract"].as_u64().expect("instance id"));

    cli.wait_status(ids[1], "loading", Duration::from_secs(5))
        .await;
    let failed = cli
        .wait_status(ids[2], "created", Duration::from_secs(5))
        .await;
    assert!(msg(&failed).contains("OCI runtime create failed"));
    let missing = cli
        .wait_status(ids[3], "created", Duration::from_secs(60))
        .await;
    assert!(msg(&missing).starts_with("Error"), "{missing}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cli.instance(ids[0]).await["actual_status"], Value::Null);
    assert_eq!(cli.instance(ids[1]).await["actual_status"], "loading");
    assert!(vast.containers().is_empty());
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here; the private
// registry is a real one (Debian's docker-registry with htpasswd auth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_login_pulls_from_a_private_registry_and_ssh_runtypes_run_onstart() {
    let registry = common::Registry::start("vastuser", "vastpass").await;
    let image = registry.push(TEST_IMAGE, "vast/private:1", false);
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(market()));
    let cli = Cli::new(&vast);
    let rent = |offer: u64, login: String| {
        let body = json!({"client_id": "me", "image": image, "image_login": login,
            "disk": 10, "runtype": "args", "args": ["sleep", "300"]});
        let cli = &cli;
        async move {
            cli.call(Method::PUT, &format!("/asks/{offer}/"), Some(body))
                .await
        }
    };
    let addr = registry.addr();
    let (_, good) = rent(101, format!("-u vastuser -p vastpass {addr}")).await;
    let (_, bad) = rent(103, format!("-u vastuser -p wrong {addr}")).await;
    let good = good["new_contract"].as_u64().expect("instance id");
    let bad = bad["new_contract"].as_u64().expect("instance id");
    cli.wait_status(good, "running", Duration::from_secs(30))
        .await;
    let row = cli
        .wait_status(bad, "created", Duration::from_secs(30))
        .await;
    assert!(msg(&row).starts_with("Error"), "{row}");

    // ssh/jupyter runtypes: Vast's entrypoint runs onstart and keeps the machine up.
    let body = json!({"client_id": "me", "image": TEST_IMAGE, "disk": 10, "runtype": "ssh_proxy",
        "onstart": "echo onstart-ran-$X", "env": {"X": "1"}});
    let (_, body) = cli.call(Method::PUT, "/asks/104/", Some(body)).await;
    let ssh = body["new_contract"].as_u64().expect("instance id");
    cli.wait_status(ssh, "running", Duration::from_secs(15))
        .await;
    assert_eq!(vast.container_command(ssh)[..2], ["/bin/sh", "-c"]);
    vast.set_logs_not_ready_gets(0);
    wait_for(Duration::from_secs(5), "onstart output", || async {
        let url = cli.request_logs(ssh, json!({})).await;
        (cli.fetch(&url).await.1 == "onstart-ran-1\n").then_some(())
    })
    .await;
    assert_eq!(cli.instance(ssh).await["actual_status"], "running");
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preexisting_labelled_instance_is_listed_stopped_and_destroyed() {
    let ns = common::namespace("vast");
    let vast = VastStandIn::start(VastConfig::new(KEY).namespace(&ns));
    let old = vast.preexisting(
        "deckhand/old-agent/k1",
        TEST_IMAGE,
        &["sleep", "300"],
        &[("A", "1")],
    );
    let other = vast.preexisting("someone-else", TEST_IMAGE, &["sleep", "300"], &[]);
    assert_eq!(
        common::containers(&ns).len(),
        2,
        "namespace label on the containers"
    );
    let cli = Cli::new(&vast);

    // The v1 listing, as the CLI pages through it.
    let filters = json!({"label": {"in": ["deckhand/old-agent/k1"]}}).to_string();
    let order = json!([{"col": "id", "dir": "asc"}]).to_string();
    let params = [
        ("select_filters", &*filters),
        ("order_by", &*order),
        ("limit", "25"),
    ];
    let body = cli.list_v1(&params).await;
    assert_eq!(body["total_instances"], 1);
    assert_eq!(body["instances"][0]["id"], old);
    assert_eq!(body["instances"][0]["actual_status"], "running");
    assert_eq!(body["next_token"], Value::Null);
    assert_eq!(body["label_counts"]["someone-else"], 1);
    let page = cli.list_v1(&[("limit", "1")]).await;
    assert_eq!(
        (
            page["instances"][0]["id"].as_u64(),
            page["next_token"].as_str()
        ),
        (Some(old), Some("1"))
    );

    assert_eq!(cli.change(other, json!({"label": "renamed"})).await.0, 200);
    assert_eq!(cli.instance(other).await["label"], "renamed");
    assert_eq!(cli.change(other, json!({"state": "stopped"})).await.0, 200);
    let row = cli
        .wait_status(other, "stopped", Duration::from_secs(20))
        .await;
    assert_eq!(row["intended_status"], "stopped");

    assert_eq!(cli.destroy(old).await.0, 200);
    assert_eq!(vast.live_instances(), vec![other]);
    assert_eq!(common::containers(&ns).len(), 1);
    drop(vast);
    assert!(
        common::containers(&ns).is_empty(),
        "the guard removes its containers"
    );
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_answers_plain_text_without_retry_after() {
    let vast = VastStandIn::start(VastConfig::new(KEY).older_answers().offers(market()));
    let cli = Cli::new(&vast);
    vast.storm_429(3);
    for _ in 0..3 {
        let r = cli
            .send(Method::POST, "/bundles/", None)
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 429);
        assert!(r.headers().get("retry-after").is_none());
        assert_eq!(r.text().await.expect("text"), "API requests too frequent");
    }
    assert_eq!(cli.call(Method::POST, "/bundles/", None).await.0, 200);

    // The CLI's retry loop (0.15 s, ×1.5 each time) gets through a 1 s storm.
    vast.storm_429_for(Duration::from_secs(1));
    let started = Instant::now();
    let mut wait = Duration::from_millis(150);
    let status = loop {
        let status = cli
            .send(Method::POST, "/bundles/", None)
            .await
            .expect("request")
            .status();
        if status != 429 {
            break status;
        }
        tokio::time::sleep(wait).await;
        wait = wait.mul_f64(1.5);
    };
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_secs(1));

    // Per-endpoint minimum intervals, as documented (off unless enabled).
    vast.set_rate_limit("GET /api/v0/instances", Duration::from_secs(1));
    assert_eq!(cli.call(Method::GET, "/instances/", None).await.0, 200);
    let r = cli
        .send(Method::GET, "/instances/", None)
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 429);
    assert!(r
        .text()
        .await
        .expect("text")
        .starts_with("API requests too frequent: endpoint threshold="));
    assert_eq!(
        cli.call(Method::POST, "/bundles/", None).await.0,
        200,
        "other endpoints unaffected"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cli.call(Method::GET, "/instances/", None).await.0, 200);
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_goes_down_and_comes_back_on_the_same_port() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(market()));
    let cli = Cli::new(&vast);
    // A pooled keep-alive connection exists before the outage.
    assert_eq!(cli.call(Method::GET, "/users/current", None).await.0, 200);

    vast.down_for(Duration::from_secs(2));
    let err = cli
        .send(Method::GET, "/users/current", None)
        .await
        .expect_err("down");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    let err = Cli::new(&vast)
        .send(Method::GET, "/users/current", None)
        .await
        .expect_err("down");
    assert!(err.is_connect(), "refused: {err:?}");
    wait_for(Duration::from_secs(10), "the API back", || async {
        let r = cli.send(Method::GET, "/users/current", None).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    vast.hang();
    let timeout = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let err = timeout
        .get(format!("{}/users/current", vast.api_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .expect_err("hangs");
    assert!(err.is_timeout(), "{err:?}");
    vast.up();
    assert_eq!(
        Cli::new(&vast)
            .call(Method::GET, "/users/current", None)
            .await
            .0,
        200
    );
}

// No stand-in here: the Vast.ai runtime ships logs to this real S3-compatible server
// (moto), started for this test; the Vast.ai stand-in replaces only Vast.ai's service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_server_stores_objects_and_refuses_wrong_credentials() {
    let s3 = S3Server::start().await;
    s3.create_bucket("deckhand-logs");
    s3.put("deckhand-logs", "kernels/k1/log.txt", "hello\n")
        .await;
    assert_eq!(
        s3.get_string("deckhand-logs", "kernels/k1/log.txt")
            .await
            .as_deref(),
        Some("hello\n")
    );
    assert_eq!(s3.get("deckhand-logs", "kernels/k2/log.txt").await, None);
    assert_eq!(
        s3.list("deckhand-logs", "kernels").await,
        vec!["kernels/k1/log.txt"]
    );

    use object_store::ObjectStoreExt;
    let path = object_store::path::Path::from("kernels/k1/log.txt");
    let wrong = s3.store_with("deckhand-logs", &s3.access_key, "not-the-secret");
    assert!(wrong.get(&path).await.is_err(), "a wrong secret is refused");
    let unknown = s3.store_with("deckhand-logs", "AKIAUNKNOWN", &s3.secret_key);
    assert!(
        unknown.get(&path).await.is_err(),
        "an unknown key is refused"
    );
}
