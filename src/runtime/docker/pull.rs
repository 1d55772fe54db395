//! A kernel's image, as its cache policy says: `cache_first` uses a local image,
//! `remote_first` pulls and falls back to a local one (saying so), `require_pull` always
//! pulls. Concurrent kernels share one pull per image ([`Images`]); its progress reaches the
//! supervisor through the [`Reporter`].

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::images::{Images, Progress, PullOptions, PullState};
use crate::config::cluster::CacheUsage;
use crate::config::ClusterConfig;
use crate::runtime::Launch;
use crate::runtime::{self, PullProgress, Reporter, RuntimeError};
use crate::util::now_ms;

/// Makes `rec`'s image available as its cache policy says.
pub async fn fetch(
    images: &std::sync::Arc<Images>,
    rec: &Launch,
    cfg: &ClusterConfig,
    report: &Reporter,
) -> Result<(), RuntimeError> {
    let image = &rec.spec.image;
    let policy = rec.spec.cache_usage.unwrap_or(cfg.docker.cache_usage);
    let local = images.local_id(image).await?;
    // An image pinned by digest cannot have changed: pulling it again only proves the
    // registry answers, which is what `require_pull` asks for.
    let pinned = image.contains('@') && policy != CacheUsage::RequirePull;
    if local.is_some() && (policy == CacheUsage::CacheFirst || pinned) {
        images.touch([image.as_str()]);
        return Ok(());
    }
    let _ = report(runtime::Progress::Pulling);
    // A pull that ended after this kernel was asked for serves it.
    let asked = Instant::now()
        .checked_sub(Duration::from_millis(
            (now_ms() - rec.created_at_ms).max(0) as u64
        ))
        .unwrap_or_else(Instant::now);
    let opts = PullOptions {
        registry: kernel_login(rec, image).or_else(|| cfg.docker.registry_for(image).cloned()),
        timeout: cfg.docker.pull_timeout,
        inactivity_timeout: cfg.docker.pull_inactivity_timeout,
    };
    let pull = images.pull(image, asked, opts.clone());
    let mut result = follow(image, pull, report).await;
    if result.is_ok() && images.local_id(image).await?.is_none() {
        // A pull that served this kernel, but its image is gone since (collected or
        // pruned): pull again.
        let pull = images.pull(image, Instant::now(), opts);
        result = follow(image, pull, report).await;
    }
    if let Err(e) = result {
        match (policy, local) {
            (CacheUsage::RemoteFirst, Some(local_id)) => {
                let short = local_id.trim_start_matches("sha256:");
                let _ = report(runtime::Progress::Note(format!(
                    "{e}; using the local image {} (docker/cache_usage = remote_first)",
                    &short[..short.len().min(12)]
                )));
            }
            _ => return Err(RuntimeError::Failed(e)),
        }
    }
    images.touch([image.as_str()]);
    Ok(())
}

/// A profile kernel's own registry login (`DOCKER_REGISTRY_LOGIN`/`_PASSWORD`), which wins
/// over `docker/registries`.
fn kernel_login(rec: &Launch, image: &str) -> Option<crate::config::cluster::Registry> {
    let login = rec.spec.profile.as_ref()?.registry.as_ref()?;
    Some(crate::config::cluster::Registry {
        name: "DOCKER_REGISTRY_LOGIN".into(),
        host: crate::util::image::ImageRef::split(image).registry(),
        username: login.username.clone(),
        password: login.password.clone(),
    })
}

/// Reports a pull's progress until it ends.
async fn follow(
    image: &str,
    mut pull: watch::Receiver<PullState>,
    report: &Reporter,
) -> Result<(), String> {
    let mut shown = Progress::default();
    loop {
        let now = pull.borrow_and_update().clone();
        if now.progress != shown || (now.done.is_some() && shown == Progress::default()) {
            shown = now.progress;
            let _ = report(runtime::Progress::Pull(PullProgress {
                image: image.to_string(),
                bytes_done: shown.bytes_done,
                bytes_total: shown.bytes_total,
                layers_done: shown.layers_done,
                layers_total: shown.layers_total,
                eta_ms: shown.eta_ms,
            }));
        }
        if let Some(done) = now.done {
            return done.map_err(|e| e.to_string());
        }
        if pull.changed().await.is_err() {
            return Err(format!("the pull of `{image}` ended without a result"));
        }
    }
}
