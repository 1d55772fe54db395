//! The stand-in's HTTP API: the routes of the Vast.ai REST API that deckhand and the
//! official CLI use, under `/api/v0` (and the v1 instance listing), with the documented
//! bodies and error shapes.
//!
//! Every request is recorded. API routes then pass, in order: a 429 storm (plain text
//! `API requests too frequent`, no Retry-After: docs, rate-limits-and-errors) or a 500
//! storm, bearer auth (`Authorization: Bearer <key>`, or the older `?api_key=`, which the
//! docs say the server still takes; a wrong or missing key answers 404 `Invalid user key`,
//! as the docs' OpenAPI gives it, or 401 in the older answers), and the per-endpoint
//! minimum intervals when set (429 `API requests too frequent: endpoint threshold=…`).
//! Result URLs of `request_logs` (`/logs/<token>`) need no auth, as the real ones are
//! pre-signed storage URLs.
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::control::{change, destroy, list_v0, list_v1, request_logs, result_url, show};
use super::offers;
use super::rent::create;
use super::state::{RecordedRequest, Shared, WrongKey};

pub type S = Arc<Shared>;

/// An error answer: `{"success": false, "error": code, "msg": msg}` with its status.
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub msg: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"success": false, "error": self.code, "msg": self.msg});
        (self.status, Json(body)).into_response()
    }
}

pub fn error(status: StatusCode, code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        msg: msg.into(),
    }
}

/// 400 `invalid_args`: a create or change body the service refuses.
pub fn bad_args(msg: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, "invalid_args", msg)
}

fn too_frequent(text: String) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Registers `path` (ending in `/`) with and without its trailing slash.
fn both(r: Router<S>, path: &str, m: MethodRouter<S>) -> Router<S> {
    r.route(path, m.clone())
        .route(path.trim_end_matches('/'), m)
}

pub fn router(shared: S) -> Router {
    let mut api = Router::new();
    api = both(api, "/api/v0/users/current/", get(user));
    api = both(api, "/api/v0/bundles/", post(search_post).get(search_get));
    api = both(api, "/api/v0/search/asks/", put(search_asks));
    api = both(api, "/api/v0/asks/{id}/", put(create));
    api = both(api, "/api/v0/instances/", get(list_v0));
    api = both(api, "/api/v1/instances/", get(list_v1));
    let one = get(show).put(change).delete(destroy);
    api = both(api, "/api/v0/instances/{id}/", one);
    api = both(
        api,
        "/api/v0/instances/request_logs/{id}/",
        put(request_logs),
    );
    api.route_layer(middleware::from_fn_with_state(shared.clone(), gate))
        .route("/logs/{token}", get(result_url))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

/// The API key a request carries.
fn key_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string());
    bearer.or_else(|| {
        url_pairs(query.unwrap_or_default())
            .into_iter()
            .find(|(k, _)| k == "api_key")
            .map(|(_, v)| v)
    })
}

/// `k=v&…` decoded (percent-encoding and `+`).
fn url_pairs(query: &str) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(&format!("/?{query}").parse().unwrap_or_default())
        .map(|q| q.0)
        .unwrap_or_default()
}

/// Records every request with its body and, once answered, its status.
async fn record(State(sh): State<S>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let parsed = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let index = {
        let mut st = sh.lock();
        st.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            body: parsed,
            key: key_of(&parts.headers, parts.uri.query()),
            status: 0,
            at: Instant::now(),
        });
        st.requests.len() - 1
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if let Some(r) = sh.lock().requests.get_mut(index) {
        r.status = response.status().as_u16();
    }
    response
}

/// 429 storms, auth, per-endpoint minimum intervals.
async fn gate(State(sh): State<S>, matched: MatchedPath, req: Request, next: Next) -> Response {
    let route = format!(
        "{} {}",
        req.method(),
        matched.as_str().trim_end_matches('/')
    );
    {
        let mut st = sh.lock();
        let now = Instant::now();
        let storm = st.storm_left > 0 || st.storm_until.is_some_and(|t| now < t);
        if storm {
            st.storm_left = st.storm_left.saturating_sub(1);
            if st.storm_status == 500 {
                let msg = "Internal Server Error";
                return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", msg)
                    .into_response();
            }
            return too_frequent("API requests too frequent".into());
        }
        let key = key_of(req.headers(), req.uri().query());
        if key.as_deref() != Some(st.api_key.as_str()) || st.api_key.is_empty() {
            if st.wrong_key == WrongKey::NotFound {
                let body = json!({"success": false, "msg": "Invalid user key"});
                return (StatusCode::NOT_FOUND, Json(body)).into_response();
            }
            let msg = match key {
                None => "Authentication required: Authorization: Bearer <api key>",
                Some(_) => "Invalid API key",
            };
            return error(StatusCode::UNAUTHORIZED, "not_authorized", msg).into_response();
        }
        if st.retired.contains(&route) {
            let body = json!({"error": "deprecated_endpoint"});
            return (StatusCode::GONE, Json(body)).into_response();
        }
        if let Some(interval) = st.rate_limits.get(&route).copied() {
            if st
                .last_hit
                .get(&route)
                .is_some_and(|t| now.duration_since(*t) < interval)
            {
                let per_s = 1.0 / interval.as_secs_f64();
                return too_frequent(format!(
                    "API requests too frequent: endpoint threshold={per_s:.2}"
                ));
            }
            st.last_hit.insert(route, now);
        }
    }
    next.run(req).await
}

/// A JSON body; `{}` when empty (the CLI sends `{}` for empty PUT/POST/DELETE bodies).
pub fn json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("body is not JSON: {e}"),
        )
    })
}

async fn user(State(sh): State<S>) -> Response {
    let key = sh.lock().api_key.clone();
    Json(json!({
        "id": 4242, "username": "deckhand-test", "email": "deckhand-test@example.invalid",
        "fullname": "deckhand test", "balance": 100.0, "credit": 100.0, "can_pay": true,
        "has_billing": true, "email_verified": true, "api_key": key,
    }))
    .into_response()
}

fn search_reply(sh: &Shared, query: &Value) -> Result<Response, ApiError> {
    let q = offers::parse_query(query)
        .map_err(|msg| error(StatusCode::BAD_REQUEST, "invalid_request", msg))?;
    let rows = offers::search(&sh.lock().offers, &q);
    Ok(Json(json!({"success": true, "offers": rows})).into_response())
}

/// `POST /bundles/` with the query object: `{"offers": [...]}`.
async fn search_post(State(sh): State<S>, body: Bytes) -> Result<Response, ApiError> {
    search_reply(&sh, &json_body(&body)?)
}

/// The older `GET /bundles/?q=<JSON query>`.
async fn search_get(
    State(sh): State<S>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let q = params
        .iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.as_str());
    let q = serde_json::from_str::<Value>(q.unwrap_or("{}")).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("q is not JSON: {e}"),
        )
    })?;
    search_reply(&sh, &q)
}

/// `PUT /search/asks/` with `{"select_cols": [...], "q": <query>}`.
async fn search_asks(State(sh): State<S>, body: Bytes) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    search_reply(&sh, body.get("q").unwrap_or(&json!({})))
}
