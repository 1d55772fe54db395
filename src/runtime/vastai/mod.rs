//! Kernels on rented Vast.ai GPU instances: the second [`Runtime`], beside Docker, as the
//! Ponos agent's Vast.ai mode. Each kernel is one instance with one GPU, running the
//! kernel's image with its command and the environment a Docker kernel gets, plus
//! `TASK_BOOTSTRAP=true` and `TASK_PARENTS` (JSON of parent task id → slug).
//!
//! - [`api`]: the REST API (bearer auth, pacing, retries, how answers are read);
//! - `budget`: the $/h committed (instances held, offers being ordered) and the rentals in
//!   progress;
//! - `rules`: what a kernel must be to run here, and the service's input limits, checked
//!   before any call;
//! - [`offers`]: the offer query, the create body, and how the exit code is learned;
//! - [`provision`]: ordering (never renting twice), waiting for the instance;
//! - [`watch`]: one poll loop for all instances (the API has no events), finishing ended
//!   instances, shipping logs;
//! - [`logs`]: logs shipped to S3.
//!
//! Instances are labelled `deckhand:<namespace>:<agent>:<kernel>:<token>`, so after a
//! restart the agent finds its own again; one no record knows is destroyed (a leaked
//! instance costs money), at start-up and, once recovery is done, by the poll loop: there an
//! instance is a leak when no live kernel's handle names it and no rental in progress
//! carries its token. The handle keeps the instance and offer ids, the GPU, the price
//! and the token. Suspend, resume, signal, exec and files are not supported.

pub mod api;
mod budget;
mod handle;
mod instances;
pub mod logs;
pub mod offers;
pub mod provision;
mod rules;
pub mod watch;

use handle::{handle_facts, handle_kernel};
pub use handle::{label, parse_label};
use instances::Seen;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{ConstantBuilder, Retryable};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{broadcast, watch as tokio_watch};

use crate::config::ClusterConfig;
use crate::runtime::Adopted;
use crate::runtime::Launch;
use crate::runtime::{
    Background, Capabilities, Chunk, ChunkStream, EventStream, Handle, Owned, Reporter, Runtime,
    RuntimeError, RuntimeEvent, Started, Status,
};
use crate::spec::{Spec, SpecError};
use crate::util::now_ms;
use crate::util::secret::Secret;
use api::{Api, ApiError};
use offers::without_marker;
use provision::api_error;

pub const NAME: &str = "vastai";

/// How long after a destroy a listing may still show the instance; one shown later is
/// destroyed again as a leak.
const DESTROY_SETTLES: Duration = Duration::from_secs(30);

/// What the API said of the key last time it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum KeyState {
    #[default]
    Unknown,
    Good,
    Refused(String),
}

/// Cheap to clone: the state is shared.
#[derive(Clone)]
pub struct VastRuntime {
    namespace: String,
    agent_id: String,
    config: tokio_watch::Receiver<Arc<ClusterConfig>>,
    /// The API client for the current URL and key.
    #[allow(clippy::type_complexity)]
    api: Arc<Mutex<Option<(String, Secret, Arc<Api>)>>>,
    key_state: Arc<Mutex<KeyState>>,
    events: broadcast::Sender<RuntimeEvent>,
    /// Instance id → what is known of it.
    seen: Arc<Mutex<HashMap<u64, Seen>>>,
    /// Rentals in progress, by the token of their label → the $/h reserved for the offer
    /// being ordered (0 between orders). An instance of theirs is no leak yet.
    renting: Arc<Mutex<HashMap<String, f64>>>,
    /// `<scratch root>/.deckhand/vastai-logs/`: the final output of each ended kernel, for
    /// `logs` when no S3 shipping is configured.
    logs_dir: std::path::PathBuf,
}

impl VastRuntime {
    pub fn new(
        config: tokio_watch::Receiver<Arc<ClusterConfig>>,
        namespace: &str,
        agent_id: &str,
        state_dir: &std::path::Path,
    ) -> Self {
        Self {
            logs_dir: state_dir.join(".deckhand/vastai-logs"),
            namespace: namespace.to_string(),
            agent_id: agent_id.to_string(),
            config,
            api: Arc::new(Mutex::new(None)),
            key_state: Arc::new(Mutex::new(KeyState::Unknown)),
            events: broadcast::channel(1024).0,
            seen: Arc::new(Mutex::new(HashMap::new())),
            renting: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The API client for `cfg`'s URL and key (kept while they stay the same); refused
    /// while the key is unset or was refused by the API.
    fn api(&self, cfg: &ClusterConfig) -> Result<Arc<Api>, RuntimeError> {
        let vs = &cfg.vast;
        if !vs.enabled() {
            return Err(RuntimeError::Precondition(
                "the vastai runtime needs config/vast_api/api_key".into(),
            ));
        }
        if let KeyState::Refused(why) = &*self.key_state.lock() {
            return Err(RuntimeError::Precondition(why.clone()));
        }
        let mut cached = self.api.lock();
        if let Some((url, key, api)) = cached.as_ref() {
            if *url == vs.api_url && *key == vs.api_key {
                return Ok(api.clone());
            }
        }
        let api = Arc::new(
            Api::new(&vs.api_url, vs.api_key.expose())
                .map_err(|e| RuntimeError::Unavailable(e.to_string()))?,
        );
        *cached = Some((vs.api_url.clone(), vs.api_key.clone(), api.clone()));
        Ok(api)
    }

    /// A client for `cfg` whatever the key's state (to check the key itself).
    fn api_unchecked(&self, cfg: &ClusterConfig) -> Result<Api, RuntimeError> {
        Api::new(&cfg.vast.api_url, cfg.vast.api_key.expose())
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))
    }

    fn current(&self) -> Arc<ClusterConfig> {
        self.config.borrow().clone()
    }

    fn send(&self, ev: RuntimeEvent) {
        let _ = self.events.send(ev);
    }
}

#[async_trait]
impl Runtime for VastRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn backend(&self) -> &'static str {
        "Vast.ai API"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn enabled(&self, cfg: &ClusterConfig) -> bool {
        cfg.vast.enabled()
    }

    fn validate(&self, spec: &Spec, cfg: &ClusterConfig) -> Result<(), SpecError> {
        self.check(spec, cfg)
    }

    fn admit(&self, live: &[&Launch], cfg: &ClusterConfig) -> Result<(), RuntimeError> {
        let vs = &cfg.vast;
        let mine: Vec<&&Launch> = live.iter().filter(|r| r.runtime == NAME).collect();
        if mine.len() as u32 >= vs.max_instances {
            return Err(RuntimeError::Exhausted(format!(
                "vast_api/max_instances: all {} instances of this agent are in use",
                vs.max_instances
            )));
        }
        if let Some(total) = vs.max_dph_total {
            let used: f64 = mine
                .iter()
                .filter_map(|r| r.handle.as_ref())
                .map(|h| handle_facts(h).3)
                .sum();
            if used >= total - 1e-9 {
                return Err(RuntimeError::Exhausted(format!(
                    "vast_api/max_dph_total: ${used:.3}/h of ${total:.3}/h is in use"
                )));
            }
        }
        Ok(())
    }

    /// The market and the budget now. An API that does not answer (a 429 storm, 5xx, down)
    /// refuses nothing: the kernel is taken and waits PREPARING until it answers.
    async fn quote(&self, spec: &Spec, cfg: &ClusterConfig) -> Result<(), RuntimeError> {
        match self.affordable(spec, cfg).await {
            Err(RuntimeError::Unavailable(e)) => {
                tracing::info!(error = %e, "Vast.ai offers not searched now; the kernel will wait PREPARING until the API answers");
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    fn capacity(&self, cfg: &ClusterConfig) -> Option<u32> {
        Some(cfg.vast.max_instances)
    }

    fn describe(&self, rec: &Launch) -> BTreeMap<String, String> {
        let Some(h) = &rec.handle else {
            return BTreeMap::new();
        };
        let (instance, offer, gpu, dph, _) = handle_facts(h);
        let end = if rec.finished_at_ms > 0 {
            rec.finished_at_ms
        } else {
            now_ms()
        };
        let hours = if rec.started_at_ms > 0 {
            (end - rec.started_at_ms).max(0) as f64 / 3_600_000.0
        } else {
            0.0
        };
        BTreeMap::from([
            ("instance_id".into(), instance.to_string()),
            ("offer_id".into(), offer.to_string()),
            ("gpu".into(), gpu),
            ("dph".into(), format!("{dph:.3}")),
            ("cost_so_far".into(), format!("{:.6}", dph * hours)),
        ])
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        let api = self.api(&self.current())?;
        api.check_key().await.map_err(api_error)
    }

    async fn prepare(
        &self,
        _rec: &Launch,
        _cfg: &ClusterConfig,
        _r: &Reporter,
    ) -> Result<(), RuntimeError> {
        // The instance's host pulls the image.
        Ok(())
    }

    async fn create(
        &self,
        rec: &Launch,
        cfg: &ClusterConfig,
        report: &Reporter,
    ) -> Result<Handle, RuntimeError> {
        self.provision(rec, cfg, report).await
    }

    async fn start(
        &self,
        _rec: &Launch,
        _h: &Handle,
        _cfg: &ClusterConfig,
    ) -> Result<Started, RuntimeError> {
        // Provisioning waited until the instance ran.
        Ok(Started {
            started_at_ms: now_ms(),
            follow: Vec::new(),
        })
    }

    async fn stop(&self, handle: &Handle, _grace: Duration) -> Result<(), RuntimeError> {
        let cfg = self.current();
        let api = self.api(&cfg)?;
        let (instance, ..) = handle_facts(handle);
        let kernel = Some(handle_kernel(handle)).filter(|k| !k.is_empty());
        if let Some(kernel) = &kernel {
            if let Ok(text) = api.logs(instance, 100_000).await {
                self.keep_output(&cfg, kernel, &without_marker(&text)).await;
            }
        }
        self.destroy_instance(&api, instance)
            .await
            .map_err(api_error)?;
        let st = Status {
            exists: true,
            started_at_ms: 1,
            finished_at_ms: now_ms(),
            ..Status::default()
        };
        self.set_ended(instance, st.clone());
        if let Some(kernel_id) = kernel {
            self.send(RuntimeEvent {
                kernel_id,
                instance: handle.instance.clone(),
                what: crate::runtime::Observed::Changed(st),
            });
        }
        Ok(())
    }

    async fn destroy(&self, handle: &Handle) -> Result<(), RuntimeError> {
        let api = self.api(&self.current())?;
        let (instance, ..) = handle_facts(handle);
        let r = self.destroy_instance(&api, instance).await;
        self.forget(instance);
        r.map_err(api_error)
    }

    async fn release(&self, rec: &Launch, _used: bool, _cfg: &ClusterConfig) {
        let _ = std::fs::remove_file(self.logs_dir.join(format!("{}.log", rec.id)));
    }

    async fn status(&self, handle: &Handle) -> Result<Status, RuntimeError> {
        let cfg = self.current();
        let api = self.api(&cfg)?;
        let (instance, _, _, dph, token) = handle_facts(handle);
        if let Some(st) = self.ended(instance) {
            return Ok(st);
        }
        let row = api.instance(instance).await.map_err(api_error)?;
        let Some(row) = row else {
            return Ok(Status {
                error: format!("Vast.ai instance {instance} is gone (destroyed outside deckhand)"),
                ..Status::default()
            });
        };
        let kernel = row
            .label
            .as_deref()
            .and_then(|l| parse_label(&self.namespace, &self.agent_id, l))
            .map(|(k, _)| k)
            .unwrap_or_default();
        self.track(instance, &kernel, dph);
        Ok(match row.actual_status.as_deref() {
            Some("running") => Status {
                exists: true,
                running: true,
                started_at_ms: row.start_date.map(|s| (s * 1000.0) as i64).unwrap_or(1),
                ..Status::default()
            },
            // Not concluded (its output not read yet): nothing is known to change; the
            // next look tries again.
            Some("exited" | "stopped") => self
                .finish(&api, &cfg, &kernel, &row, &token)
                .await
                .map_err(api_error)?,
            _ if row.lost() => self.lose(&api, &kernel, &row).await,
            _ => Status {
                exists: true,
                ..Status::default()
            },
        })
    }

    fn events(&self) -> EventStream {
        let rx = self.events.subscribe();
        Box::pin(
            tokio_stream::wrappers::BroadcastStream::new(rx)
                .filter_map(|r| futures::future::ready(r.ok().map(Ok))),
        )
    }

    async fn list_owned(&self) -> Result<Vec<Owned>, RuntimeError> {
        let cfg = self.current();
        if !cfg.vast.enabled() {
            return Ok(Vec::new());
        }
        let api = self.api(&cfg)?;
        let rows = api
            .instances(&serde_json::json!({}))
            .await
            .map_err(api_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let (kernel_id, token) =
                    parse_label(&self.namespace, &self.agent_id, r.label.as_deref()?)?;
                Some(Owned {
                    kernel_id: kernel_id.clone(),
                    handle: Handle {
                        runtime: NAME.into(),
                        version: 1,
                        instance: r.id.to_string(),
                        data: serde_json::json!({
                            "kernel_id": kernel_id,
                            "gpu_name": r.gpu_name.unwrap_or_default(),
                            "dph": r.dph_total.unwrap_or_default(),
                            "token": token,
                        }),
                    },
                })
            })
            .collect())
    }

    async fn adopt(
        &self,
        owned: &Owned,
        _cfg: &ClusterConfig,
    ) -> Result<Option<Adopted>, RuntimeError> {
        // A rented instance that no record knows only costs money: destroy it.
        let api = self.api(&self.current())?;
        let (instance, ..) = handle_facts(&owned.handle);
        tracing::warn!(kernel_id = %owned.kernel_id, instance, "destroying a Vast.ai instance labelled for this agent that no kernel record knows");
        self.destroy_instance(&api, instance)
            .await
            .map_err(api_error)?;
        Ok(None)
    }

    fn logs(&self, handle: &Handle, follow: bool, _tail: u32) -> Result<ChunkStream, RuntimeError> {
        let (instance, ..) = handle_facts(handle);
        let kernel = handle_kernel(handle);
        let me = self.clone();
        let every = self.current().vast.log_interval.min(Duration::from_secs(5));
        // State: bytes sent so far, and whether the stream is done.
        let s = futures::stream::unfold((0usize, false), move |(sent, done)| {
            let me = me.clone();
            let kernel = kernel.clone();
            async move {
                if done {
                    return None;
                }
                if sent > 0 {
                    tokio::time::sleep(every).await;
                }
                let ended = me.is_ended(instance);
                let text = match me.read_logs(&kernel, instance).await {
                    Ok(t) => t,
                    Err(e) => return Some((Err(e), (sent, true))),
                };
                let new = text.get(sent..).unwrap_or_default().to_string();
                let finished = !follow || ended;
                let chunk = Chunk {
                    data: new.into_bytes().into(),
                    stderr: false,
                };
                Some((Ok(chunk), (text.len().max(sent).max(1), finished)))
            }
        });
        Ok(Box::pin(s.filter(|c| {
            futures::future::ready(!matches!(c, Ok(c) if c.data.is_empty()))
        })))
    }

    fn background(self: Arc<Self>, ctx: Background) -> Option<BoxFuture<'static, ()>> {
        Some(self.watch(ctx).boxed())
    }
}
