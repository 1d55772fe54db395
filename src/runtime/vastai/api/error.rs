//! How the Vast.ai API's answers are read: which are errors, and of what kind. The rules
//! follow `shared/brief/reference/vastai-api.md` (the official CLI and the docs' OpenAPI):
//!
//! - `no_such_ask` in `error` **or** `msg`, at any status, is an offer taken meanwhile
//!   (today a 404 `invalid_args` whose `msg` starts `no_such_ask`; third parties saw 400 and
//!   410): [`ApiError::taken`], so the caller takes the next offer.
//! - 401 and 403 refuse the key; so does a 404 saying `Invalid user key`, and any 404 on a
//!   call whose path names no id (the user, search and list calls): there a 404 can only be
//!   the API refusing the caller, never "nothing there".
//! - 410 is an endpoint the service no longer serves (`deprecated_endpoint`): an error that
//!   names the endpoint, never an empty answer.
//! - 429 and every 5xx are passing ([`ApiError::transient`]); a 404 on a call that names an
//!   id is that thing being gone, which the caller reads itself.

use reqwest::StatusCode;
use serde_json::Value;

/// How often a `request_logs` result URL is fetched before giving up (as the CLI does).
pub const LOG_TRIES: usize = 30;

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
    /// 410: the service no longer serves this endpoint.
    #[error("the Vast.ai API no longer serves {endpoint} (410 {code}){msg}")]
    EndpointGone {
        endpoint: String,
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

/// The code an offer taken meanwhile carries, in `error` or in `msg`.
pub const NO_SUCH_ASK: &str = "no_such_ask";

impl ApiError {
    /// Worth trying again (now or later): rate limited, a server error, or not reached.
    pub fn transient(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::LogsNotReady(_) => true,
            Self::Refused { status, .. } => *status == 429 || (500..=599).contains(status),
            _ => false,
        }
    }

    /// Rate limited (429): the API did nothing, so the same request may go again.
    pub fn rate_limited(&self) -> bool {
        matches!(self, Self::Refused { status: 429, .. })
    }

    /// The instance asked about does not exist (any more).
    pub fn gone(&self) -> bool {
        matches!(self, Self::Refused { status: 404, .. }) && !self.taken()
    }

    /// The offer was taken by someone else meanwhile (`no_such_ask`, whatever the status).
    pub fn taken(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == NO_SUCH_ASK)
    }
}

/// The API's words in an error body (`msg`, `message` or the text itself).
pub fn message(v: &Value) -> String {
    v.get("msg")
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| match v {
            Value::String(s) => s.trim().to_string(),
            other => other.to_string(),
        })
}

/// What an answer means: `Ok` for a success, and for a 404 on a call whose path names an
/// id (the caller reads that as gone); otherwise the error, by the rules in the module doc.
/// `endpoint` is `METHOD /path` without the query, for the words of a 410.
pub fn classify(
    status: StatusCode,
    value: &Value,
    endpoint: &str,
    names_id: bool,
) -> Result<(), ApiError> {
    let code = value
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let msg = message(value);
    let has = |needle: &str| code.contains(needle) || msg.contains(needle);
    let failed = !status.is_success() || value.get("success") == Some(&Value::Bool(false));
    if failed && has(NO_SUCH_ASK) {
        return Err(ApiError::Refused {
            status: status.as_u16(),
            code: NO_SUCH_ASK.into(),
            msg,
        });
    }
    let key_refused = msg.to_ascii_lowercase().contains("invalid user key");
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(ApiError::Unauthorized(format!("{status} {msg}")))
        }
        StatusCode::NOT_FOUND if key_refused || !names_id => {
            Err(ApiError::Unauthorized(format!("{status} {msg}")))
        }
        StatusCode::GONE => Err(ApiError::EndpointGone {
            endpoint: endpoint.to_string(),
            code: code.to_string(),
            // Its own words only, when it has any beside the code.
            msg: value
                .get("msg")
                .or_else(|| value.get("message"))
                .and_then(Value::as_str)
                .map(|m| format!(": {m}"))
                .unwrap_or_default(),
        }),
        s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
        s => Err(ApiError::Refused {
            status: s.as_u16(),
            code: code.to_string(),
            msg,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIST: &str = "GET /api/v1/instances/";

    #[test]
    fn no_such_ask_is_a_taken_offer_in_error_or_msg_at_any_status() {
        let today = json!({"error": "invalid_args", "msg": "no_such_ask  Instance type by id 123 is not available."});
        let older = json!({"success": false, "error": "no_such_ask", "msg": "Offer 5 is no longer available."});
        for (status, body) in [(404, &today), (410, &older), (400, &older), (404, &older)] {
            let e = classify(StatusCode::from_u16(status).unwrap(), body, "PUT", true).unwrap_err();
            assert!(e.taken(), "{status} {body}: {e:?}");
            assert!(!e.gone() && !e.transient());
        }
    }

    #[test]
    fn a_404_refuses_the_key_where_no_id_is_named_or_it_says_so() {
        let body = json!({"success": false, "msg": "Invalid user key"});
        for names_id in [false, true] {
            let e = classify(StatusCode::NOT_FOUND, &body, LIST, names_id).unwrap_err();
            assert!(matches!(e, ApiError::Unauthorized(_)), "{e:?}");
            assert!(e.to_string().contains("config/vast_api/api_key"));
        }
        // Without the words: an auth error on a list, a thing gone on a call naming an id.
        let plain = json!({"error": "not_found"});
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, &plain, LIST, false),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(classify(StatusCode::NOT_FOUND, &plain, "GET /instances/1/", true).is_ok());
    }

    #[test]
    fn a_410_names_the_endpoint_and_is_never_an_empty_answer() {
        let body = json!({"error": "deprecated_endpoint"});
        let e = classify(StatusCode::GONE, &body, "GET /api/v0/instances/", false).unwrap_err();
        assert!(e.to_string().contains("GET /api/v0/instances/"), "{e}");
        assert!(e.to_string().contains("deprecated_endpoint"), "{e}");
        assert!(!e.transient());
    }

    #[test]
    fn rate_limits_and_server_errors_are_transient() {
        let text = Value::String("API requests too frequent".into());
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &text, LIST, false).unwrap_err();
        assert!(e.transient() && e.rate_limited());
        let e = classify(StatusCode::BAD_GATEWAY, &text, LIST, false).unwrap_err();
        assert!(e.transient() && !e.rate_limited());
    }
}
