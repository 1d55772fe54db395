//! The stand-in's shared state (offers, instances, knobs, the request record) and the two
//! things that change it outside a request: provisioning an instance in the background,
//! and reading instance status back from the real containers.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::instances::{self, Instance};
use super::offers::{Offer, Provision};
use super::server::Mode;

/// One request the stand-in received (result-URL fetches included).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, empty when none.
    pub query: String,
    /// The body as JSON; `Null` when empty, a JSON string when not JSON.
    pub body: Value,
    /// The key of `Authorization: Bearer <key>` (or `?api_key=`), if any.
    pub key: Option<String>,
    /// The status answered; 0 while in flight or when the connection was dropped.
    pub status: u16,
    pub at: Instant,
}

/// A `request_logs` result: the log text captured at request time, served at its URL
/// after `not_ready` 404s.
pub struct LogResult {
    pub text: String,
    pub not_ready: usize,
}

/// How the service answers a wrong or missing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrongKey {
    /// 404 `{"success": false, "msg": "Invalid user key"}`: the docs' OpenAPI
    /// (`search_offers.yaml` documents a 404 for a wrong key), as the service answers today.
    NotFound,
    /// 401 `not_authorized`: the older answer, still documented for some endpoints.
    Unauthorized,
}

/// How the service answers the rental of an offer that is gone or was never there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakenAnswer {
    /// 404 `{"error": "invalid_args", "msg": "no_such_ask  Instance type by id N is not
    /// available."}`: the shape the docs' OpenAPI gives, seen today.
    InvalidArgs404,
    /// 410 `{"error": "no_such_ask"}` for a taken offer, 404 `no_such_ask` for an unknown one:
    /// what third parties reported before.
    NoSuchAsk410,
}

/// What `GET /instances/{id}/` answers once the instance is destroyed; the official CLI's
/// `instance_exist` takes each of them as gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestroyedAnswer {
    /// `{"instances": null}` (`show__instance`).
    Null,
    /// 404 `no_such_instance`.
    NotFound,
    /// The row, with `cur_state` `unloaded` (the contract is gone).
    Unloaded,
    /// The row, with `intended_status` `destroyed` and `actual_status` `offline` while the
    /// contract winds down.
    Terminated,
}

pub struct State {
    pub api_key: String,
    pub wrong_key: WrongKey,
    pub taken_answer: TakenAnswer,
    /// Whether `GET /api/v0/instances/` still answers (before 2026) instead of 410.
    pub v0_listing: bool,
    /// The next this many successful rentals answer 502 after renting (a reply lost after
    /// its effect).
    pub lose_create_replies: usize,
    pub destroyed_answer: DestroyedAnswer,
    /// Routes (`"GET /api/v1/instances"`) that answer 410 `deprecated_endpoint`, as the
    /// service answers an endpoint it retired.
    pub retired: HashSet<String>,
    pub offers: Vec<Offer>,
    /// Offers that answer `no_such_ask` to the next rental (taken meanwhile).
    pub snatched: HashSet<u64>,
    pub rentals: HashMap<u64, usize>,
    pub rent_attempts: HashMap<u64, usize>,
    /// Offer ids in the order they were rented.
    pub rented_order: Vec<u64>,
    pub instances: BTreeMap<u64, Instance>,
    pub next_id: u64,
    pub destroyed: Vec<u64>,
    pub requests: Vec<RecordedRequest>,
    /// The next this many API requests answer 429.
    pub storm_left: usize,
    /// API requests answer 429 until then.
    pub storm_until: Option<Instant>,
    /// What a storm answers: 429 `API requests too frequent`, or 500 (a server error).
    pub storm_status: u16,
    /// Minimum interval per `"METHOD /path/template"` (trailing slash trimmed).
    pub rate_limits: HashMap<String, Duration>,
    pub last_hit: HashMap<String, Instant>,
    pub logs: HashMap<String, LogResult>,
    pub logs_not_ready_gets: usize,
    pub provision_delay: Duration,
    /// Whether a destroyed instance's offer is listed (rentable) again.
    pub release_on_destroy: bool,
}

pub struct Shared {
    pub state: Mutex<State>,
    /// This stand-in's id: the value of the `io.deckhand.test.vast` container label.
    pub sid: String,
    pub namespace: Option<String>,
    pub port: u16,
    /// Per-instance docker client config dirs (image_login) live under here.
    pub dir: PathBuf,
    pub mode: watch::Sender<(Mode, u64)>,
    /// Set when the guard drops: no new containers are created.
    pub closing: AtomicBool,
    /// `docker run`s in flight (the guard waits for them before removing containers).
    pub inflight: AtomicUsize,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not make the stand-in unusable for its cleanup.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the status of `ids`' containers and stores it in their rows.
pub async fn refresh(shared: &Shared, ids: &[u64]) {
    let containers: Vec<String> = {
        let st = shared.lock();
        ids.iter()
            .filter_map(|id| st.instances.get(id))
            .filter(|i| !i.destroyed)
            .filter_map(|i| i.container.clone())
            .collect()
    };
    if containers.is_empty() {
        return;
    }
    let states = instances::inspect(&containers).await;
    let mut st = shared.lock();
    for id in ids {
        let Some(inst) = st.instances.get_mut(id) else {
            continue;
        };
        let Some(c) = inst.container.clone() else {
            continue;
        };
        if inst.destroyed || inst.host_status.is_some() {
            continue;
        }
        let state = states.get(&c);
        inst.actual_status = Some(instances::actual_status(state, &inst.intended_status).into());
    }
}

/// Brings instance `id` up as its offer's [`Provision`] says: null, then `loading`, then a
/// real container (or stuck, or failed).
pub async fn provision(shared: Arc<Shared>, id: u64, how: Provision) {
    let set = |status: Option<&str>, msg: Option<String>| {
        let mut st = shared.lock();
        if let Some(i) = st.instances.get_mut(&id) {
            if !i.destroyed {
                i.actual_status = status.map(str::to_string);
                i.status_msg = msg;
            }
        }
    };
    let delay = match &how {
        Provision::Never => return,
        Provision::StuckLoading(d) => {
            tokio::time::sleep(*d).await;
            set(Some("loading"), Some("Pulling image".into()));
            return;
        }
        Provision::Fails(d, msg) => {
            tokio::time::sleep(*d).await;
            set(Some("created"), Some(msg.clone()));
            return;
        }
        Provision::After(d) => *d,
    };
    tokio::time::sleep(delay).await;
    set(Some("loading"), Some("Pulling image".into()));
    shared.inflight.fetch_add(1, Ordering::SeqCst);
    let result = create_container(&shared, id).await;
    shared.inflight.fetch_sub(1, Ordering::SeqCst);
    match result {
        Ok(Some(container)) => {
            let orphan = {
                let mut st = shared.lock();
                match st.instances.get_mut(&id) {
                    Some(i) if !i.destroyed => {
                        i.status_msg = Some(format!("success, running {}/{}", i.image, i.runtype));
                        i.actual_status = Some("running".into());
                        i.container = Some(container.clone());
                        false
                    }
                    _ => true,
                }
            };
            if orphan {
                // Destroyed while it was being created.
                let _ = instances::docker(None, &["rm".into(), "-f".into(), container], None).await;
            } else {
                refresh(&shared, &[id]).await;
            }
        }
        Ok(None) => {}
        Err(msg) => set(Some("created"), Some(msg)),
    }
}

/// Logs in (with image_login) and runs the instance's container; `Ok(None)` when the
/// instance was destroyed (or the stand-in is closing) before it started.
async fn create_container(shared: &Shared, id: u64) -> Result<Option<String>, String> {
    let inst = {
        let st = shared.lock();
        match st.instances.get(&id) {
            Some(i) if !i.destroyed => i.clone(),
            _ => return Ok(None),
        }
    };
    if shared.closing.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let mut config = None;
    if let Some(login) = inst.image_login.as_deref().filter(|l| !l.trim().is_empty()) {
        let (user, pass, registry) = instances::parse_login(login).ok_or_else(|| {
            format!("Error: bad image_login {login:?}: -u USER -p PASSWORD REGISTRY")
        })?;
        let dir = shared.dir.join(format!("docker-{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let args = ["login", &registry, "-u", &user, "--password-stdin"].map(String::from);
        instances::docker(Some(&dir), &args, Some(&pass))
            .await
            .map_err(|e| format!("Error response from daemon: {e}"))?;
        instances::docker(Some(&dir), &["pull".into(), inst.image.clone()], None)
            .await
            .map_err(|e| format!("Error response from daemon: {e}"))?;
        config = Some(dir);
    }
    let mut args = vec!["run".to_string(), "-d".into()];
    args.extend(inst.run_args(&shared.sid, shared.namespace.as_deref()));
    instances::docker(config.as_deref(), &args, None)
        .await
        .map(Some)
        .map_err(|e| {
            // `docker run` prints the daemon's refusal; the host reports it in status_msg.
            let line = e
                .lines()
                .find_map(|l| l.strip_prefix("docker: "))
                .unwrap_or(&e);
            if line.starts_with("Error") {
                line.to_string()
            } else {
                format!("Error response from daemon: {line}")
            }
        })
}
