//! The Vast.ai REST API as its official CLI speaks it (`vast-ai/vast-cli`): bearer auth, JSON
//! bodies, `/api/v0` paths and the paged `/api/v1/instances/` listing. Calls are paced to the
//! API's documented per-endpoint rate limits (with a small margin, so a request that travels
//! faster than the one before it still arrives after the interval; each wait is logged at
//! debug), and 429, any 5xx and connection errors are retried with backoff (0.15 s × 1.5,
//! as the CLI does, 8 times; each retry logged). When the retries run out the error is
//! still [`ApiError::transient`]: callers answer UNAVAILABLE, not a failure. A create is the
//! exception: it is resent only after a 429 (the API did nothing), since after a 5xx or a
//! lost reply it may have rented (see `provision`). How answers are read: [`error`]. The
//! key is sent in the `Authorization` header only: never in a URL, a log line or an error.
//!
//! - [`error`]: which answers are errors, and of what kind;
//! - [`instances`]: the instance calls (listing every page, show, destroy, logs).

pub mod error;
mod instances;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

pub use error::ApiError;
use error::{classify, message};
pub use instances::Row;

/// One offer from a search.
#[derive(Debug, Clone, Deserialize)]
pub struct Offer {
    pub id: u64,
    #[serde(default)]
    pub gpu_name: String,
    #[serde(default)]
    pub dph_total: f64,
}

/// Minimum interval between calls of one endpoint (the docs' preview figures; the create
/// interval from the Ponos notes), plus [`PACE_MARGIN`]. The v1 listing is paced as the
/// instance listing the docs give (0.5/s); the docs name no figure of their own for it.
fn pace_of(endpoint: &str) -> Duration {
    let documented = match endpoint {
        "create" => Duration::from_millis(4500),
        "destroy" => Duration::from_secs(3),
        "list" => Duration::from_secs(2),
        "search" | "show" | "change" | "logs" => Duration::from_secs(1),
        _ => return Duration::ZERO,
    };
    documented + PACE_MARGIN
}

/// Whether the path of an endpoint's calls names an id (an offer or an instance): only there
/// is a 404 "not there" (see [`error`]).
fn names_id(endpoint: &str) -> bool {
    !matches!(endpoint, "user" | "search" | "list")
}

/// Added to each documented interval: the pace is kept when a request leaves, the limit is
/// counted when it arrives, and one request may take longer on the way than the next.
const PACE_MARGIN: Duration = Duration::from_millis(100);

/// Which failures a call tries again by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// 429, every 5xx and connection errors: for calls that change nothing, or change it the
    /// same way twice.
    Transient,
    /// 429 only: a create answered with a 5xx or not at all may have rented.
    RateLimited,
}

pub struct Api {
    http: reqwest::Client,
    /// `https://console.vast.ai`
    root: String,
    key: String,
    /// Endpoint → the earliest time its next call may go.
    next: Mutex<HashMap<&'static str, Instant>>,
}

impl Api {
    pub fn new(url: &str, key: &str) -> Result<Self, ApiError> {
        // reqwest is built without a default TLS provider: ring, as tonic and S3 use.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            root: url.trim_end_matches('/').to_string(),
            key: key.to_string(),
            next: Mutex::new(HashMap::new()),
        })
    }

    /// `root` + `/api/v0` + `path`.
    fn v0(&self, path: &str) -> String {
        format!("{}/api/v0{path}", self.root)
    }

    /// Waits for `endpoint`'s turn.
    async fn pace(&self, endpoint: &'static str) {
        let interval = pace_of(endpoint);
        if interval.is_zero() {
            return;
        }
        let wait = {
            let mut next = self.next.lock();
            let now = Instant::now();
            let at = next.get(endpoint).copied().unwrap_or(now).max(now);
            next.insert(endpoint, at + interval);
            at - now
        };
        if !wait.is_zero() {
            tracing::debug!(
                endpoint,
                wait_ms = wait.as_millis() as u64,
                "pacing a Vast.ai call to the endpoint's documented rate limit"
            );
        }
        tokio::time::sleep(wait).await;
    }

    async fn once(
        &self,
        endpoint: &'static str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ApiError> {
        self.pace(endpoint).await;
        let mut req = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.key);
        // PUT/POST/DELETE send `{}` when they have nothing to say, as the CLI does.
        if method != Method::GET {
            req = req.json(body.unwrap_or(&json!({})));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| ApiError::Unreachable(e.without_url().to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let path = url.strip_prefix(&self.root).unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        classify(
            status,
            &value,
            &format!("{method} {path}"),
            names_id(endpoint),
        )?;
        Ok((status, value))
    }

    /// One call, retried while it fails as `retry` allows.
    async fn call(
        &self,
        endpoint: &'static str,
        method: Method,
        url: &str,
        body: Option<Value>,
        retry: Retry,
    ) -> Result<(StatusCode, Value), ApiError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(150))
            .with_factor(1.5)
            .with_max_times(8);
        (|| self.once(endpoint, method.clone(), url, body.as_ref()))
            .retry(backoff)
            .when(|e: &ApiError| match retry {
                Retry::Transient => e.transient(),
                Retry::RateLimited => e.rate_limited(),
            })
            .notify(|e: &ApiError, wait: Duration| {
                tracing::info!(endpoint, error = %e, wait_ms = wait.as_millis() as u64, "Vast.ai call retried");
            })
            .await
    }

    /// Whether the key is good (`GET /users/current`); retried like every call, so one 429
    /// does not fail the control operation it guards. A wrong key is
    /// [`ApiError::Unauthorized`], whether the API says so with a 401 or a 404.
    pub async fn check_key(&self) -> Result<(), ApiError> {
        let url = self.v0("/users/current/");
        self.call("user", Method::GET, &url, None, Retry::Transient)
            .await
            .map(|_| ())
    }

    /// Offers matching `query`, as the API orders them.
    pub async fn search(&self, query: &Value) -> Result<Vec<Offer>, ApiError> {
        let url = self.v0("/bundles/");
        let (_, v) = self
            .call(
                "search",
                Method::POST,
                &url,
                Some(query.clone()),
                Retry::Transient,
            )
            .await?;
        let offers = v
            .get("offers")
            .cloned()
            .ok_or_else(|| ApiError::Unreadable(format!("no offers in {v}")))?;
        serde_json::from_value(offers).map_err(|e| ApiError::Unreadable(e.to_string()))
    }

    /// Rents `offer`; the new instance's id. A taken offer is [`ApiError::taken`]. Sent again
    /// only after a 429: any other failure may have rented, and is the caller's to resolve.
    pub async fn rent(&self, offer: u64, body: Value) -> Result<u64, ApiError> {
        let url = self.v0(&format!("/asks/{offer}/"));
        let (status, v) = self
            .call("create", Method::PUT, &url, Some(body), Retry::RateLimited)
            .await?;
        if status == StatusCode::NOT_FOUND {
            // A 404 naming the offer (docs: "offer not found"): as good as taken.
            return Err(ApiError::Refused {
                status: status.as_u16(),
                code: error::NO_SUCH_ASK.into(),
                msg: message(&v),
            });
        }
        if v.get("success") == Some(&Value::Bool(false)) {
            return Err(ApiError::Refused {
                status: status.as_u16(),
                code: v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                msg: message(&v),
            });
        }
        v.get("new_contract")
            .and_then(Value::as_u64)
            .ok_or_else(|| ApiError::Unreadable(format!("no new_contract in {v}")))
    }
}
