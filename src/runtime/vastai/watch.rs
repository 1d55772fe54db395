//! Following this agent's Vast.ai instances. The API has no events, so one loop lists the
//! account's instances every `vast_api/poll_interval` (one listing for all kernels, every
//! page of it, never one call per kernel) and turns what changed into runtime events: an
//! instance that exited is finished (its exit code read from its output, its log shipped
//! complete, the instance destroyed; when its output cannot be read now, the next poll
//! tries again); one the host lost after it ran (`offline`, `unknown`) is failed with that
//! reason and destroyed; one that vanished is gone. An instance labelled as this agent's
//! that no live kernel holds and no rental in progress is creating is a leak: destroyed,
//! with a log line (after start-up recovery only). Running instances' logs are shipped
//! every `vast_api/log_interval`.
//!
//! The same loop checks the API key whenever it changes, and again at every poll while the
//! API refuses it (a key refused on a listing, as a 401 or a 404, counts), saying so once
//! when it is refused and once when it is accepted. A listing that fails, for whatever
//! reason (unreachable, refused, a 410 naming the endpoint), changes no kernel: kernels
//! keep their state; the loop says why once and once when it is back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::{Api, ApiError, Row};
use super::offers::{exit_code, without_marker};
use super::{logs, parse_label, KeyState, VastRuntime};
use crate::config::ClusterConfig;
use crate::runtime::{Background, Observed, RuntimeError, RuntimeEvent, Status};
use crate::util::now_ms;
use crate::util::secret::Secret;

impl VastRuntime {
    /// The loop; see the module docs.
    pub(super) async fn watch(self: Arc<Self>, ctx: Background) {
        let mut cfg_rx = ctx.config;
        let mut checked: Option<(String, Secret)> = None;
        let mut failing = false;
        loop {
            let cfg = cfg_rx.borrow_and_update().clone();
            let vs = &cfg.vast;
            if vs.enabled() {
                let now = (vs.api_url.clone(), vs.api_key.clone());
                if checked.as_ref() != Some(&now) || self.key_refused() {
                    checked = Some(now);
                    self.check_key(&cfg).await;
                }
                match self.poll(&cfg, ctx.live_instances.as_ref()).await {
                    Ok(()) if failing => {
                        tracing::info!(
                            "Vast.ai API answers the instance listing again; instances followed"
                        );
                        failing = false;
                    }
                    Ok(()) => {}
                    // A refused key is said once, by `check_key`.
                    Err(RuntimeError::Precondition(why)) => self.refuse_key(why),
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "Vast.ai instances not followed now; kernels keep their state, retrying");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
            let wait = if vs.enabled() {
                vs.poll_interval
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                r = cfg_rx.changed() => if r.is_err() { return },
            }
        }
    }

    /// Asks the API whether the key is good; one clear line when that changes.
    async fn check_key(&self, cfg: &ClusterConfig) {
        let Ok(api) = self.api_unchecked(cfg) else {
            return;
        };
        let state = match api.check_key().await {
            Ok(()) => KeyState::Good,
            Err(e @ ApiError::Unauthorized(_)) => KeyState::Refused(e.to_string()),
            Err(_) => KeyState::Unknown,
        };
        self.set_key_state(state);
    }

    fn key_refused(&self) -> bool {
        matches!(*self.key_state.lock(), KeyState::Refused(_))
    }

    /// The API refused the key on a call other than the key check.
    fn refuse_key(&self, why: String) {
        if why.contains("config/vast_api/api_key") {
            self.set_key_state(KeyState::Refused(why));
        }
    }

    /// Records what the API said of the key, with a line when it changed.
    fn set_key_state(&self, state: KeyState) {
        let mut current = self.key_state.lock();
        if *current != state {
            match &state {
                KeyState::Refused(why) => tracing::error!(
                    "{why}; vastai kernels are refused until config/vast_api/api_key is fixed"
                ),
                KeyState::Good => tracing::info!("Vast.ai API key accepted"),
                KeyState::Unknown => {}
            }
        }
        // Unknown (the check itself failed) keeps what was known.
        if state != KeyState::Unknown {
            *current = state;
        }
    }

    /// One look at every instance of this agent; `live` gives the instances of live kernels.
    async fn poll(
        &self,
        cfg: &ClusterConfig,
        live: &(dyn Fn() -> Option<BTreeSet<String>> + Send + Sync),
    ) -> Result<(), RuntimeError> {
        let api = self.api(cfg)?;
        let rows = api
            .instances(&serde_json::json!({}))
            .await
            .map_err(super::provision::api_error)?;
        let mut ours: Vec<(Row, String, String)> = rows
            .into_iter()
            .filter_map(|r| {
                let (kernel, token) =
                    parse_label(&self.namespace, &self.agent_id, r.label.as_deref()?)?;
                Some((r, kernel, token))
            })
            .collect();
        // Read in this order, after the listing: a rental that ends between the two reads
        // recorded its handle before it stopped counting as in progress.
        let renting = self.renting_tokens();
        if let Some(live) = live() {
            let (kept, leaked): (Vec<_>, Vec<_>) = ours.into_iter().partition(|(row, _, token)| {
                renting.contains(token)
                    || live.contains(&row.id.to_string())
                    || self.recently_destroyed(row.id)
            });
            ours = kept;
            for (row, kernel, _) in leaked {
                self.destroy_leak(&api, row.id, &kernel).await;
            }
        }
        let listed: std::collections::BTreeSet<u64> = ours.iter().map(|(r, _, _)| r.id).collect();
        self.prune(&listed);
        for (instance, kernel) in self.listed() {
            if !listed.contains(&instance) && !self.is_ended(instance) {
                self.forget(instance);
                self.send(RuntimeEvent {
                    kernel_id: kernel,
                    instance: instance.to_string(),
                    what: Observed::Gone {
                        reason: format!(
                            "Vast.ai instance {instance} is gone (destroyed outside deckhand)"
                        ),
                    },
                });
            }
        }
        for (row, kernel, token) in ours {
            if self.is_destroyed(row.id) {
                continue; // a listing from before this agent destroyed it
            }
            if renting.contains(&token) {
                // Its rental is in progress: provisioning owns it until the kernel holds it.
                continue;
            }
            self.track(row.id, &kernel, row.dph_total.unwrap_or_default());
            self.mark_listed(row.id);
            let status = row.actual_status.as_deref().unwrap_or_default();
            match status {
                "exited" | "stopped" if !self.is_ended(row.id) => {
                    match self.finish(&api, cfg, &kernel, &row, &token).await {
                        Ok(st) => self.send(RuntimeEvent {
                            kernel_id: kernel,
                            instance: row.id.to_string(),
                            what: Observed::Changed(st),
                        }),
                        // Not concluded: the next poll reads its output again.
                        Err(e) if e.transient() => {
                            tracing::debug!(kernel_id = %kernel, instance = row.id, error = %e, "the output of an ended instance is not read yet; trying again at the next poll");
                        }
                        Err(e) => {
                            tracing::warn!(kernel_id = %kernel, instance = row.id, error = %e, "the output of an ended instance cannot be read; trying again at the next poll");
                        }
                    }
                }
                _ if row.lost() && !self.is_ended(row.id) => {
                    let st = self.lose(&api, &kernel, &row).await;
                    self.send(RuntimeEvent {
                        kernel_id: kernel,
                        instance: row.id.to_string(),
                        what: Observed::Changed(st),
                    });
                }
                "running" if self.log_due(row.id, cfg.vast.log_interval) => {
                    if let Some(logs_cfg) = &cfg.vast.logs {
                        if let Ok(text) = api.logs(row.id, 100_000).await {
                            let text = without_marker(&text);
                            if let Err(e) =
                                logs::ship(logs_cfg, &self.namespace, &kernel, &text).await
                            {
                                tracing::warn!(kernel_id = %kernel, error = %e, "cannot ship the instance's logs");
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// An instance whose command ended: its exit code from its output, its complete log
    /// shipped, the instance destroyed. Concluded only once its output was read, or once the
    /// instance is gone (then the code cannot be learned, and the status says so); any other
    /// failure to read it is returned and nothing is done, so the next look tries again
    /// (the instance is kept meanwhile: it holds the only copy). Done once; the final status
    /// is kept.
    pub(super) async fn finish(
        &self,
        api: &Api,
        cfg: &ClusterConfig,
        kernel: &str,
        row: &Row,
        token: &str,
    ) -> Result<Status, ApiError> {
        if let Some(st) = self.ended(row.id) {
            return Ok(st);
        }
        let (code, error) = match api.logs(row.id, 100_000).await {
            Ok(text) => {
                self.keep_output(cfg, kernel, &without_marker(&text)).await;
                match exit_code(&text, token) {
                    Some(c) => (Some(c), String::new()),
                    None => (
                        None,
                        "ended; its exit code could not be learned (no exit marker in its output: the image's own command ran, or the image has no shell)".to_string(),
                    ),
                }
            }
            Err(e) if e.gone() => (
                None,
                format!("ended; its exit code could not be learned (Vast.ai instance {} was gone before its output was read)", row.id),
            ),
            Err(e) => return Err(e),
        };
        tracing::info!(kernel_id = %kernel, instance = row.id, exit_code = ?code, "Vast.ai instance ended; its output is kept and the instance destroyed");
        if let Err(e) = self.destroy_instance(api, row.id).await {
            tracing::warn!(kernel_id = %kernel, instance = row.id, error = %e, "cannot destroy an instance that ended");
        }
        Ok(self.end(row, code, error))
    }

    /// An instance the host lost after it ran (`offline`, `unknown`): failed with that reason
    /// and destroyed (the destroy confirmed; when it cannot be, the poll loop destroys it as
    /// a leak later). Its output is not asked for: a host that lost it cannot give it. Done
    /// once; the final status is kept.
    pub(super) async fn lose(&self, api: &Api, kernel: &str, row: &Row) -> Status {
        if let Some(st) = self.ended(row.id) {
            return st;
        }
        let status = row.actual_status.as_deref().unwrap_or("unknown");
        let detail = row
            .status_msg
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        let mut error = format!(
            "Vast.ai instance {} went {status} after it was running{detail}; it was destroyed",
            row.id
        );
        tracing::warn!(kernel_id = %kernel, instance = row.id, status, "Vast.ai instance lost by its host; failing the kernel and destroying the instance");
        if let Err(e) = self.destroy_instance(api, row.id).await {
            tracing::warn!(kernel_id = %kernel, instance = row.id, error = %e, "cannot confirm the destroy of a lost instance; the poll loop destroys it as a leak while it is listed");
            error = format!("{error} (not confirmed yet: {e})");
        }
        self.end(row, None, error)
    }

    /// Instance `row` ended with `exit_code` (None: not learned) and `error`: its final
    /// status, kept.
    fn end(&self, row: &Row, exit_code: Option<i64>, error: String) -> Status {
        let st = Status {
            exists: true,
            running: false,
            exit_code,
            error,
            started_at_ms: row
                .start_date
                .map(|s| (s * 1000.0) as i64)
                .unwrap_or(0)
                .max(1),
            finished_at_ms: now_ms(),
            ..Status::default()
        };
        self.set_ended(row.id, st.clone());
        st
    }

    /// Destroys an instance labelled as this agent's that no live kernel holds and no
    /// rental is creating (a leaked instance costs money), saying so.
    async fn destroy_leak(&self, api: &Api, instance: u64, kernel: &str) {
        tracing::warn!(kernel_id = %kernel, instance, "destroying a Vast.ai instance labelled for this agent that no live kernel holds");
        if let Err(e) = self.destroy_instance(api, instance).await {
            tracing::warn!(kernel_id = %kernel, instance, error = %e, "cannot destroy a leaked instance; trying again at the next poll");
        }
    }

    /// Whether instance `id`'s log is due to be shipped again (and marks it shipped).
    fn log_due(&self, id: u64, every: Duration) -> bool {
        let mut seen = self.seen();
        let Some(s) = seen.get_mut(&id) else {
            return false;
        };
        let due = s.shipped.is_none_or(|t| t.elapsed() >= every);
        if due {
            s.shipped = Some(Instant::now());
        }
        due
    }
}
