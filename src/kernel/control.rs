//! Job control of an existing kernel: stop, remove, signal, suspend/resume, release;
//! `SyncKernels`; stopping every kernel on shutdown. An operation the kernel's state does
//! not allow is FAILED_PRECONDITION ("cannot suspend a kernel that is HELD"); one its runtime
//! cannot do says so. Logs, exec and files of a kernel are in [`super::access`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::error::KernelError;
use super::record::Record;
use super::state::{KernelState, Transition};
use super::supervisor::{KernelView, Supervisor};
use crate::runtime::{Observed, Runtime, RuntimeEvent};
use crate::spec::SpecError;

/// What to do to a kernel (a task, or every task of an array).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stop,
    Remove,
    Signal,
    Suspend,
    Resume,
    Release,
}

#[derive(Debug, Clone)]
pub struct Control {
    pub kernel_id: String,
    /// `None`: the caller named no action.
    pub action: Option<Action>,
    /// For `Signal`.
    pub signal: i32,
    /// For `Stop`: instead of the kernel's own grace period.
    pub grace: Option<Duration>,
    /// For `Remove`: also a kernel that still runs.
    pub force: bool,
}

/// The answer to `SyncKernels`; see the proto.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub unknown: Vec<KernelView>,
    /// Kernel id and why this agent does not have it.
    pub lost: Vec<(String, String)>,
    pub destroyed: Vec<String>,
}

impl Supervisor {
    pub async fn control(&self, req: Control) -> Result<Vec<KernelView>, KernelError> {
        let ids = self.targets(&req.kernel_id)?;
        let is_array = ids.len() != 1 || ids[0] != req.kernel_id;
        let Some(action) = req.action else {
            return Err(SpecError::invalid(
                "action",
                "say what to do: stop, remove, signal, suspend, resume or release",
            )
            .into());
        };
        if action == Action::Signal && !(1..=64).contains(&req.signal) {
            return Err(SpecError::invalid(
                "signal",
                format!("{} is not a signal number (1-64)", req.signal),
            )
            .into());
        }
        // No state changes while a runtime cannot carry them out: answer UNAVAILABLE and
        // leave every kernel as it is.
        let runtimes: BTreeSet<String> = ids
            .iter()
            .filter_map(|id| self.with_record(id, |r| r.runtime.clone()))
            .collect();
        for name in runtimes {
            self.runtime(&name)?.ping().await?;
        }
        let ops = ids.iter().map(|id| async move {
            match action {
                Action::Stop => self.stop(id, req.grace).await,
                Action::Remove => self.remove(id, req.force).await,
                Action::Signal => self.signal(id, req.signal).await,
                Action::Suspend => self.freeze(id, true).await,
                Action::Resume => self.freeze(id, false).await,
                Action::Release => self.release(id).await,
            }
        });
        let results = futures::future::join_all(ops).await;
        let mut errors = Vec::new();
        for r in results {
            if let Err(e) = r {
                // On an array, tasks already in the target state are fine.
                if !(is_array && matches!(e, KernelError::WrongState(_))) {
                    errors.push(e);
                }
            }
        }
        if action == Action::Remove && is_array && errors.is_empty() {
            self.lock().arrays.remove(&req.kernel_id);
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        if action == Action::Remove {
            return Ok(Vec::new());
        }
        self.get(&req.kernel_id)
    }

    /// `SyncKernels`: compares the manager's list with the table.
    pub async fn sync(
        &self,
        known: &[String],
        destroy_unknown: bool,
    ) -> Result<SyncOutcome, KernelError> {
        let known: BTreeSet<&str> = known.iter().map(String::as_str).collect();
        let (unknown, lost) = {
            let t = self.lock();
            let unknown: Vec<Record> = t
                .kernels
                .values()
                .filter(|e| {
                    !known.contains(e.rec.id.as_str())
                        && !e.rec.array_id.as_deref().is_some_and(|a| known.contains(a))
                })
                .map(|e| e.rec.clone())
                .collect();
            let lost: Vec<(String, String)> = known
                .iter()
                .filter(|id| !t.kernels.contains_key(**id) && !t.arrays.contains_key(**id))
                .map(|id| {
                    (
                        id.to_string(),
                        format!(
                            "agent `{}` has no kernel `{id}`: it was removed, or never created here",
                            self.0.agent_id
                        ),
                    )
                })
                .collect();
            (unknown, lost)
        };
        let unknown: Vec<KernelView> = unknown.into_iter().map(|r| self.view(r)).collect();
        let mut destroyed = Vec::new();
        if destroy_unknown {
            for k in &unknown {
                let id = &k.record.id;
                match self.remove(id, true).await {
                    Ok(()) => destroyed.push(id.clone()),
                    Err(e) => {
                        tracing::warn!(kernel_id = %id, error = %e, "sync: cannot remove an unknown kernel")
                    }
                }
            }
            if !destroyed.is_empty() {
                tracing::warn!(
                    count = destroyed.len(),
                    "sync: removed kernels the manager does not know"
                );
            }
        }
        Ok(SyncOutcome {
            unknown,
            lost,
            destroyed,
        })
    }

    /// Stops every live kernel (each with its grace period), at once; for
    /// `agent/on_shutdown = stop`.
    pub async fn stop_all(&self) {
        let live: Vec<String> = self
            .lock()
            .kernels
            .values()
            .filter(|e| !e.rec.state.is_final())
            .map(|e| e.rec.id.clone())
            .collect();
        let stops = live.iter().map(|id| self.stop(id, None));
        for (id, r) in live.iter().zip(futures::future::join_all(stops).await) {
            if let Err(e) = r {
                tracing::warn!(kernel_id = %id, error = %e, "stop on shutdown failed");
            }
        }
    }

    pub(super) fn wrong(op: &str, state: KernelState) -> KernelError {
        KernelError::WrongState(format!("cannot {op} a kernel that is {state}"))
    }

    /// The kernel's record and its runtime.
    pub(super) fn with_runtime(&self, id: &str) -> Result<(Record, Arc<dyn Runtime>), KernelError> {
        let rec = self.record(id)?;
        let rt = self.runtime(&rec.runtime)?;
        Ok((rec, rt))
    }

    /// The kernel's record and its runtime, if the runtime can do `op` at all (checked before
    /// the kernel's state: "suspend is not supported by the vastai runtime").
    pub(super) fn capable(
        &self,
        id: &str,
        op: &'static str,
        can: impl Fn(&crate::runtime::Capabilities) -> bool,
    ) -> Result<(Record, Arc<dyn Runtime>), KernelError> {
        let (rec, rt) = self.with_runtime(id)?;
        if !can(&rt.capabilities()) {
            return Err(crate::runtime::RuntimeError::Unsupported(rt.name(), op).into());
        }
        Ok((rec, rt))
    }

    async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<(), KernelError> {
        self.stop_because(id, grace, None).await
    }

    /// Stops kernel `id`; `why` replaces the reason a started kernel's stop reads ("stop
    /// requested").
    pub(super) async fn stop_because(
        &self,
        id: &str,
        grace: Option<Duration>,
        why: Option<&str>,
    ) -> Result<(), KernelError> {
        let (rec, rt) = self.with_runtime(id)?;
        let (rx, was, grace) = {
            let mut t = self.lock();
            let e = t
                .kernels
                .get(id)
                .ok_or_else(|| KernelError::NotFound(id.into()))?;
            let was = e.rec.state;
            let rx = e.state.subscribe();
            let grace = match was {
                // Already stopping: only wait for the end.
                KernelState::Terminating => Duration::ZERO,
                _ => grace.unwrap_or(e.rec.spec.stop_grace_period),
            };
            if was != KernelState::Terminating {
                let started = matches!(
                    was,
                    KernelState::Running | KernelState::Suspended | KernelState::Restarting
                );
                let reason = match why {
                    Some(why) => why,
                    None if started => "stop requested",
                    None => "cancelled before it started",
                };
                self.transition(&mut t, id, Transition::Terminate, |r| {
                    r.reason = reason.into();
                    r.stop_requested = true;
                    r.stop_reason = why.unwrap_or_default().into();
                })?;
            }
            (rx, was, grace)
        };
        let handle = rec.handle.clone();
        match (was, handle) {
            (KernelState::Terminating, _) => {}
            (KernelState::Running | KernelState::Suspended, Some(h)) => {
                if was == KernelState::Suspended {
                    let _ = rt.resume(&h).await;
                }
                // A profile kernel runs its shutdown command first and gets
                // container/shutdown_grace to end by itself.
                let mut rx = rx.clone();
                let shutdown_grace = self.config().kernel.shutdown_grace;
                self.run_shutdown_command(&rec, &h, rt.as_ref(), shutdown_grace, &mut rx)
                    .await;
                rt.stop(&h, grace).await?;
            }
            (KernelState::Restarting, Some(h)) => {
                // Stopping cancels the restart; the process had already exited, so no end
                // event follows: look once more and record the end.
                rt.stop(&h, grace).await?;
                let st = rt.status(&h).await?;
                self.on_event(RuntimeEvent {
                    kernel_id: id.to_string(),
                    instance: h.instance.clone(),
                    what: Observed::Changed(st),
                })
                .await;
            }
            (_, handle) => {
                if let Some(h) = handle {
                    rt.destroy(&h).await?;
                }
                return Ok(());
            }
        }
        let mut rx = rx;
        let _ = tokio::time::timeout(
            grace + Duration::from_secs(30),
            rx.wait_for(|s| s.is_final() || *s == KernelState::Uploading),
        )
        .await;
        Ok(())
    }

    pub(super) async fn remove(&self, id: &str, force: bool) -> Result<(), KernelError> {
        let (rec, rt) = self.with_runtime(id)?;
        let state = rec.state;
        if !state.is_final() {
            if !force {
                return Err(KernelError::WrongState(format!(
                    "cannot remove a kernel that is {state}; stop it first or remove with force"
                )));
            }
            let mut t = self.lock();
            let tr = if matches!(
                state,
                KernelState::Preparing
                    | KernelState::Pulling
                    | KernelState::Creating
                    | KernelState::Held
            ) {
                Transition::Terminate
            } else {
                Transition::Fail
            };
            let _ = self.transition(&mut t, id, tr, |r| r.reason = "removed by force".into());
        }
        if let Some(h) = &rec.handle {
            rt.destroy(h).await?;
        }
        let _ = self.0.registry.forget(id);
        let removed = self.lock().kernels.remove(id);
        if let Some(e) = removed {
            let mut rec = e.rec;
            rec.reason = "removed".into();
            self.emit(&rec);
            let used = self.process_still_used(&rec);
            rt.release(&rec, used, &self.config()).await;
        }
        Ok(())
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<(), KernelError> {
        let (rec, rt) = self.capable(id, "signal", |c| c.signal)?;
        if !matches!(
            rec.state,
            KernelState::Running | KernelState::Suspended | KernelState::Terminating
        ) {
            return Err(Self::wrong("signal", rec.state));
        }
        let Some(h) = &rec.handle else {
            return Err(Self::wrong("signal", rec.state));
        };
        rt.signal(h, signal).await?;
        Ok(())
    }

    /// Pauses (suspend) or unpauses (resume) the kernel, then records the transition
    /// unless the runtime's event for it got there first.
    async fn freeze(&self, id: &str, suspend: bool) -> Result<(), KernelError> {
        let (tr, from) = if suspend {
            (Transition::Suspend, KernelState::Running)
        } else {
            (Transition::Resume, KernelState::Suspended)
        };
        let op = if suspend { "suspend" } else { "resume" };
        let (rec, rt) = self.capable(id, op, |c| c.suspend)?;
        rec.state.apply(tr)?;
        let Some(h) = &rec.handle else {
            return Err(Self::wrong(
                if suspend { "suspend" } else { "resume" },
                rec.state,
            ));
        };
        if suspend {
            rt.suspend(h).await?;
        } else {
            rt.resume(h).await?;
        }
        let mut t = self.lock();
        if t.kernels.get(id).map(|e| e.rec.state) == Some(from) {
            self.transition(&mut t, id, tr, |_| {})?;
        }
        Ok(())
    }

    async fn release(&self, id: &str) -> Result<(), KernelError> {
        let (rec, rt) = self.with_runtime(id)?;
        if rec.state == KernelState::Held {
            // What the kernel needs to start (its input file) must be there; else it stays
            // HELD.
            rt.ready_to_start(&rec)?;
        }
        {
            let mut t = self.lock();
            self.transition(&mut t, id, Transition::Release, |_| {})?;
        }
        if let Err(e) = self.start_kernel(id).await {
            self.fail(id, e.to_string());
            return Err(e);
        }
        Ok(())
    }
}
