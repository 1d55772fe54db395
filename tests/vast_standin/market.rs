//! Keys, offer search and taken offers, as the documented API answers them.

use super::*;

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
