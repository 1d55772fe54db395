//! The stand-in's instance routes: list (v0 and the paged v1), show, change (label,
//! stop/start), destroy, and `request_logs` with its result URLs.
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::api::{bad_args, error, json_body, ApiError, S};
use super::instances::{self, Instance};
use super::offers;
use super::state::{self, DestroyedAnswer, LogResult, Shared};

/// The most rows one page of the v1 listing gives.
pub const PAGE: usize = 25;

/// The live instances' ids.
fn live(sh: &Shared) -> Vec<u64> {
    let st = sh.lock();
    st.instances
        .values()
        .filter(|i| !i.destroyed)
        .map(|i| i.id)
        .collect()
}

fn rows(sh: &Shared, ids: &[u64]) -> Vec<Map<String, Value>> {
    let st = sh.lock();
    ids.iter()
        .filter_map(|id| st.instances.get(id))
        .map(Instance::row)
        .collect()
}

/// `GET /instances/?owner=me`: 410 `{"error": "deprecated_endpoint"}` since 2026 (as
/// skypilot#10517 and dstack#3969 met it); in the older answers `{"instances": [...]}`.
pub async fn list_v0(State(sh): State<S>) -> Response {
    if !sh.lock().v0_listing {
        let body = json!({"error": "deprecated_endpoint"});
        return (StatusCode::GONE, Json(body)).into_response();
    }
    let ids = live(&sh);
    state::refresh(&sh, &ids).await;
    Json(json!({"instances": rows(&sh, &ids)})).into_response()
}

/// `GET /api/v1/instances/?select_filters=<JSON>&order_by=<JSON>&limit=N&after_token=T`
/// (`_fetch_all_instances_v1`): at most 25 rows a page (the CLI's page size; a larger
/// `limit` gives 25), `next_token` until the last page, then null.
pub async fn list_v1(
    State(sh): State<S>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let invalid = |msg: String| error(StatusCode::BAD_REQUEST, "invalid_request", msg);
    let select = param("select_filters").unwrap_or_else(|| "{}".into());
    let Ok(Value::Object(select)) = serde_json::from_str::<Value>(&select) else {
        return Err(invalid(format!(
            "select_filters must be a JSON object, got {select}"
        )));
    };
    let filters = offers::parse_filters(&select, None).map_err(invalid)?;
    let mut order = Vec::new();
    if let Some(o) = param("order_by") {
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&o) else {
            return Err(invalid(format!("order_by must be a JSON list, got {o}")));
        };
        for item in items {
            let col = item["col"].as_str().unwrap_or("id").to_string();
            order.push((col, item["dir"].as_str() == Some("desc")));
        }
    }
    if order.is_empty() {
        order.push(("id".into(), false));
    }
    let limit: usize = param("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(PAGE)
        .clamp(1, PAGE);
    let offset: usize = param("after_token")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let ids = live(&sh);
    state::refresh(&sh, &ids).await;
    let all = rows(&sh, &ids);
    let mut label_counts = Map::new();
    for r in &all {
        let label = r["label"].as_str().unwrap_or_default().to_string();
        let n = label_counts
            .get(&label)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        label_counts.insert(label, json!(n + 1));
    }
    let mut matching: Vec<_> = all
        .into_iter()
        .filter(|r| offers::matches(r, &filters))
        .collect();
    offers::sort_rows(&mut matching, &order);
    let total = matching.len();
    let page: Vec<_> = matching.into_iter().skip(offset).take(limit).collect();
    let next = (offset + limit < total).then(|| (offset + limit).to_string());
    Ok(Json(json!({
        "instances": page, "next_token": next, "total_instances": total,
        "label_counts": label_counts,
    }))
    .into_response())
}

/// `GET /instances/{id}/`: `{"instances": row}`; once destroyed, as [`DestroyedAnswer`]
/// says (`null`, 404, or the row reading unloaded or terminated: the CLI's
/// `instance_exist` takes each as gone).
pub async fn show(State(sh): State<S>, Path(id): Path<u64>) -> Response {
    state::refresh(&sh, &[id]).await;
    let st = sh.lock();
    let Some(inst) = st.instances.get(&id) else {
        return Json(json!({"instances": null})).into_response();
    };
    if !inst.destroyed {
        return Json(json!({"instances": inst.row()})).into_response();
    }
    let mut row = inst.row();
    match st.destroyed_answer {
        DestroyedAnswer::Null => return Json(json!({"instances": null})).into_response(),
        DestroyedAnswer::NotFound => return no_such_instance(id).into_response(),
        DestroyedAnswer::Unloaded => {
            row.insert("cur_state".into(), json!("unloaded"));
        }
        DestroyedAnswer::Terminated => {
            row.insert("cur_state".into(), json!("stopped"));
            row.insert("intended_status".into(), json!("destroyed"));
            row.insert("actual_status".into(), json!("offline"));
        }
    }
    Json(json!({"instances": row})).into_response()
}

fn no_such_instance(id: u64) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "no_such_instance",
        format!("Instance {id} not found."),
    )
}

/// `PUT /instances/{id}/`: `{"label": …}` and/or `{"state": "stopped"|"running"}`.
pub async fn change(
    State(sh): State<S>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let state = body
        .get("state")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(s) = &state {
        if s != "stopped" && s != "running" {
            return Err(bad_args(format!(
                "state must be \"stopped\" or \"running\", got {s:?}"
            )));
        }
    }
    let container = {
        let mut st = sh.lock();
        let Some(inst) = st.instances.get_mut(&id).filter(|i| !i.destroyed) else {
            return Err(no_such_instance(id));
        };
        if let Some(label) = body.get("label") {
            inst.label = label.as_str().map(str::to_string);
        }
        if let Some(s) = &state {
            inst.intended_status = s.clone();
        }
        inst.container.clone()
    };
    if let (Some(s), Some(c)) = (state, container) {
        // Like the real service, the change is asked for and happens in the background.
        // A stop gives the container 5 s after SIGTERM (a shell as PID 1 ignores it).
        let args: Vec<String> = if s == "stopped" {
            vec!["stop".into(), "-t".into(), "5".into(), c]
        } else {
            vec!["start".into(), c]
        };
        tokio::spawn(async move {
            let _ = instances::docker(None, &args, None).await;
        });
    }
    Ok(Json(json!({"success": true})).into_response())
}

/// `DELETE /instances/{id}/`: removes the container; the instance reads as gone.
pub async fn destroy(State(sh): State<S>, Path(id): Path<u64>) -> Result<Response, ApiError> {
    let container = {
        let mut st = sh.lock();
        let release = st.release_on_destroy;
        let Some(inst) = st.instances.get_mut(&id).filter(|i| !i.destroyed) else {
            return Err(no_such_instance(id));
        };
        inst.destroyed = true;
        inst.actual_status = None;
        let (offer_id, container) = (inst.offer_id, inst.container.clone());
        st.destroyed.push(id);
        if release {
            if let Some(o) = st.offers.iter_mut().find(|o| o.id() == offer_id) {
                o.row.insert("rented".into(), Value::Bool(false));
            }
        }
        container
    };
    if let Some(c) = container {
        let _ = instances::docker(None, &["rm".into(), "-f".into(), "-v".into(), c], None).await;
    }
    Ok(Json(json!({"success": true})).into_response())
}

/// `PUT /instances/request_logs/{id}/` `{"tail": "N", "filter": …}`: the log captured now,
/// served at `result_url` after a few 404s (the host is still uploading).
pub async fn request_logs(
    State(sh): State<S>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let tail = match body.get("tail") {
        None | Some(Value::Null) => 1000,
        Some(Value::String(s)) => s.trim().parse().unwrap_or(1000),
        Some(v) => v.as_u64().unwrap_or(1000) as usize,
    };
    let filter = body
        .get("filter")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty());
    let container = {
        let st = sh.lock();
        let Some(inst) = st.instances.get(&id).filter(|i| !i.destroyed) else {
            return Err(no_such_instance(id));
        };
        inst.container.clone()
    };
    let text = match container {
        Some(c) => instances::container_logs(&c, tail, filter).await,
        None => String::new(),
    };
    let token = uuid::Uuid::new_v4().simple().to_string();
    let url = format!("http://127.0.0.1:{}/logs/{token}", sh.port);
    {
        let mut st = sh.lock();
        let not_ready = st.logs_not_ready_gets;
        st.logs.insert(token, LogResult { text, not_ready });
    }
    Ok(Json(json!({
        "success": true, "result_url": url,
        "msg": "Logs will be available at result_url shortly.",
    }))
    .into_response())
}

/// A result URL: 404 (S3-style XML) for the first GETs, then the log text.
pub async fn result_url(
    State(sh): State<S>,
    method: Method,
    Path(token): Path<String>,
) -> Response {
    let mut st = sh.lock();
    let Some(r) = st.logs.get_mut(&token) else {
        return not_yet();
    };
    if r.not_ready > 0 {
        if method == Method::GET {
            r.not_ready -= 1;
        }
        return not_yet();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        r.text.clone(),
    )
        .into_response()
}

fn not_yet() -> Response {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/xml")],
        xml,
    )
        .into_response()
}
