//! The instance calls: the account's instances through the paged v1 listing (every page,
//! as the CLI's `_fetch_all_instances_v1` pages: `select_filters`, `order_by` id ascending,
//! `limit` 25, then `after_token` = the last `next_token` until there is none), one
//! instance, destroy, and an instance's output through `request_logs`. The v0 listing
//! (`GET /instances/?owner=me`) answers 410 since 2026 and is never called.

use std::collections::HashSet;
use std::time::Duration;

use backon::{ConstantBuilder, Retryable};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{message, LOG_TRIES};
use super::{Api, ApiError, Retry};

/// The page size: the CLI's, and the most the v1 listing gives.
pub const PAGE: usize = 25;

/// The most pages one listing follows (10,000 instances): a token that never ends is an
/// unreadable answer, not a loop.
const MAX_PAGES: usize = 400;

/// One instance row.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Row {
    pub id: u64,
    #[serde(default)]
    pub label: Option<String>,
    /// null while provisioning, then `loading`, `running`, `exited`, …
    #[serde(default)]
    pub actual_status: Option<String>,
    /// What was asked: `running`, `stopped`, …
    #[serde(default)]
    pub intended_status: Option<String>,
    #[serde(default)]
    pub status_msg: Option<String>,
    /// The contract: `running`, `stopped`, `unloaded` once destroyed.
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

impl Row {
    /// Whether the row says the instance is destroyed (`cur_state` unloaded, or the
    /// intended or actual status destroyed, terminated or offline): after a destroy, as good
    /// as gone.
    pub fn reads_destroyed(&self) -> bool {
        let is = |s: &Option<String>, any: &[&str]| s.as_deref().is_some_and(|s| any.contains(&s));
        is(&self.cur_state, &["unloaded"])
            || is(
                &self.intended_status,
                &["destroyed", "terminated", "offline"],
            )
            || is(&self.actual_status, &["destroyed", "terminated", "offline"])
    }

    /// The host lost the instance after it ran (`offline`, `unknown`: no heartbeat).
    pub fn lost(&self) -> bool {
        matches!(self.actual_status.as_deref(), Some("offline" | "unknown"))
    }
}

/// One page of the v1 listing.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    instances: Option<Vec<Row>>,
    #[serde(default)]
    next_token: Option<Value>,
}

impl Api {
    /// Every instance of the account matching `filters` (`{}` for all, `{"label": {"eq":
    /// L}}` for one label), every page followed.
    pub async fn instances(&self, filters: &Value) -> Result<Vec<Row>, ApiError> {
        let base = format!("{}/api/v1/instances/", self.root);
        let select = filters.to_string();
        let order = json!([{"col": "id", "dir": "asc"}]).to_string();
        let limit = PAGE.to_string();
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        let mut tokens = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut params = vec![
                ("select_filters", select.as_str()),
                ("order_by", order.as_str()),
                ("limit", limit.as_str()),
            ];
            if let Some(t) = &token {
                params.push(("after_token", t.as_str()));
            }
            let url = reqwest::Url::parse_with_params(&base, &params)
                .map_err(|e| ApiError::Unreachable(format!("bad API URL: {e}")))?;
            let (_, v) = self
                .call("list", Method::GET, url.as_str(), None, Retry::Transient)
                .await?;
            let page: Page = serde_json::from_value(v.clone())
                .map_err(|e| ApiError::Unreadable(format!("instance listing: {e}")))?;
            let Some(instances) = page.instances else {
                return Err(ApiError::Unreadable(format!("no instances in {v}")));
            };
            rows.extend(instances);
            token = match page.next_token {
                Some(Value::String(t)) if !t.is_empty() => Some(t),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => return Ok(rows),
            };
            if !tokens.insert(token.clone()) {
                return Err(ApiError::Unreadable(format!(
                    "the instance listing gave next_token {} twice",
                    token.unwrap_or_default()
                )));
            }
        }
        Err(ApiError::Unreadable(format!(
            "the instance listing did not end within {MAX_PAGES} pages"
        )))
    }

    /// The instances carrying `label` (at most one, unless a create was answered twice).
    pub async fn labelled(&self, label: &str) -> Result<Vec<Row>, ApiError> {
        self.instances(&json!({"label": {"eq": label}})).await
    }

    /// One instance; `None` once it is gone (`null`, 404, or `cur_state` unloaded).
    pub async fn instance(&self, id: u64) -> Result<Option<Row>, ApiError> {
        let url = self.v0(&format!("/instances/{id}/?owner=me"));
        let (status, v) = self
            .call("show", Method::GET, &url, None, Retry::Transient)
            .await?;
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
        let url = self.v0(&format!("/instances/{id}/"));
        self.call("destroy", Method::DELETE, &url, None, Retry::Transient)
            .await
            .map(|_| ())
    }

    /// The instance's last `tail` lines of output: asks for them, then fetches the result
    /// URL until it is ready (30 tries, 0.3 s apart, as the CLI does). An instance that is
    /// gone is a 404 `Refused` ([`ApiError::gone`]).
    pub async fn logs(&self, id: u64, tail: u32) -> Result<String, ApiError> {
        let url = self.v0(&format!("/instances/request_logs/{id}/"));
        let body = json!({ "tail": tail.to_string() });
        let (status, v) = self
            .call("logs", Method::PUT, &url, Some(body), Retry::Transient)
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
