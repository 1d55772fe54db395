//! `PUT /asks/{offer}/`: renting an offer. The body is the official CLI's create body
//! (`image`, `env` object, `args`, `onstart`, `runtype`, `disk`, `label`, `image_login`,
//! …); an unknown offer answers 404 and a taken one 410, both with `error: no_such_ask`
//! (clients should act on the code, not the status). A rental marks the offer rented and
//! starts provisioning in the background; the reply is `{"success": true,
//! "new_contract": <instance id>}`.
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::api::{bad_args, json_body, ApiError, S};
use super::instances::{self, Instance};
use super::offers::Provision;
use super::state;

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

fn no_such_ask(offer_id: u64, status: StatusCode, msg: String) -> Response {
    let body = json!({"success": false, "error": "no_such_ask", "msg": msg, "ask_id": offer_id});
    (status, Json(body)).into_response()
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
    let (id, how) = {
        let mut st = sh.lock();
        *st.rent_attempts.entry(offer_id).or_default() += 1;
        let snatched = st.snatched.remove(&offer_id);
        let default = st.provision_delay;
        let Some(offer) = st.offers.iter_mut().find(|o| o.id() == offer_id) else {
            let msg = format!("Offer {offer_id} not found.");
            return Ok(no_such_ask(offer_id, StatusCode::NOT_FOUND, msg));
        };
        let taken = offer.row.get("rented") == Some(&Value::Bool(true))
            || offer.row.get("rentable") == Some(&Value::Bool(false));
        offer.row.insert("rented".into(), Value::Bool(true));
        if snatched || taken {
            let msg = format!("Offer {offer_id} is no longer available.");
            return Ok(no_such_ask(offer_id, StatusCode::GONE, msg));
        }
        let offer_row = offer.row.clone();
        let how = offer.provision.clone().unwrap_or(Provision::After(default));
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
        };
        st.instances.insert(id, instance);
        (id, how)
    };
    tokio::spawn(state::provision(sh.clone(), id, how));
    Ok(Json(json!({"success": true, "new_contract": id})).into_response())
}
