//! Restarts the agent carries out itself: `--restart on-failure[:N] --restart-delay D`, with
//! Nomad's restart semantics (`attempts` N, `delay` D). Without a delay Docker's own restart
//! policy restarts the container at once ([`super::observe`] follows it).
//!
//! A run that ends with a non-zero exit code while fewer than N restarts were made (any
//! number when N is absent) goes RUNNING → RESTARTING (DRMAA2 QUEUED) with the exit code, the
//! restart count and when it starts again; its slots stay held. After D the same instance is
//! started again and reads RUNNING. When N restarts were made the next failed run ends the
//! kernel FAILED ("… after N restarts (restart policy `on-failure:N` gave up)"). A stop while
//! RESTARTING cancels the restart.
//!
//! The restart time is part of the kernel's record, so an agent restarted (even after
//! `kill -9`) while a kernel waits keeps the count and starts it when it was due (at once if
//! that time passed). The wait is owned supervisor work (stopped with it), not a thread.

use std::time::Duration;

use super::record::now_ms;
use super::state::{KernelState, Transition};
use super::supervisor::Supervisor;
use super::table::Table;
use crate::runtime::Status;

impl Supervisor {
    /// Called when a kernel's instance ended: true when this module takes over (a restart
    /// is scheduled, or one was already pending), false when the end is final.
    pub(super) fn restart_after_delay(&self, t: &mut Table, id: &str, st: &Status) -> bool {
        let Some(e) = t.kernels.get(id) else {
            return false;
        };
        let spec = &e.rec.spec;
        if !spec.agent_restarts() {
            return false;
        }
        match e.rec.state {
            // An end seen while the kernel waits to start again is the run before the wait
            // (its start time is the one on record): the restart is (still) due. An end of a
            // run that started after it (a fast run that ended before the restart's start
            // was recorded) is that run's end, counted below like any other.
            KernelState::Restarting if st.started_at_ms <= e.rec.started_at_ms => {
                let at = e.rec.restart_at_ms;
                self.schedule_restart(t, id, at);
                return true;
            }
            KernelState::Restarting => {
                let started = st.started_at_ms;
                let _ = self.transition(t, id, Transition::Started, |r| {
                    r.started_at_ms = started;
                    r.restart_at_ms = 0;
                    r.reason = format!("running again after restart {}", r.restart_count);
                });
            }
            KernelState::Running | KernelState::Creating => {}
            _ => return false,
        }
        let Some(e) = t.kernels.get(id) else {
            return false;
        };
        let spec = &e.rec.spec;
        let Some(code) = st.exit_code.filter(|c| *c != 0) else {
            return false;
        };
        let done = e.rec.restart_count;
        if spec.restart_retries > 0 && i64::from(done) >= spec.restart_retries {
            return false;
        }
        let delay = spec.restart_delay;
        let policy = spec.restart_policy_shown();
        if e.rec.state == KernelState::Creating {
            let started = st.started_at_ms;
            let _ = self.transition(t, id, Transition::Started, |r| r.started_at_ms = started);
        }
        let at = now_ms() + delay.as_millis() as i64;
        let next = done + 1;
        let shown = humantime::format_duration(delay);
        let applied = self.transition(t, id, Transition::Restarted, |r| {
            r.exit_code = Some(code as i32);
            r.restart_count = next;
            r.restart_at_ms = at;
            r.oom_killed = false;
            r.reason = format!(
                "exited with code {code}; restart policy `{policy}` starts it again in {shown} (restart {next})"
            );
        });
        if applied.is_ok() {
            self.schedule_restart(t, id, at);
        }
        applied.is_ok()
    }

    /// Starts kernel `id` again at `at_ms`: once per due time, however often it is asked
    /// (an end seen again while the start is under way schedules nothing more).
    fn schedule_restart(&self, t: &mut Table, id: &str, at_ms: i64) {
        if t.pending_restarts.get(id) == Some(&at_ms) {
            return;
        }
        t.pending_restarts.insert(id.to_string(), at_ms);
        let me = self.clone();
        let id = id.to_string();
        self.spawn(async move {
            let wait = (at_ms - now_ms()).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            me.restart_now(&id, at_ms).await;
            let mut t = me.lock();
            if t.pending_restarts.get(&id) == Some(&at_ms) {
                t.pending_restarts.remove(&id);
            }
        });
    }

    /// The delay is over: the same instance starts again, unless the kernel was stopped or
    /// removed meanwhile, or this restart is no longer the one due.
    async fn restart_now(&self, id: &str, at_ms: i64) {
        let due = {
            let t = self.lock();
            t.kernels
                .get(id)
                .filter(|e| e.rec.state == KernelState::Restarting && e.rec.restart_at_ms == at_ms)
                .and_then(|e| e.rec.handle.clone().map(|h| (e.rec.clone(), h)))
        };
        let Some((rec, handle)) = due else { return };
        let rt = match self.runtime(&rec.runtime) {
            Ok(rt) => rt,
            Err(e) => return self.fail(id, format!("cannot restart: {e}")),
        };
        match rt.start(&rec, &handle, &self.config()).await {
            Ok(started) => {
                {
                    let mut t = self.lock();
                    // Unless its end was seen first (then it already counted as started).
                    let waiting = t.kernels.get(id).is_some_and(|e| {
                        e.rec.state == KernelState::Restarting && e.rec.restart_at_ms == at_ms
                    });
                    if waiting {
                        let at = if started.started_at_ms > 0 {
                            started.started_at_ms
                        } else {
                            now_ms()
                        };
                        let _ = self.transition(&mut t, id, Transition::Started, |r| {
                            r.started_at_ms = at;
                            r.restart_at_ms = 0;
                            r.reason = format!("running again after restart {}", r.restart_count);
                        });
                    }
                }
                for work in started.follow {
                    self.spawn(work);
                }
            }
            Err(e) => {
                tracing::warn!(kernel_id = %id, error = %e, "restart failed");
                self.fail(id, format!("restart {} failed: {e}", rec.restart_count));
            }
        }
    }
}
