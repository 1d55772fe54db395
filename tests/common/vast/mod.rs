//! A local stand-in for the Vast.ai REST API. Vast.ai itself cannot be reached from the
//! test machines, so tests start this server, built to behave like the documented API as it
//! answers today (see `shared/brief/reference/vastai-api.md`). Each instance is a real local
//! Docker container of the requested image, env and args, so those and the exit are real.
//!
//! Which documented behaviour each answer follows:
//! | answer | source |
//! | --- | --- |
//! | bearer auth, `?api_key=` still taken | `vast.py` `apiheaders`; docs (vast.ai/developers/api) |
//! | a wrong or missing key: 404 `{"success": false, "msg": "Invalid user key"}` (older: 401) | docs' OpenAPI `search_offers.yaml` |
//! | search: `POST /bundles/`, `PUT /search/asks/`, `GET /bundles/?q=`; ops `eq neq gt gte lt lte in notin`; `order`, `limit` (≤ 64), `allocated_storage` priced into `dph_total` (default 5 GB) | `search__offers`, `api/offers.py`; docs; 64 a third-party observation |
//! | rent: `PUT /asks/{id}/` → `{"success": true, "new_contract": id}` | `create__instance` help text |
//! | a taken or unknown offer: 404 `invalid_args` with `msg` `no_such_ask  Instance type by id N is not available.` (older: 410/404 `no_such_ask`) | docs' OpenAPI; third parties |
//! | a create that rented and lost its reply: 502 | the reference: a 5xx create may have rented |
//! | v0 listing `GET /instances/`: 410 `{"error": "deprecated_endpoint"}` (older: answered) | skypilot#10517, dstack#3969/#4031 |
//! | v1 listing `GET /api/v1/instances/`: `select_filters`, `order_by`, ≤ 25 rows a page, `next_token` | `_fetch_all_instances_v1`, `show_instances_v1` |
//! | show: `{"instances": row}`; destroyed: `null`, 404, `cur_state` unloaded or `intended_status` destroyed | `show__instance`, `instance_exist` |
//! | statuses `null → loading → running → exited/stopped`; `offline`/`unknown` when the host says so | docs, SKILL.md |
//! | `request_logs` → `result_url`, 404 until uploaded, no auth | `logs`, `instances.logs` |
//! | 429 plain text `API requests too frequent`, no Retry-After; per-endpoint intervals | docs, rate-limits-and-errors |
//! | 500 storms, the service down, hanging | not documented: the failures any HTTP service has |
//!
//! [`VastStandIn::start`] serves on a free loopback port, on its own thread and Tokio
//! runtime (so a test that blocks its own thread on a CLI call does not stall it). Its
//! knobs change behaviour while it runs; its records (requests, rentals, destroyed ids,
//! instances and their containers) are for assertions. Dropping it stops the server and
//! removes every container it made, also when the test failed.
//!
//! Files: `offers.rs` (offer rows, the query language), `instances.rs` (instance rows, the
//! container), `state.rs` (shared state, provisioning), `api.rs` (routes, auth, 429s, search),
//! `rent.rs` (renting an offer), `control.rs` (instance routes, logs), `server.rs`
//! (the listener that can go down and come back), `records.rs` (what tests assert on),
//! `client.rs` (a CLI-like client for tests), `e2e.rs` (a deckhand cluster renting from it).
mod api;
mod client;
mod control;
pub mod e2e;
mod instances;
mod offers;
mod records;
mod rent;
mod server;
mod state;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

// Not every test binary that includes the harness names these.
#[allow(unused_imports)]
pub use client::VastClient;
#[allow(unused_imports)]
pub use instances::Instance;
#[allow(unused_imports)]
pub use offers::{Offer, Provision, MAX_OFFERS, OFFER_FIELDS};
#[allow(unused_imports)]
pub use state::{DestroyedAnswer, RecordedRequest, TakenAnswer, WrongKey};

use server::Mode;
use state::{Shared, State};

/// The per-endpoint minimum intervals the docs preview gives (`"METHOD /path"`, the
/// path as routed, without its trailing slash). Off unless a test enables them.
/// The v1 listing is given the instance listing's figure (the docs name none of its own).
pub const DOCUMENTED_RATE_LIMITS: &[(&str, Duration)] = &[
    ("GET /api/v0/instances", Duration::from_secs(2)),
    ("GET /api/v1/instances", Duration::from_secs(2)),
    ("PUT /api/v0/instances/{id}", Duration::from_secs(1)),
    ("DELETE /api/v0/instances/{id}", Duration::from_secs(3)),
    ("PUT /api/v0/asks/{id}", Duration::from_millis(4500)),
];

/// How a stand-in starts; every field but `namespace` can also be changed while it runs.
#[derive(Clone, Debug)]
pub struct VastConfig {
    pub api_key: String,
    pub offers: Vec<Offer>,
    /// How long a new instance reads `actual_status: null` before its container is made,
    /// for offers without their own [`Provision`]. Default 300 ms.
    pub provision_delay: Duration,
    /// How many GETs of a `request_logs` result URL answer 404 first. Default 2.
    pub logs_not_ready_gets: usize,
    /// Also label containers `io.deckhand.namespace=<ns>` (the test's namespace).
    pub namespace: Option<String>,
    /// Whether destroying an instance puts its offer back on the market (the real
    /// service lists a freed machine again). Default false: a rented offer stays rented.
    pub release_on_destroy: bool,
    /// The answers the service gave before 2026 (401 for a wrong key, 410 `no_such_ask`, the
    /// v0 listing answered) instead of today's. Default false.
    pub older_answers: bool,
}

impl VastConfig {
    pub fn new(api_key: &str) -> Self {
        Self {
            api_key: api_key.into(),
            offers: Vec::new(),
            provision_delay: Duration::from_millis(300),
            logs_not_ready_gets: 2,
            namespace: None,
            release_on_destroy: false,
            older_answers: false,
        }
    }
    /// The answers of before 2026; see [`VastConfig::older_answers`](Self).
    pub fn older_answers(mut self) -> Self {
        self.older_answers = true;
        self
    }
    pub fn offers(mut self, offers: Vec<Offer>) -> Self {
        self.offers = offers;
        self
    }
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.into());
        self
    }
    pub fn provision_delay(mut self, d: Duration) -> Self {
        self.provision_delay = d;
        self
    }
    pub fn logs_not_ready_gets(mut self, n: usize) -> Self {
        self.logs_not_ready_gets = n;
        self
    }
    pub fn release_on_destroy(mut self, yes: bool) -> Self {
        self.release_on_destroy = yes;
        self
    }
}

/// The running stand-in (a guard: dropping it stops the server and removes its
/// containers).
pub struct VastStandIn {
    shared: Arc<Shared>,
    generation: Mutex<u64>,
    applied: watch::Receiver<u64>,
    runtime: tokio::runtime::Handle,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl VastStandIn {
    /// Starts the stand-in on a free loopback port; returns once it accepts connections.
    pub fn start(config: VastConfig) -> Self {
        // reqwest (rustls without a built-in provider) needs one for any client a test
        // makes; ring is what the rest of the crate uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        static N: AtomicU32 = AtomicU32::new(0);
        let sid = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::common::free_port();
        let (mode_tx, mode_rx) = watch::channel((Mode::Up, 0));
        let (applied_tx, applied) = watch::channel(u64::MAX);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                api_key: config.api_key,
                wrong_key: if config.older_answers {
                    WrongKey::Unauthorized
                } else {
                    WrongKey::NotFound
                },
                taken_answer: if config.older_answers {
                    TakenAnswer::NoSuchAsk410
                } else {
                    TakenAnswer::InvalidArgs404
                },
                v0_listing: config.older_answers,
                lose_create_replies: 0,
                destroyed_answer: DestroyedAnswer::Null,
                retired: Default::default(),
                offers: config.offers,
                snatched: Default::default(),
                rentals: Default::default(),
                rent_attempts: Default::default(),
                rented_order: Vec::new(),
                instances: Default::default(),
                // Ids like the real ones (7-8 digits), distinct per stand-in.
                next_id: 20_000_000 + u64::from(port) * 100,
                destroyed: Vec::new(),
                requests: Vec::new(),
                storm_left: 0,
                storm_until: None,
                storm_status: 429,
                rate_limits: Default::default(),
                last_hit: Default::default(),
                logs: Default::default(),
                logs_not_ready_gets: config.logs_not_ready_gets,
                provision_delay: config.provision_delay,
                release_on_destroy: config.release_on_destroy,
            }),
            sid,
            namespace: config.namespace,
            port,
            dir: dir.path().to_path_buf(),
            mode: mode_tx,
            closing: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
        });
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let router = api::router(shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vast-standin-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("stand-in runtime");
                let _ = handle_tx.send(rt.handle().clone());
                rt.block_on(server::run(port, router, mode_rx, applied_tx));
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("stand-in thread");
        let runtime = handle_rx.recv().expect("stand-in runtime handle");
        let s = Self {
            shared,
            generation: Mutex::new(0),
            applied,
            runtime,
            thread: Some(thread),
            _dir: dir,
        };
        s.wait_applied(0);
        s
    }

    /// The id in its containers' `io.deckhand.test.vast` label.
    pub fn id(&self) -> &str {
        &self.shared.sid
    }
    pub fn port(&self) -> u16 {
        self.shared.port
    }
    /// The server's base URL, as `VAST_URL` would be (`http://127.0.0.1:PORT`); the API is
    /// under `/api/v0`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }
    /// `url()` + `/api/v0`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v0", self.url())
    }
    pub fn api_key(&self) -> String {
        self.shared.lock().api_key.clone()
    }

    // ---- knobs ----

    /// Changes the accepted API key (requests with the old one are refused as a wrong key).
    pub fn set_api_key(&self, key: &str) {
        self.shared.lock().api_key = key.into();
    }
    /// How a wrong or missing key is answered from now on.
    pub fn set_wrong_key(&self, answer: WrongKey) {
        self.shared.lock().wrong_key = answer;
    }
    /// How the rental of a taken or unknown offer is answered from now on.
    pub fn set_taken_answer(&self, answer: TakenAnswer) {
        self.shared.lock().taken_answer = answer;
    }
    /// The next `n` successful rentals rent, then answer 502 Bad Gateway (the reply lost
    /// after its effect, as behind a failing proxy).
    pub fn lose_create_replies(&self, n: usize) {
        self.shared.lock().lose_create_replies = n;
    }
    /// `endpoint` (`"GET /api/v1/instances"`, as in [`DOCUMENTED_RATE_LIMITS`]) answers 410
    /// `deprecated_endpoint` from now on, as the v0 listing does (or serves again).
    pub fn retire(&self, endpoint: &str, retired: bool) {
        let key = endpoint.trim_end_matches('/').to_string();
        let mut st = self.shared.lock();
        if retired {
            st.retired.insert(key);
        } else {
            st.retired.remove(&key);
        }
    }
    /// What showing a destroyed instance answers from now on.
    pub fn set_destroyed_answer(&self, answer: DestroyedAnswer) {
        self.shared.lock().destroyed_answer = answer;
    }
    /// Instance `id`'s host reports `status` (`offline`, `unknown`) with `msg` from now on,
    /// whatever its container does (a host that lost the machine, or stopped reporting).
    pub fn host_reports(&self, id: u64, status: &str, msg: Option<&str>) {
        if let Some(i) = self.shared.lock().instances.get_mut(&id) {
            i.host_status = Some((status.into(), msg.map(str::to_string)));
        }
    }
    /// Replaces the offer list.
    pub fn set_offers(&self, offers: Vec<Offer>) {
        self.shared.lock().offers = offers;
    }
    pub fn add_offer(&self, offer: Offer) {
        self.shared.lock().offers.push(offer);
    }
    pub fn remove_offer(&self, id: u64) {
        self.shared.lock().offers.retain(|o| o.id() != id);
    }
    /// Sets one field of offer `id`'s row (`rented`, `dph_total`, …).
    pub fn set_offer_field(&self, id: u64, field: &str, value: impl Into<Value>) {
        let mut st = self.shared.lock();
        if let Some(o) = st.offers.iter_mut().find(|o| o.id() == id) {
            o.row.insert(field.into(), value.into());
        }
    }
    /// Offer `id` is taken by someone else meanwhile: it still shows in searches, its next
    /// rental answers `no_such_ask` (as [`TakenAnswer`] says), and from then on it reads as
    /// rented.
    pub fn snatch_offer(&self, id: u64) {
        self.shared.lock().snatched.insert(id);
    }
    /// How instances rented from offer `id` from now on come up.
    pub fn set_provision(&self, id: u64, p: Provision) {
        let mut st = self.shared.lock();
        if let Some(o) = st.offers.iter_mut().find(|o| o.id() == id) {
            o.provision = Some(p);
        }
    }
    /// The default provisioning delay (offers without their own [`Provision`]).
    pub fn set_provision_delay(&self, d: Duration) {
        self.shared.lock().provision_delay = d;
    }
    pub fn set_logs_not_ready_gets(&self, n: usize) {
        self.shared.lock().logs_not_ready_gets = n;
    }
    pub fn set_release_on_destroy(&self, yes: bool) {
        self.shared.lock().release_on_destroy = yes;
    }
    /// The next `n` API requests answer 429 `API requests too frequent` (no Retry-After).
    pub fn storm_429(&self, n: usize) {
        let mut st = self.shared.lock();
        st.storm_left = n;
        st.storm_status = 429;
    }
    /// Every API request answers 429 for `d` from now.
    pub fn storm_429_for(&self, d: Duration) {
        let mut st = self.shared.lock();
        st.storm_until = Some(Instant::now() + d);
        st.storm_status = 429;
    }
    /// The next `n` API requests answer 500 `Internal Server Error`, as the service does
    /// when its backend fails.
    pub fn storm_500(&self, n: usize) {
        let mut st = self.shared.lock();
        st.storm_left = n;
        st.storm_status = 500;
    }
    /// Every API request answers 500 for `d` from now.
    pub fn storm_500_for(&self, d: Duration) {
        let mut st = self.shared.lock();
        st.storm_until = Some(Instant::now() + d);
        st.storm_status = 500;
    }
    /// Ends any 429 storm.
    pub fn calm(&self) {
        let mut st = self.shared.lock();
        st.storm_left = 0;
        st.storm_until = None;
    }
    /// Sets a minimum interval between requests to one endpoint (`"PUT /api/v0/asks/{id}"`,
    /// as in [`DOCUMENTED_RATE_LIMITS`]); sooner requests answer 429.
    pub fn set_rate_limit(&self, endpoint: &str, interval: Duration) {
        let key = endpoint.trim_end_matches('/').to_string();
        self.shared.lock().rate_limits.insert(key, interval);
    }
    /// Enables [`DOCUMENTED_RATE_LIMITS`].
    pub fn documented_rate_limits(&self) {
        for (endpoint, interval) in DOCUMENTED_RATE_LIMITS {
            self.set_rate_limit(endpoint, *interval);
        }
    }
    pub fn clear_rate_limits(&self) {
        let mut st = self.shared.lock();
        st.rate_limits.clear();
        st.last_hit.clear();
    }

    fn set_mode(&self, mode: Mode) -> u64 {
        let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        let _ = self.shared.mode.send((mode, *g));
        *g
    }

    fn wait_applied(&self, generation: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while *self.applied.borrow() == u64::MAX || *self.applied.borrow() < generation {
            assert!(
                Instant::now() < deadline,
                "vast stand-in did not apply its mode"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The service goes down: the listener and every open connection close (clients get
    /// refused connections) until [`up`](Self::up).
    pub fn down(&self) {
        let g = self.set_mode(Mode::Refusing);
        self.wait_applied(g);
    }
    /// The service answers again, on the same port.
    pub fn up(&self) {
        let g = self.set_mode(Mode::Up);
        self.wait_applied(g);
    }
    /// Connections are accepted and never answered until [`up`](Self::up) or
    /// [`down`](Self::down).
    pub fn hang(&self) {
        let g = self.set_mode(Mode::Hanging);
        self.wait_applied(g);
    }
    /// Down for `d`, then up again on the same port (returns at once).
    pub fn down_for(&self, d: Duration) {
        let g = self.set_mode(Mode::Refusing);
        self.wait_applied(g);
        let shared = self.shared.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(d).await;
            // Only if nothing changed the mode meanwhile.
            shared.mode.send_if_modified(|m| {
                let unchanged = m.1 == g;
                if unchanged {
                    *m = (Mode::Up, g);
                }
                unchanged
            });
        });
    }
}

impl Drop for VastStandIn {
    /// Stops the server and removes every container it made (waiting for `docker run`s in
    /// flight first), also when the test failed.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.shared.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.set_mode(Mode::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        instances::remove_all(&self.shared.sid);
    }
}
