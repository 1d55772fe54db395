//! Images for kernels: pulls with registry credentials, one at a time per image however many
//! kernels wait on it, with progress, timeouts, and a record of when each image was last
//! used so unused ones can be collected.
//!
//! A pull runs as its own task; kernels subscribe to its [`PullState`]. A pull that finished
//! after a kernel asked for its image serves that kernel too: ten kernels submitted at once
//! cause one pull, even when only some of them hold a creation permit at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{CreateImageOptions, RemoveImageOptions};
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::client::{Docker, EngineError};
use crate::config::cluster::Registry;
use crate::util::now_ms;
use crate::util::shutdown::Tasks;

/// How far a pull is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub layers_done: u32,
    pub layers_total: u32,
    /// Estimated time left, 0 when unknown or done.
    pub eta_ms: u64,
}

/// Why a pull failed, in words for the kernel's reason (never holding a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Unavailable(String),
}

/// What a pull's subscribers see.
#[derive(Debug, Clone, Default)]
pub struct PullState {
    pub progress: Progress,
    /// Set once, when the pull ends.
    pub done: Option<Result<(), PullError>>,
}

/// What a pull needs besides the image.
#[derive(Clone)]
pub struct PullOptions {
    pub registry: Option<Registry>,
    pub timeout: Duration,
    pub inactivity_timeout: Duration,
}

/// How often subscribers hear about progress while bytes move.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Finished pulls remembered for kernels that asked before they ended.
const REMEMBER_PULLS: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Pulls {
    running: HashMap<String, watch::Receiver<PullState>>,
    /// image → when its last pull ended and how.
    finished: HashMap<String, (Instant, Result<(), PullError>)>,
}

/// `<scratch-root>/.deckhand/images.json`: image reference → when a kernel last used it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UsageFile {
    images: BTreeMap<String, i64>,
}

pub struct Images {
    docker: Docker,
    pulls: Mutex<Pulls>,
    usage: Mutex<UsageFile>,
    usage_path: PathBuf,
    tasks: Tasks,
}

impl Images {
    pub fn new(docker: Docker, usage_path: PathBuf, tasks: Tasks) -> Arc<Self> {
        let usage = std::fs::read(&usage_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Arc::new(Self {
            docker,
            pulls: Mutex::new(Pulls::default()),
            usage: Mutex::new(usage),
            usage_path,
            tasks,
        })
    }

    /// The pull serving a kernel that asked for `image` at `asked`: the one running now, a
    /// finished one that ended after `asked`, or a new one.
    pub fn pull(
        self: &Arc<Self>,
        image: &str,
        asked: Instant,
        opts: PullOptions,
    ) -> watch::Receiver<PullState> {
        let mut p = self.pulls.lock();
        if let Some(rx) = p.running.get(image) {
            return rx.clone();
        }
        if let Some((ended, result)) = p.finished.get(image) {
            if *ended >= asked {
                return watch::channel(PullState {
                    progress: Progress::default(),
                    done: Some(result.clone()),
                })
                .1;
            }
        }
        let (tx, rx) = watch::channel(PullState::default());
        p.running.insert(image.to_string(), rx.clone());
        let me = self.clone();
        let image = image.to_string();
        let pull = async move {
            let begun = Instant::now();
            let result = me.run_pull(&image, &opts, &tx).await;
            let bytes = tx.borrow().progress.bytes_done;
            let failure = result.as_ref().err().map(|(reason, _)| *reason);
            crate::telemetry::counters::agent().pull_finished(begun.elapsed(), bytes, failure);
            let result = result.map_err(|(_, e)| e);
            if let Err(e) = &result {
                tracing::warn!(image = %image, error = %e, "image pull failed");
            } else {
                tracing::info!(image = %image, "image pulled");
            }
            let mut p = me.pulls.lock();
            p.running.remove(&image);
            let now = Instant::now();
            p.finished
                .retain(|_, (ended, _)| now.duration_since(*ended) < REMEMBER_PULLS);
            p.finished.insert(image, (now, result.clone()));
            drop(p);
            tx.send_modify(|s| s.done = Some(result));
        };
        // The pull serves every kernel waiting on it: it logs under the agent's span.
        // A pull still running when the agent stops is dropped (the engine ends it).
        self.tasks
            .spawn_until_stopped("pull", tracing::Instrument::in_current_span(pull));
        rx
    }

    async fn run_pull(
        &self,
        image: &str,
        opts: &PullOptions,
        tx: &watch::Sender<PullState>,
    ) -> Result<(), (&'static str, PullError)> {
        let credentials = opts.registry.as_ref().and_then(|r| {
            (!r.username.is_empty()).then(|| DockerCredentials {
                username: Some(r.username.clone()),
                password: Some(r.password.expose().to_string()),
                serveraddress: Some(r.host.clone()),
                ..Default::default()
            })
        });
        let from = match &opts.registry {
            Some(r) => format!("`{image}` from registry `{}` ({})", r.name, r.host),
            None => format!("`{image}`"),
        };
        let (repo, tag) = crate::util::image::ImageRef::split(image).pull_parts();
        let query = CreateImageOptions {
            from_image: Some(repo.to_string()),
            tag: tag.map(str::to_string),
            ..Default::default()
        };
        let mut stream = self
            .docker
            .api()
            .create_image(Some(query), None, credentials);
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + opts.timeout;
        let mut layers = Layers::default();
        let mut last_sent = Instant::now() - PROGRESS_EVERY;
        loop {
            let quiet_until = (tokio::time::Instant::now() + opts.inactivity_timeout).min(deadline);
            let item = match tokio::time::timeout_at(quiet_until, stream.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) if quiet_until >= deadline => {
                    return Err((
                        "timeout",
                        PullError::Failed(format!(
                            "pulling {from} timed out after {} (docker/pull_timeout)",
                            humantime::format_duration(opts.timeout)
                        )),
                    ))
                }
                Err(_) => {
                    return Err((
                        "stalled",
                        PullError::Failed(format!(
                    "pulling {from} stalled: no progress for {} (docker/pull_inactivity_timeout)",
                    humantime::format_duration(opts.inactivity_timeout)
                )),
                    ))
                }
            };
            let info = match item {
                Ok(info) => info,
                Err(e) => return Err(pull_error(&from, e, opts.registry.as_ref())),
            };
            if layers.update(&info) && last_sent.elapsed() >= PROGRESS_EVERY {
                last_sent = Instant::now();
                let progress = layers.progress(started.elapsed());
                tx.send_modify(|s| s.progress = progress);
            }
        }
        let mut done = layers.progress(started.elapsed());
        done.bytes_done = done.bytes_total;
        done.layers_done = done.layers_total;
        done.eta_ms = 0;
        tx.send_modify(|s| s.progress = done);
        Ok(())
    }

    /// The image id of a local image, `None` if it is not there.
    pub async fn local_id(&self, image: &str) -> Result<Option<String>, EngineError> {
        match self.docker.api().inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Records that kernels use `images` now.
    pub fn touch<'a>(&self, images: impl IntoIterator<Item = &'a str>) {
        let mut u = self.usage.lock();
        let now = now_ms();
        let mut changed = false;
        for image in images {
            changed |= u.images.insert(image.to_string(), now) != Some(now);
        }
        if changed {
            self.save(&u);
        }
    }

    fn save(&self, u: &UsageFile) {
        let data = serde_json::to_vec(u).unwrap_or_default();
        if let Err(e) = crate::util::fs::write_private(&self.usage_path, &data) {
            tracing::error!(path = %self.usage_path.display(), error = %e, "cannot save image usage");
        }
    }

    /// Removes images kernels used before but not within `after`, oldest first, skipping
    /// `in_use`. Only images deckhand's kernels used are considered; an image some container
    /// still refers to is left to the engine to refuse. Returns the images removed.
    pub async fn collect(&self, after: Duration, in_use: &BTreeSet<String>) -> Vec<String> {
        self.touch(in_use.iter().map(String::as_str));
        let cutoff = now_ms() - after.as_millis() as i64;
        let mut old: Vec<(i64, String)> = self
            .usage
            .lock()
            .images
            .iter()
            .filter(|(image, used)| **used < cutoff && !in_use.contains(*image))
            .map(|(image, used)| (*used, image.clone()))
            .collect();
        old.sort();
        let mut removed = Vec::new();
        for (_, image) in old {
            // A kernel may have asked for it since the list was made.
            let still_old = self
                .usage
                .lock()
                .images
                .get(&image)
                .is_some_and(|used| *used < cutoff);
            if !still_old {
                continue;
            }
            let opts = RemoveImageOptions {
                force: false,
                noprune: false,
                ..Default::default()
            };
            match self
                .docker
                .api()
                .remove_image(&image, Some(opts), None)
                .await
            {
                Ok(_) => {
                    tracing::info!(image = %image, unused_for = %humantime::format_duration(after), "image removed (docker/image_gc_after)");
                    removed.push(image.clone());
                }
                Err(e) => match EngineError::from(e) {
                    EngineError::NotFound(_) => {}
                    EngineError::Unavailable(_) => break,
                    other => {
                        tracing::info!(image = %image, "image kept: {other}");
                        continue;
                    }
                },
            }
            let mut u = self.usage.lock();
            u.images.remove(&image);
            self.save(&u);
        }
        removed
    }
}

/// A failed pull in words, naming the registry (credentials never appear), with its reason
/// for metrics: `auth`, `not_found`, `engine_unavailable` or `other`.
fn pull_error(
    from: &str,
    e: bollard::errors::Error,
    registry: Option<&Registry>,
) -> (&'static str, PullError) {
    let mut message = match &e {
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    if let Some(r) = registry {
        message = r.password.scrub(&message);
    }
    let lower = message.to_ascii_lowercase();
    if [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "401",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        return (
            "auth",
            PullError::Failed(format!(
                "pulling {from} failed: authentication failed ({message})"
            )),
        );
    }
    match EngineError::from(e) {
        EngineError::Unavailable(_) => (
            "engine_unavailable",
            PullError::Unavailable(format!("pulling {from} failed: {message}")),
        ),
        EngineError::NotFound(_) => (
            "not_found",
            PullError::Failed(format!("pulling {from} failed: {message}")),
        ),
        _ if lower.contains("not found") || lower.contains("manifest unknown") => (
            "not_found",
            PullError::Failed(format!("pulling {from} failed: {message}")),
        ),
        _ => (
            "other",
            PullError::Failed(format!("pulling {from} failed: {message}")),
        ),
    }
}

/// Per-layer progress from the engine's pull messages.
#[derive(Default)]
struct Layers {
    /// layer id → (bytes done, bytes total, finished)
    layers: BTreeMap<String, (u64, u64, bool)>,
}

impl Layers {
    /// Takes one message; true if the numbers moved.
    fn update(&mut self, info: &bollard::models::CreateImageInfo) -> bool {
        let (Some(id), Some(status)) = (&info.id, &info.status) else {
            return false;
        };
        // The first line names the tag being pulled, not a layer.
        if status.starts_with("Pulling from") {
            return false;
        }
        let entry = self.layers.entry(id.clone()).or_default();
        let before = *entry;
        match status.as_str() {
            "Downloading" => {
                if let Some(d) = &info.progress_detail {
                    entry.0 = d.current.unwrap_or(0).max(0) as u64;
                    entry.1 = d.total.unwrap_or(0).max(0) as u64;
                }
            }
            "Download complete" | "Verifying Checksum" => entry.0 = entry.1,
            "Pull complete" | "Already exists" => {
                entry.0 = entry.1;
                entry.2 = true;
            }
            _ => {}
        }
        *entry != before || before == (0, 0, false)
    }

    fn progress(&self, elapsed: Duration) -> Progress {
        let bytes_done: u64 = self.layers.values().map(|l| l.0).sum();
        let bytes_total: u64 = self.layers.values().map(|l| l.1).sum();
        let secs = elapsed.as_secs_f64();
        let eta_ms = if bytes_done > 0 && bytes_total > bytes_done && secs > 0.0 {
            let rate = bytes_done as f64 / secs;
            ((bytes_total - bytes_done) as f64 / rate * 1000.0) as u64
        } else {
            0
        };
        Progress {
            bytes_done,
            bytes_total,
            layers_done: self.layers.values().filter(|l| l.2).count() as u32,
            layers_total: self.layers.len() as u32,
            eta_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_last_path_component() {
        let parts = |r| crate::util::image::ImageRef::split(r).pull_parts();
        assert_eq!(
            parts("127.0.0.1:5000/a/b:v2"),
            ("127.0.0.1:5000/a/b", Some("v2"))
        );
        assert_eq!(
            parts("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", Some("latest"))
        );
        assert_eq!(parts("busybox"), ("busybox", Some("latest")));
        assert_eq!(parts("a/b@sha256:00"), ("a/b@sha256:00", None));
    }

    #[test]
    fn progress_sums_layers_and_counts_finished_ones() {
        let mut l = Layers::default();
        let msg = |id: &str, status: &str, cur: i64, total: i64| bollard::models::CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(bollard::models::ProgressDetail {
                current: Some(cur),
                total: Some(total),
            }),
            ..Default::default()
        };
        assert!(!l.update(&msg("v1", "Pulling from a/b", 0, 0)));
        l.update(&msg("l1", "Downloading", 50, 100));
        l.update(&msg("l2", "Already exists", 0, 0));
        let p = l.progress(Duration::from_secs(1));
        assert_eq!((p.bytes_done, p.bytes_total), (50, 100));
        assert_eq!((p.layers_done, p.layers_total), (1, 2));
        assert_eq!(p.eta_ms, 1000);
        l.update(&msg("l1", "Pull complete", 0, 0));
        let p = l.progress(Duration::from_secs(2));
        assert_eq!((p.bytes_done, p.layers_done, p.eta_ms), (100, 2, 0));
    }

    #[test]
    fn authentication_failures_name_the_registry_and_hide_the_password() {
        let r = Registry {
            name: "private".into(),
            host: "127.0.0.1:5000".into(),
            username: "u".into(),
            password: "hunter2".into(),
        };
        let e = bollard::errors::Error::DockerStreamError {
            error: "Head http://127.0.0.1:5000/v2/x: unauthorized: hunter2".into(),
        };
        let (reason, msg) = pull_error("`x` from registry `private` (127.0.0.1:5000)", e, Some(&r));
        assert_eq!(reason, "auth");
        let msg = msg.to_string();
        assert!(msg.contains("registry `private`"), "{msg}");
        assert!(msg.contains("authentication failed"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
