//! Rented instances: real containers, logs, provisioning, image login, leftovers.

use super::*;

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
