//! Following the runtimes: one loop per runtime recovers its kernels once, resynchronises
//! every live kernel with its instance after each (re)connect, then applies the runtime's
//! events as they come. After a break it reconnects with backoff, pinging the backend
//! between attempts so that its return is seen within [`PROBE`]; each completed resync is
//! published ([`Supervisor::synced`]). One function, [`Supervisor::reconcile`], turns what an instance
//! does now into transitions: ended (DONE/FAILED with its exit code, signal, OOM flag),
//! restarted by its restart policy (RESTARTING, then RUNNING), paused, resumed, gone.

use std::sync::Arc;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::state::{KernelState, Transition};
use super::supervisor::Supervisor;
use crate::runtime::{Observed, Runtime, RuntimeError, RuntimeEvent, Status};

/// Reconnect delays after a runtime's event stream broke: 250 ms doubling to 10 s.
fn reconnect_backoff() -> impl Iterator<Item = std::time::Duration> {
    ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(250))
        .with_max_delay(std::time::Duration::from_secs(10))
        .with_factor(2.0)
        .without_max_times()
        .build()
}

impl Supervisor {
    /// Follows `rt` until `stop`: recovery first (once it can reach its backend), then a
    /// resync and the event stream, again after every break.
    pub(super) async fn observe(self, rt: Arc<dyn Runtime>, stop: CancellationToken) {
        let mut delays = reconnect_backoff();
        let mut down_logged = false;
        let mut recovered = false;
        // A runtime that needs settings (a remote one) is followed once they are there.
        let mut cfg = self.0.config.clone();
        loop {
            if rt.enabled(&cfg.borrow_and_update()) {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                r = cfg.changed() => if r.is_err() { return },
            }
        }
        loop {
            let mut stream = rt.events();
            if !recovered {
                let r = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = self.recover(rt.as_ref()) => r,
                };
                match r {
                    Ok(r) => {
                        recovered = true;
                        tracing::info!(
                            runtime = rt.name(),
                            kernels = self.lock().kernels.len(),
                            relaunched = r.relaunched.len(),
                            adopted = r.adopted.len(),
                            scratch_recreated = r.restored.len(),
                            orphan_dirs_removed = r.orphans_removed.len(),
                            "kernels recovered"
                        );
                    }
                    Err(RuntimeError::Precondition(_)) => {
                        // The runtime said why (a refused key); wait for the settings.
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            r = cfg.changed() => if r.is_err() { return },
                        }
                        continue;
                    }
                    Err(e) => {
                        if !down_logged {
                            tracing::warn!(error = %e, "recovery waits for the {}", rt.backend());
                            down_logged = true;
                        }
                    }
                }
            }
            // Instances may have changed while nobody listened.
            let synced = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.resync(rt.as_ref()) => r,
            };
            match synced {
                Ok(()) => {
                    self.0.synced.send_replace(crate::util::now_ms());
                    if down_logged {
                        tracing::info!(
                            "{} reachable again; kernel states resynchronised",
                            rt.backend()
                        );
                        down_logged = false;
                    }
                    delays = reconnect_backoff();
                }
                Err(e) => {
                    if !down_logged {
                        tracing::warn!(error = %e, "{} unreachable; retrying", rt.backend());
                        down_logged = true;
                    }
                }
            }
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = stream.next() => n,
                };
                match next {
                    Some(Ok(ev)) => self.on_event(ev).await,
                    Some(Err(e)) => {
                        if !down_logged {
                            tracing::warn!(error = %e, "{} event stream broke; reconnecting", rt.backend());
                            down_logged = true;
                        }
                        break;
                    }
                    None => break,
                }
            }
            let wait = delays.next().unwrap_or(std::time::Duration::from_secs(10));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = back_or_waited(rt.as_ref(), wait) => {}
            }
        }
    }

    /// Brings every live kernel of `rt` in line with its instance.
    async fn resync(&self, rt: &dyn Runtime) -> Result<(), RuntimeError> {
        let live: Vec<(String, crate::runtime::Handle)> = self
            .lock()
            .kernels
            .values()
            .filter(|e| !e.rec.state.is_final() && e.rec.runtime == rt.name())
            .filter_map(|e| Some((e.rec.id.clone(), e.rec.handle.clone()?)))
            .collect();
        for (id, handle) in live {
            let st = rt.status(&handle).await?;
            let what = if st.exists {
                Observed::Changed(st)
            } else {
                let reason = if st.error.is_empty() {
                    "its instance was removed outside deckhand".to_string()
                } else {
                    st.error
                };
                Observed::Gone { reason }
            };
            self.apply(&id, what, true);
        }
        Ok(())
    }

    /// An event from a runtime; events of an instance the kernel no longer has are ignored.
    pub(super) async fn on_event(&self, ev: RuntimeEvent) {
        tracing::debug!(kernel_id = %ev.kernel_id, instance = %ev.instance, what = ?ev.what, "runtime event");
        let belongs = self
            .with_record(&ev.kernel_id, |r| {
                r.instance() == ev.instance || r.instance().is_empty()
            })
            .unwrap_or(false);
        if belongs {
            self.apply(&ev.kernel_id, ev.what, false);
        }
    }

    /// Applies what was observed of kernel `id`'s instance. `resync`: a look after a
    /// (re)connect, which also finishes stops that were cut short.
    fn apply(&self, id: &str, what: Observed, resync: bool) {
        match what {
            Observed::Changed(st) => self.reconcile(id, &st, resync),
            Observed::ExitedAndGone { exit_code } => {
                let st = Status {
                    exit_code: Some(exit_code.unwrap_or(-1)),
                    ..Status::default()
                };
                self.exited(id, &st);
            }
            Observed::Gone { reason } => {
                let mut t = self.lock();
                // An uploading kernel's container has ended already; its results are on
                // this host.
                let live = t.kernels.get(id).is_some_and(|e| {
                    !e.rec.state.is_final() && e.rec.state != KernelState::Uploading
                });
                if live {
                    let _ = self.transition(&mut t, id, Transition::Fail, |r| r.reason = reason);
                }
            }
            Observed::OomKilled => {
                if let Some(e) = self.lock().kernels.get_mut(id) {
                    e.rec.oom_killed = true;
                }
            }
        }
    }

    /// What the instance does now, turned into transitions.
    fn reconcile(&self, id: &str, st: &Status, resync: bool) {
        let Some((state, restarts)) = self.with_record(id, |r| (r.state, r.restart_count)) else {
            return;
        };
        if state.is_final() {
            return;
        }
        if st.running || st.restarting {
            if st.restarting {
                self.on_restart(id, st);
                return;
            }
            if state == KernelState::Restarting {
                self.restarted_running(id, st);
            } else if state == KernelState::Running && st.restart_count > restarts {
                // It died and its restart policy brought it back before anyone looked.
                self.on_restart(id, st);
            }
            let mut t = self.lock();
            let Some(e) = t.kernels.get(id) else { return };
            let state = e.rec.state;
            if resync && state == KernelState::Terminating {
                // A stop that was cut short (agent restart, engine outage): again, with the
                // kernel's own grace period.
                if let (Some(h), Ok(rt)) = (e.rec.handle.clone(), self.runtime(&e.rec.runtime)) {
                    let grace = e.rec.spec.stop_grace_period;
                    tracing::info!(kernel_id = %id, "finishing an interrupted stop");
                    let kid = id.to_string();
                    self.spawn(async move {
                        if let Err(e) = rt.stop(&h, grace).await {
                            tracing::warn!(kernel_id = %kid, instance = %h.instance, error = %e, "finishing an interrupted stop failed");
                        }
                    });
                }
            }
            if st.paused && state == KernelState::Running {
                let _ = self.transition(&mut t, id, Transition::Suspend, |_| {});
            } else if !st.paused && state == KernelState::Suspended {
                let _ = self.transition(&mut t, id, Transition::Resume, |_| {});
            }
        } else if st.started_at_ms > 0 || (st.exit_code.is_some() && st.finished_at_ms > 0) {
            self.exited(id, st);
        }
        // Else: created, never started (held).
    }

    /// The instance ended for good: DONE on exit code 0, else FAILED with the code, the
    /// terminating signal, the OOM flag and a reason.
    fn exited(&self, id: &str, st: &Status) {
        let mut t = self.lock();
        let Some(e) = t.kernels.get(id) else { return };
        if e.rec.state.is_final() {
            return;
        }
        if self.restart_after_delay(&mut t, id, st) {
            return;
        }
        let Some(e) = t.kernels.get(id) else { return };
        let oom = st.oom_killed || e.rec.oom_killed;
        let stopping = e.rec.state == KernelState::Terminating;
        let restarts = st.restart_count.max(e.rec.restart_count);
        let policy = e.rec.spec.restart_policy_shown();
        let stop_reason = e.rec.stop_reason.clone();
        // A profile kernel with results uploads them before it ends.
        let uploads = e
            .rec
            .spec
            .profile
            .as_ref()
            .is_some_and(|p| p.results.is_some());
        if e.rec.state == KernelState::Creating {
            let started = st.started_at_ms;
            let _ = self.transition(&mut t, id, Transition::Started, |r| {
                r.started_at_ms = started
            });
        }
        let code = st.exit_code;
        let success = code == Some(0) && !oom;
        let signal = match code {
            Some(c) if (129..=159).contains(&c) => signal_name((c - 128) as i32),
            _ => String::new(),
        };
        let mut reason = match code {
            _ if oom => "out of memory: the kernel was OOM-killed".to_string(),
            Some(c) if stopping && !stop_reason.is_empty() => {
                format!("{stop_reason} (exit code {c})")
            }
            _ if stopping && !stop_reason.is_empty() => stop_reason,
            Some(c) if stopping => format!("stopped on request (exit code {c})"),
            None if stopping => "stopped on request".to_string(),
            _ if !st.error.is_empty() => st.error.clone(),
            Some(0) => "exited".to_string(),
            Some(c) => format!("exited with code {c}"),
            None => "ended; its exit code cannot be known".to_string(),
        };
        if restarts > 0 && !stopping {
            reason.push_str(&format!(
                " after {restarts} restarts (restart policy `{policy}` gave up)"
            ));
        }
        let finished = st.finished_at_ms;
        let tr = if uploads {
            Transition::UploadStarted
        } else {
            Transition::Exited { success }
        };
        let applied = self.transition(&mut t, id, tr, |r| {
            r.restart_count = restarts;
            r.exit_code = code.map(|c| c as i32);
            r.signal = signal;
            r.oom_killed = oom;
            r.reason = reason;
            r.finished_at_ms = finished;
        });
        if uploads && applied.is_ok() {
            let me = self.clone();
            let id = id.to_string();
            self.spawn(async move { me.upload_results(id).await });
        }
    }

    /// The instance exited and its restart policy starts it again: RESTARTING (DRMAA2
    /// QUEUED) with the exit code and the restart count; slots stay held. If it already runs
    /// again, RUNNING at once.
    fn on_restart(&self, id: &str, st: &Status) {
        {
            let mut t = self.lock();
            let Some(e) = t.kernels.get(id) else { return };
            if e.rec.state == KernelState::Creating {
                let started = st.started_at_ms;
                let _ = self.transition(&mut t, id, Transition::Started, |r| {
                    r.started_at_ms = started
                });
            }
            let Some(e) = t.kernels.get(id) else { return };
            if e.rec.state == KernelState::Running {
                let policy = e.rec.spec.restart_policy_shown();
                let count = st.restart_count.max(e.rec.restart_count + 1);
                let code = st.exit_code;
                let _ = self.transition(&mut t, id, Transition::Restarted, |r| {
                    r.exit_code = code.map(|c| c as i32);
                    r.restart_count = count;
                    r.reason = format!(
                        "exited with code {}; restart policy `{policy}` starts it again (restart {count})",
                        code.map_or("?".to_string(), |c| c.to_string())
                    );
                });
            }
        }
        if st.running && !st.restarting {
            self.restarted_running(id, st);
        }
    }

    /// A restarting kernel runs again.
    fn restarted_running(&self, id: &str, st: &Status) {
        let mut t = self.lock();
        if t.kernels.get(id).map(|e| e.rec.state) != Some(KernelState::Restarting) {
            return;
        }
        let count = st.restart_count;
        let _ = self.transition(&mut t, id, Transition::Started, |r| {
            r.restart_count = r.restart_count.max(count);
            r.reason = format!("running again after restart {}", r.restart_count);
        });
    }
}

/// Waits out `delay`, or less once the runtime's backend answers a ping again (asked every
/// [`PROBE`] after the first): an engine that comes back is followed within a fraction of a
/// second, not after the whole backoff delay.
pub(super) async fn back_or_waited(rt: &dyn Runtime, delay: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        let next = (tokio::time::Instant::now() + PROBE).min(deadline);
        tokio::time::sleep_until(next).await;
        if next >= deadline {
            return;
        }
        // A backend that accepts but does not answer must not hold the retry past `delay`.
        if let Ok(Ok(())) = tokio::time::timeout_at(deadline, rt.ping()).await {
            return;
        }
    }
}

/// How often a backend that went away is asked whether it is back.
const PROBE: std::time::Duration = std::time::Duration::from_millis(250);

fn signal_name(n: i32) -> String {
    nix::sys::signal::Signal::try_from(n)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {n}"))
}
