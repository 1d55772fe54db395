//! The instances the Vast.ai runtime follows: what a listing showed, what this agent
//! destroyed (a listing sent before still shows it), what ended, and their output.

use super::*;

/// An instance the runtime follows.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) kernel_id: String,
    pub(super) dph: f64,
    pub(super) shipped: Option<Instant>,
    /// Set once a listing showed it: only then does its absence from one mean it is gone
    /// (a listing sent before it was rented does not have it yet).
    pub(super) listed: bool,
    /// When this agent destroyed it: a listing that still shows it (sent before) is stale,
    /// and its absence is no news. Dropped once a listing no longer shows it; one that still
    /// shows it [`DESTROY_SETTLES`] later is a leak again (the destroy did not take).
    pub(super) destroyed: Option<Instant>,
    /// Set once the instance ended and was finished.
    pub(super) ended: Option<Status>,
}

impl VastRuntime {
    pub(super) fn seen(&self) -> MutexGuard<'_, HashMap<u64, Seen>> {
        self.seen.lock()
    }

    pub(super) fn track(&self, instance: u64, kernel_id: &str, dph: f64) {
        self.seen().entry(instance).or_insert_with(|| Seen {
            kernel_id: kernel_id.to_string(),
            dph,
            shipped: None,
            listed: false,
            destroyed: None,
            ended: None,
        });
    }

    /// Instances a listing showed before, with their kernels.
    pub(super) fn listed(&self) -> Vec<(u64, String)> {
        self.seen()
            .iter()
            .filter(|(_, s)| s.listed && s.destroyed.is_none())
            .map(|(id, s)| (*id, s.kernel_id.clone()))
            .collect()
    }

    pub(super) fn mark_listed(&self, instance: u64) {
        if let Some(s) = self.seen().get_mut(&instance) {
            s.listed = true;
        }
    }

    /// Instance `instance` was destroyed by this agent.
    pub(super) fn forget(&self, instance: u64) {
        let mut seen = self.seen();
        let s = seen.entry(instance).or_insert_with(|| Seen {
            kernel_id: String::new(),
            dph: 0.0,
            shipped: None,
            listed: false,
            destroyed: None,
            ended: None,
        });
        s.destroyed = Some(Instant::now());
    }

    pub(super) fn is_destroyed(&self, instance: u64) -> bool {
        self.seen()
            .get(&instance)
            .is_some_and(|s| s.destroyed.is_some())
    }

    /// Destroyed by this agent, and not long enough ago for a listing to still show it.
    pub(super) fn recently_destroyed(&self, instance: u64) -> bool {
        self.seen()
            .get(&instance)
            .and_then(|s| s.destroyed)
            .is_some_and(|at| at.elapsed() < DESTROY_SETTLES)
    }

    /// Drops what is known of destroyed instances a listing no longer shows.
    pub(super) fn prune(&self, listed: &std::collections::BTreeSet<u64>) {
        self.seen()
            .retain(|id, s| s.destroyed.is_none() || listed.contains(id));
    }

    pub(super) fn ended(&self, instance: u64) -> Option<Status> {
        self.seen().get(&instance).and_then(|s| s.ended.clone())
    }

    pub(super) fn is_ended(&self, instance: u64) -> bool {
        self.ended(instance).is_some()
    }

    pub(super) fn set_ended(&self, instance: u64, st: Status) {
        if let Some(s) = self.seen().get_mut(&instance) {
            s.ended = Some(st);
        }
    }

    /// Destroys an instance and confirms it is gone (asked again every 0.5 s, 10 times):
    /// `null`, a 404, `cur_state` unloaded, or an intended or actual status of destroyed,
    /// terminated or offline.
    pub(super) async fn destroy_instance(&self, api: &Api, instance: u64) -> Result<(), ApiError> {
        // Marked first: a listing from now on that misses it is no news.
        self.forget(instance);
        api.destroy(instance).await?;
        let confirm = ConstantBuilder::new()
            .with_delay(Duration::from_millis(500))
            .with_max_times(10);
        (|| async {
            match api.instance(instance).await? {
                None => Ok(()),
                Some(row) if row.reads_destroyed() => Ok(()),
                Some(_) => Err(ApiError::NotGone(instance)),
            }
        })
        .retry(confirm)
        .when(|e| matches!(e, ApiError::NotGone(_)))
        .await
    }

    /// Keeps the final output of a kernel whose instance is about to go (shipped too, when
    /// S3 is configured).
    pub(super) async fn keep_output(&self, cfg: &ClusterConfig, kernel_id: &str, text: &str) {
        if let Some(shipping) = &cfg.vast.logs {
            if let Err(e) = logs::ship(shipping, &self.namespace, kernel_id, text).await {
                tracing::warn!(kernel_id = %kernel_id, error = %e, "cannot ship the instance's final logs");
            }
        }
        let saved = std::fs::create_dir_all(&self.logs_dir).and_then(|_| {
            crate::util::fs::write_private(
                &self.logs_dir.join(format!("{kernel_id}.log")),
                text.as_bytes(),
            )
        });
        if let Err(e) = saved {
            tracing::warn!(kernel_id = %kernel_id, error = %e, "cannot keep the instance's final output");
        }
    }

    /// The instance's output now (without the exit marker), else its shipped copy.
    pub(super) async fn read_logs(
        &self,
        kernel_id: &str,
        instance: u64,
    ) -> Result<String, RuntimeError> {
        let cfg = self.current();
        if !self.is_ended(instance) {
            let api = self.api(&cfg)?;
            if let Ok(text) = api.logs(instance, 100_000).await {
                return Ok(without_marker(&text));
            }
        }
        if let Some(shipping) = &cfg.vast.logs {
            if let Some(text) = logs::read(shipping, &self.namespace, kernel_id)
                .await
                .map_err(RuntimeError::Failed)?
            {
                return Ok(text);
            }
        }
        std::fs::read_to_string(self.logs_dir.join(format!("{kernel_id}.log"))).map_err(|_| {
            RuntimeError::NotFound(format!(
                "the output of kernel `{kernel_id}` is gone with its instance"
            ))
        })
    }
}
