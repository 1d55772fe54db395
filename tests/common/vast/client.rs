//! A test-side client that talks to the stand-in the way the official CLI talks to
//! Vast.ai (`Authorization: Bearer <key>`, JSON bodies, `{}` when empty, paths under
//! `/api/v0`), for tests that check what the service itself shows (an instance's status,
//! the listing) besides what deckhand reports.
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::VastStandIn;
use crate::common::{wait_for, TEST_IMAGE};

pub struct VastClient {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT/api/v0`.
    pub base: String,
    pub key: String,
}

impl VastClient {
    /// A client with the stand-in's current key.
    pub fn new(vast: &VastStandIn) -> Self {
        Self::with_key(vast, &vast.api_key())
    }

    pub fn with_key(vast: &VastStandIn, key: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: vast.api_url(),
            key: key.into(),
        }
    }

    /// One request to `base + path` (`path` like `/instances/12/`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.key);
        if method != Method::GET {
            req = req.json(&body.unwrap_or_else(|| json!({})));
        }
        req.send().await
    }

    /// Status and JSON body (Null when the body is not JSON); panics if no answer came.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.send(method, path, body).await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `GET /instances/{id}/?owner=me`: the row, or Null once destroyed.
    pub async fn instance(&self, id: u64) -> Value {
        let path = format!("/instances/{id}/?owner=me");
        let (status, body) = self.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        body["instances"].clone()
    }

    /// Waits for instance `id` to read `actual_status == want`; returns the row.
    pub async fn wait_status(&self, id: u64, want: &str, timeout: Duration) -> Value {
        wait_for(timeout, &format!("instance {id} {want}"), || async {
            let row = self.instance(id).await;
            (row["actual_status"] == want).then_some(row)
        })
        .await
    }

    /// Rents `offer` with `vastai create instance OFFER --image <test image> --env …
    /// --label deckhand-test --args ARGS`'s body.
    pub async fn rent(&self, offer: u64, env: Value, args: &[&str]) -> (u16, Value) {
        let body = json!({
            "client_id": "me", "image": TEST_IMAGE, "env": env, "price": null, "disk": 10.0,
            "label": "deckhand-test", "onstart": null, "image_login": null,
            "runtype": "args", "args": args,
        });
        let path = format!("/asks/{offer}/");
        self.call(Method::PUT, &path, Some(body)).await
    }

    /// `POST /bundles/` with `query`: status and body (`{"offers": [...]}`).
    pub async fn search(&self, query: Value) -> (u16, Value) {
        self.call(Method::POST, "/bundles/", Some(query)).await
    }

    /// `DELETE /instances/{id}/`: status and body.
    pub async fn destroy(&self, id: u64) -> (u16, Value) {
        let path = format!("/instances/{id}/");
        self.call(Method::DELETE, &path, None).await
    }

    /// `PUT /instances/request_logs/{id}/` with `body` (`{"tail": "1000"}`): the result
    /// URL; panics on an error answer.
    pub async fn request_logs(&self, id: u64, body: Value) -> String {
        let path = format!("/instances/request_logs/{id}/");
        let (status, reply) = self.call(Method::PUT, &path, Some(body)).await;
        assert_eq!(status, 200, "request_logs: {reply}");
        reply["result_url"]
            .as_str()
            .expect("result_url")
            .to_string()
    }

    /// A GET of a result URL, without auth as the CLI does it: status and text.
    pub async fn fetch(&self, url: &str) -> (u16, String) {
        let r = self.http.get(url).send().await.expect("GET result URL");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// `PUT /instances/{id}/` with `body` (`{"label": …}`, `{"state": "stopped"}`).
    pub async fn change(&self, id: u64, body: Value) -> (u16, Value) {
        let path = format!("/instances/{id}/");
        self.call(Method::PUT, &path, Some(body)).await
    }

    /// `GET /api/v1/instances/` with query `params` (`select_filters`, `order_by`,
    /// `limit`, `after_token`, JSON values as strings): the reply body.
    pub async fn list_v1(&self, params: &[(&str, &str)]) -> Value {
        let url = self.base.replace("/api/v0", "/api/v1/instances/");
        let r = self.http.get(url).query(params).bearer_auth(&self.key);
        let r = r.send().await.expect("v1 instance list");
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.expect("JSON")
    }
}
