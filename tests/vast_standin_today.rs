//! The Vast.ai stand-in answers as the service does today (`shared/brief/reference/
//! vastai-api.md`): a wrong key as a 404, the v0 listing gone (410), the v1 listing paged by
//! 25 with `next_token`, a taken offer as a 404 `invalid_args` whose `msg` says
//! `no_such_ask`, storage priced into `dph_total`, a create whose reply is lost after it
//! rented, and the documented answers for a destroyed instance. Vast.ai itself cannot be
//! reached from here: `common::vast` is a local stand-in of its HTTP API, exercised over real
//! HTTP the way the official CLI talks to the service.
mod common;

use std::time::Duration;

use common::vast::{DestroyedAnswer, Offer, VastClient as Cli, VastConfig, VastStandIn};
use common::TEST_IMAGE;
use reqwest::Method;
use serde_json::{json, Value};

const KEY: &str = "test-key-today-0123456789";

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_key_answers_404_invalid_user_key() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![Offer::new(1, "T4", 0.1)]));
    let wrong = Cli::with_key(&vast, "wrong");
    for (method, path) in [
        (Method::GET, "/users/current/"),
        (Method::POST, "/bundles/"),
        (Method::PUT, "/asks/1/"),
    ] {
        let (status, body) = wrong.call(method.clone(), path, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body, json!({"success": false, "msg": "Invalid user key"}));
    }
    let r = reqwest::get(format!("{}/users/current/", vast.api_url()))
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 404, "no key at all");
    let (status, _) = Cli::new(&vast)
        .call(Method::GET, "/users/current/", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(vast.rent_attempts(1), 0, "nothing rented with a wrong key");
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v0_listing_is_gone_and_the_v1_listing_pages_by_25_with_next_token() {
    let vast = VastStandIn::start(VastConfig::new(KEY));
    let ids = vast.stopped_instances("someone-else", 60);
    let cli = Cli::new(&vast);
    let (status, body) = cli.call(Method::GET, "/instances/?owner=me", None).await;
    assert_eq!(
        (status, body),
        (410, json!({"error": "deprecated_endpoint"}))
    );

    let order = json!([{"col": "id", "dir": "asc"}]).to_string();
    let mut token: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let mut params = vec![
            ("select_filters", "{}"),
            ("order_by", &*order),
            ("limit", "100"),
        ];
        if let Some(t) = &token {
            params.push(("after_token", t));
        }
        let page = cli.list_v1(&params).await;
        pages += 1;
        let rows = page["instances"].as_array().expect("instances").clone();
        assert!(
            rows.len() <= 25,
            "a page holds at most 25 rows: {}",
            rows.len()
        );
        assert_eq!(page["total_instances"], 60);
        seen.extend(rows.iter().map(|r| r["id"].as_u64().expect("id")));
        match &page["next_token"] {
            Value::String(t) => token = Some(t.clone()),
            Value::Null => break,
            other => panic!("next_token {other}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every instance once, ascending");

    // A label filter finds one row among them.
    let filter = json!({"label": {"eq": "someone-else-57"}}).to_string();
    let page = cli.list_v1(&[("select_filters", &*filter)]).await;
    assert_eq!(page["instances"][0]["id"], ids[57]);
    assert_eq!(page["total_instances"], 1);
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_or_unknown_offer_answers_404_invalid_args_with_no_such_ask_in_msg() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![
        Offer::new(7, "RTX 4090", 0.3),
        Offer::new(8, "RTX 4090", 0.4),
    ]));
    let cli = Cli::new(&vast);
    let (status, body) = cli.rent(7, json!({}), &["sleep", "300"]).await;
    assert_eq!(status, 200, "{body}");
    for offer in [7, 999] {
        let (status, body) = cli.rent(offer, json!({}), &["true"]).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"], "invalid_args");
        assert_eq!(
            body["msg"],
            format!("no_such_ask  Instance type by id {offer} is not available.")
        );
    }
    vast.snatch_offer(8);
    let (status, body) = cli.rent(8, json!({}), &["true"]).await;
    assert_eq!((status, &body["error"]), (404, &json!("invalid_args")));
    assert_eq!(vast.rentals(7), 1);
    assert_eq!(vast.rentals(8), 0);
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_reply_is_a_502_after_the_instance_was_rented() {
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![Offer::new(3, "A100", 1.2)]));
    let cli = Cli::new(&vast);
    vast.lose_create_replies(1);
    let r = cli
        .send(
            Method::PUT,
            "/asks/3/",
            Some(json!({"client_id": "me", "image": TEST_IMAGE, "disk": 10.0,
                        "label": "lost-reply", "runtype": "args", "args": ["sleep", "300"]})),
        )
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 502);
    assert!(r.text().await.expect("text").contains("502 Bad Gateway"));
    assert_eq!(vast.rentals(3), 1, "the rental happened");
    let filter = json!({"label": {"eq": "lost-reply"}}).to_string();
    let page = cli.list_v1(&[("select_filters", &*filter)]).await;
    assert_eq!(page["total_instances"], 1, "{page}");
    assert_eq!(vast.live_instances().len(), 1);
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_storage_is_priced_into_dph_total_and_a_rental_at_its_disk() {
    // $7.20/GB/month is $0.01/GB/h: 100 GB adds $1.00/h.
    let vast = VastStandIn::start(VastConfig::new(KEY).offers(vec![
        Offer::new(1, "H100", 2.0).set("storage_cost", 7.2),
        Offer::new(2, "H100", 2.5),
    ]));
    let cli = Cli::new(&vast);
    let price = |body: &Value, id: u64| {
        body["offers"]
            .as_array()
            .and_then(|o| o.iter().find(|r| r["id"] == id))
            .and_then(|r| r["dph_total"].as_f64())
    };
    let (_, body) = cli.search(json!({"allocated_storage": 100.0})).await;
    assert!((price(&body, 1).unwrap() - 3.0).abs() < 1e-9, "{body}");
    assert!((price(&body, 2).unwrap() - 2.5).abs() < 1e-9, "{body}");
    // The CLI's default is 5 GB.
    let (_, body) = cli.search(json!({})).await;
    assert!((price(&body, 1).unwrap() - 2.05).abs() < 1e-9, "{body}");
    // A price filter compares the billed price.
    let (_, body) = cli
        .search(json!({"allocated_storage": 100.0, "dph_total": {"lte": 2.8}}))
        .await;
    assert_eq!(price(&body, 1), None, "{body}");
    let (status, body) = cli
        .call(
            Method::PUT,
            "/asks/1/",
            Some(json!({"image": TEST_IMAGE, "disk": 100.0, "runtype": "args", "args": ["true"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["new_contract"].as_u64().expect("new_contract");
    let row = cli.instance(id).await;
    assert!(
        (row["dph_total"].as_f64().unwrap() - 3.0).abs() < 1e-9,
        "{row}"
    );
}

// The stand-in replaces Vast.ai's service, which cannot be reached from here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_instance_reads_as_each_documented_answer_and_a_host_can_lose_one() {
    let vast = VastStandIn::start(
        VastConfig::new(KEY)
            .provision_delay(Duration::from_millis(50))
            .offers((1..=5).map(|i| Offer::new(i, "L4", 0.5)).collect()),
    );
    let cli = Cli::new(&vast);
    let rent = |offer: u64| {
        let cli = &cli;
        async move {
            let (status, body) = cli.rent(offer, json!({}), &["sleep", "300"]).await;
            assert_eq!(status, 200, "{body}");
            body["new_contract"].as_u64().expect("new_contract")
        }
    };
    for (offer, answer) in [
        (1, DestroyedAnswer::Null),
        (2, DestroyedAnswer::NotFound),
        (3, DestroyedAnswer::Unloaded),
        (4, DestroyedAnswer::Terminated),
    ] {
        let id = rent(offer).await;
        vast.set_destroyed_answer(answer);
        assert_eq!(cli.destroy(id).await.0, 200);
        let path = format!("/instances/{id}/?owner=me");
        let (status, body) = cli.call(Method::GET, &path, None).await;
        let row = &body["instances"];
        match answer {
            DestroyedAnswer::Null => assert_eq!((status, row), (200, &Value::Null)),
            DestroyedAnswer::NotFound => assert_eq!(status, 404, "{body}"),
            DestroyedAnswer::Unloaded => assert_eq!(row["cur_state"], "unloaded"),
            DestroyedAnswer::Terminated => {
                assert_eq!(row["intended_status"], "destroyed");
                assert_eq!(row["actual_status"], "offline");
            }
        }
    }
    let id = rent(5).await;
    cli.wait_status(id, "running", Duration::from_secs(30))
        .await;
    vast.host_reports(id, "offline", Some("machine lost its network"));
    let row = cli.instance(id).await;
    assert_eq!(row["actual_status"], "offline");
    assert_eq!(row["status_msg"], "machine lost its network");
}
