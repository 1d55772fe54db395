//! 429 storms, outages, and the S3 server.

use super::*;

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
