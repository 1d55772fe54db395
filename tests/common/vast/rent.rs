//! `PUT /asks/{offer}/`: renting an offer. The body is the official CLI's create body
//! (`image`, `env` object, `args`, `onstart`, `runtype`, `disk`, `label`, `image_login`,
//! …). A taken or unknown offer answers as the docs' OpenAPI gives it today: 404
//! `{"error": "invalid_args", "msg": "no_such_ask  Instance type by id N is not
//! available."}`; in the older answers a taken offer is 410 and an unknown one 404, both
//! with `error: no_such_ask` (clients should act on `no_such_ask` wherever it stands, not
//! on the status). A rental marks the offer rented, prices it at the body's `disk` (as a
//! search with that `allocated_storage` would) and starts provisioning in the background;
//! the reply is `{"success": true, "new_contract": <instance id>}` (CLI help text), unless
//! the reply is to be lost: then 502 Bad Gateway after the rental, as when a proxy in front
//! of the service fails after the service acted (the reference: a create that got a 5xx may
//! still have rented).
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::api::{bad_args, json_body, ApiError, S};
use super::instances::{self, Instance};
use super::offers::Provision;
use super::state::{self, TakenAnswer};

/// What a create body asks for, checked.
struct Ask {
    image: String,
    env_raw: Map<String, Value>,
    args: Option<Vec<String>>,
    runtype: String,
    disk: f64,
    label: Option<String>,
    onstart: Option<String>,
    image_login: Option<String>,
}

fn opt_string(body: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad_args(format!("{field} must be a string, got {other}"))),
    }
}

impl Ask {
    fn parse(body: &Value) -> Result<Self, ApiError> {
        let image = opt_string(body, "image")?.filter(|s| !s.trim().is_empty());
        let image = image.ok_or_else(|| bad_args("image is required"))?;
        let env_raw = match body.get("env") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                let msg = format!("env must be an object {{\"K\": \"V\"}}, got {other}");
                return Err(bad_args(msg));
            }
        };
        let args = match body.get("args") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                Some(a.iter().map(instances::plain).collect())
            }
            Some(other) => {
                let msg = format!("args must be a list of strings, got {other}");
                return Err(bad_args(msg));
            }
        };
        let runtype = opt_string(body, "runtype")?.unwrap_or_else(|| {
            let t = if args.is_some() { "args" } else { "ssh" };
            t.to_string()
        });
        let disk = match body.get("disk") {
            None | Some(Value::Null) => 10.0,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad_args(format!("disk must be a number, got {v}")))?,
        };
        if disk < 8.0 {
            return Err(bad_args(format!("disk must be at least 8 GB, got {disk}")));
        }
        Ok(Self {
            image,
            env_raw,
            args,
            runtype,
            disk,
            label: opt_string(body, "label")?,
            onstart: opt_string(body, "onstart")?,
            image_login: opt_string(body, "image_login")?,
        })
    }
}

/// The answer to renting `offer_id` when it is gone (`taken`) or was never there.
fn no_such_ask(how: TakenAnswer, offer_id: u64, taken: bool) -> Response {
    let (status, body) = match how {
        TakenAnswer::InvalidArgs404 => {
            let msg = format!("no_such_ask  Instance type by id {offer_id} is not available.");
            let body =
                json!({"success": false, "error": "invalid_args", "msg": msg, "ask_id": offer_id});
            (StatusCode::NOT_FOUND, body)
        }
        TakenAnswer::NoSuchAsk410 => {
            let (status, msg) = if taken {
                let msg = format!("Offer {offer_id} is no longer available.");
                (StatusCode::GONE, msg)
            } else {
                (
                    StatusCode::NOT_FOUND,
                    format!("Offer {offer_id} not found."),
                )
            };
            let body =
                json!({"success": false, "error": "no_such_ask", "msg": msg, "ask_id": offer_id});
            (status, body)
        }
    };
    (status, Json(body)).into_response()
}

/// A proxy's 502, as nginx words it.
fn bad_gateway() -> Response {
    let html = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n";
    (
        StatusCode::BAD_GATEWAY,
        [(axum::http::header::CONTENT_TYPE, "text/html")],
        html,
    )
        .into_response()
}

/// `dph_total` of an offer row at `disk` GB: the row's own `dph_total` (the machine's price
/// without storage) plus its storage (`storage_cost`, $/GB/month, over 30 days), as the
/// search prices `allocated_storage`.
pub fn priced(row: &Map<String, Value>, disk: f64) -> f64 {
    let num = |k: &str| row.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    num("dph_total") + num("storage_cost") * disk / (30.0 * 24.0)
}

/// Seconds since the epoch, as `start_date` reads.
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

pub async fn create(
    State(sh): State<S>,
    Path(offer_id): Path<u64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let ask = Ask::parse(&body)?;
    let (id, how, lose_reply) = {
        let mut st = sh.lock();
        *st.rent_attempts.entry(offer_id).or_default() += 1;
        let snatched = st.snatched.remove(&offer_id);
        let default = st.provision_delay;
        let answer = st.taken_answer;
        let Some(offer) = st.offers.iter_mut().find(|o| o.id() == offer_id) else {
            return Ok(no_such_ask(answer, offer_id, false));
        };
        let taken = offer.row.get("rented") == Some(&Value::Bool(true))
            || offer.row.get("rentable") == Some(&Value::Bool(false));
        offer.row.insert("rented".into(), Value::Bool(true));
        if snatched || taken {
            return Ok(no_such_ask(answer, offer_id, true));
        }
        let mut offer_row = offer.row.clone();
        offer_row.insert("dph_total".into(), json!(priced(&offer_row, ask.disk)));
        let how = offer.provision.clone().unwrap_or(Provision::After(default));
        let lose_reply = st.lose_create_replies > 0;
        st.lose_create_replies = st.lose_create_replies.saturating_sub(1);
        *st.rentals.entry(offer_id).or_default() += 1;
        st.rented_order.push(offer_id);
        let id = st.next_id;
        st.next_id += 1;
        let env = ask
            .env_raw
            .iter()
            .filter(|(k, _)| !k.starts_with('-'))
            .map(|(k, v)| (k.clone(), instances::plain(v)))
            .collect();
        let instance = Instance {
            id,
            offer_id,
            label: ask.label,
            image: ask.image,
            env,
            env_raw: ask.env_raw,
            args: ask.args,
            onstart: ask.onstart,
            runtype: ask.runtype,
            image_login: ask.image_login,
            disk: ask.disk,
            body: body.clone(),
            offer_row,
            start_date: now_epoch(),
            actual_status: None,
            intended_status: "running".into(),
            status_msg: None,
            container: None,
            destroyed: false,
            host_status: None,
        };
        st.instances.insert(id, instance);
        (id, how, lose_reply)
    };
    tokio::spawn(state::provision(sh.clone(), id, how));
    if lose_reply {
        return Ok(bad_gateway());
    }
    Ok(Json(json!({"success": true, "new_contract": id})).into_response())
}
