//! The Vast.ai REST API as its official CLI speaks it (`vast-ai/vast-cli`): bearer auth, JSON
//! bodies, `/api/v0` paths. Calls are paced to the API's documented per-endpoint rate limits
//! (with a small margin, so a request that travels faster than the one before it still
//! arrives after the interval), and 429, any 5xx and connection errors are retried with
//! backoff (0.15 s × 1.5, as the CLI does, 8 times). When the retries run out the error is
//! still [`ApiError::transient`]: callers answer UNAVAILABLE, not a failure. The key is sent
//! in the `Authorization` header only: never in a URL, a log line or an error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{ConstantBuilder, ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

/// A failed API call, in words a person can act on (never holding the key).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("the Vast.ai API is unreachable: {0}")]
    Unreachable(String),
    #[error("the Vast.ai API refused the key (config/vast_api/api_key): {0}")]
    Unauthorized(String),
    #[error("the Vast.ai API answered {status} {code}: {msg}")]
    Refused {
        status: u16,
        code: String,
        msg: String,
    },
    #[error("the Vast.ai API answered something unreadable: {0}")]
    Unreadable(String),
    /// The output of an instance was asked for, but its result URL never became ready.
    #[error("the logs of Vast.ai instance {0} were not ready after {LOG_TRIES} tries")]
    LogsNotReady(u64),
    /// An instance still listed after it was destroyed and confirmation was waited for.
    #[error("Vast.ai instance {0} is still listed after it was destroyed")]
    NotGone(u64),
}

/// How often a `request_logs` result URL is fetched before giving up (as the CLI does).
const LOG_TRIES: usize = 30;

impl ApiError {
    /// Worth trying again (now or later): rate limited, a server error, or not reached.
    pub fn transient(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::LogsNotReady(_) => true,
            Self::Refused { status, .. } => *status == 429 || (500..=599).contains(status),
            _ => false,
        }
    }

    /// The instance asked about does not exist (any more).
    pub fn gone(&self) -> bool {
        matches!(self, Self::Refused { status: 404, .. })
    }

    /// The API's error code (`no_such_ask`).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One offer from a search.
#[derive(Debug, Clone, Deserialize)]
pub struct Offer {
    pub id: u64,
    #[serde(default)]
    pub gpu_name: String,
    #[serde(default)]
    pub dph_total: f64,
}

/// One instance row.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Row {
    pub id: u64,
    #[serde(default)]
    pub label: Option<String>,
    /// null while provisioning, then `loading`, `running`, `exited`, …
    #[serde(default)]
    pub actual_status: Option<String>,
    #[serde(default)]
    pub status_msg: Option<String>,
    #[serde(default)]
    pub cur_state: Option<String>,
    #[serde(default)]
    pub gpu_name: Option<String>,
    #[serde(default)]
    pub dph_total: Option<f64>,
    /// Epoch seconds.
    #[serde(default)]
    pub start_date: Option<f64>,
}

/// Minimum interval between calls of one endpoint (the docs' preview figures; the create
/// interval from the Ponos notes), plus [`PACE_MARGIN`].
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

/// Added to each documented interval: the pace is kept when a request leaves, the limit is
/// counted when it arrives, and one request may take longer on the way than the next.
const PACE_MARGIN: Duration = Duration::from_millis(100);

pub struct Api {
    http: reqwest::Client,
    /// `https://console.vast.ai/api/v0`
    base: String,
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
            base: format!("{}/api/v0", url.trim_end_matches('/')),
            key: key.to_string(),
            next: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for `endpoint`'s turn.
    async fn pace(&self, endpoint: &'static str) {
        let interval = pace_of(endpoint);
        if interval.is_zero() {
            return;
        }
        let wait = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let at = next.get(endpoint).copied().unwrap_or(now).max(now);
            next.insert(endpoint, at + interval);
            at - now
        };
        tokio::time::sleep(wait).await;
    }

    async fn once(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ApiError> {
        self.pace(endpoint).await;
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
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
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ApiError::Unauthorized(format!(
                "{status} {}",
                message(&value)
            )));
        }
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok((status, value));
        }
        Err(ApiError::Refused {
            status: status.as_u16(),
            code: value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            msg: message(&value),
        })
    }

    /// One call, retried while it fails for a passing reason (`retry`), else once.
    async fn call(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
        retry: bool,
    ) -> Result<(StatusCode, Value), ApiError> {
        let times = if retry { 8 } else { 0 };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(150))
            .with_factor(1.5)
            .with_max_times(times);
        (|| self.once(endpoint, method.clone(), path, body.as_ref()))
            .retry(backoff)
            .when(ApiError::transient)
            .await
    }

    /// Whether the key is good (`GET /users/current`); retried like every call, so one 429
    /// does not fail the control operation it guards.
    pub async fn check_key(&self) -> Result<(), ApiError> {
        self.call("user", Method::GET, "/users/current/", None, true)
            .await
            .map(|_| ())
    }

    /// Offers matching `query`, as the API orders them.
    pub async fn search(&self, query: &Value) -> Result<Vec<Offer>, ApiError> {
        let (_, v) = self
            .call(
                "search",
                Method::POST,
                "/bundles/",
                Some(query.clone()),
                true,
            )
            .await?;
        let offers = v.get("offers").cloned().unwrap_or(Value::Array(Vec::new()));
        serde_json::from_value(offers).map_err(|e| ApiError::Unreadable(e.to_string()))
    }

    /// Rents `offer`; the new instance's id. A taken offer is `no_such_ask`.
    pub async fn rent(&self, offer: u64, body: Value) -> Result<u64, ApiError> {
        let path = format!("/asks/{offer}/");
        let (status, v) = self
            .call("create", Method::PUT, &path, Some(body), true)
            .await?;
        if status == StatusCode::NOT_FOUND || v.get("success") == Some(&Value::Bool(false)) {
            return Err(ApiError::Refused {
                status: status.as_u16(),
                code: v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no_such_ask")
                    .to_string(),
                msg: message(&v),
            });
        }
        v.get("new_contract")
            .and_then(Value::as_u64)
            .ok_or_else(|| ApiError::Unreadable(format!("no new_contract in {v}")))
    }

    /// Every instance of the account.
    pub async fn instances(&self) -> Result<Vec<Row>, ApiError> {
        let (_, v) = self
            .call("list", Method::GET, "/instances/?owner=me", None, true)
            .await?;
        let list = v
            .get("instances")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        serde_json::from_value(list).map_err(|e| ApiError::Unreadable(e.to_string()))
    }

    /// One instance; `None` once it is gone.
    pub async fn instance(&self, id: u64) -> Result<Option<Row>, ApiError> {
        let path = format!("/instances/{id}/?owner=me");
        let (status, v) = self.call("show", Method::GET, &path, None, true).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        match v.get("instances") {
            None | Some(Value::Null) => Ok(None),
            Some(row) => {
                let row: Row = serde_json::from_value(row.clone())
                    .map_err(|e| ApiError::Unreadable(e.to_string()))?;
                Ok((row.cur_state.as_deref() != Some("unloaded")).then_some(row))
            }
        }
    }

    /// Destroys an instance; one already gone counts as destroyed.
    pub async fn destroy(&self, id: u64) -> Result<(), ApiError> {
        let path = format!("/instances/{id}/");
        self.call("destroy", Method::DELETE, &path, None, true)
            .await
            .map(|_| ())
    }

    /// The instance's last `tail` lines of output: asks for them, then fetches the result
    /// URL until it is ready (30 tries, 0.3 s apart, as the CLI does). An instance that is
    /// gone is a 404 `Refused` ([`ApiError::gone`]).
    pub async fn logs(&self, id: u64, tail: u32) -> Result<String, ApiError> {
        let path = format!("/instances/request_logs/{id}/");
        let body = json!({ "tail": tail.to_string() });
        let (status, v) = self
            .call("logs", Method::PUT, &path, Some(body), true)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Err(ApiError::Refused {
                status: status.as_u16(),
                code: v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no_such_instance")
                    .to_string(),
                msg: message(&v),
            });
        }
        let url = v
            .get("result_url")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::Unreadable(format!("no result_url in {v}")))?
            .to_string();
        // Not ready yet is the only answer tried again here; anything else ends the wait.
        let ready = ConstantBuilder::new()
            .with_delay(Duration::from_millis(300))
            .with_max_times(LOG_TRIES - 1);
        (|| self.result(&url, id))
            .retry(ready)
            .when(|e| matches!(e, ApiError::LogsNotReady(_)))
            .await
    }

    /// One fetch of a `request_logs` result URL (pre-signed: without auth).
    async fn result(&self, url: &str, id: u64) -> Result<String, ApiError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(ApiError::LogsNotReady(id));
        }
        resp.text()
            .await
            .map_err(|e| ApiError::Unreachable(e.without_url().to_string()))
    }
}

/// The API's words in an error body (`msg`, `message` or the text itself).
fn message(v: &Value) -> String {
    v.get("msg")
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| match v {
            Value::String(s) => s.trim().to_string(),
            other => other.to_string(),
        })
}
