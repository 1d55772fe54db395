//! The table of kernels and the one place their state changes: [`Supervisor::transition`]
//! applies a [`Transition`] through the state machine, gives slots back (once) on a final
//! state, persists the record and reports the change as a numbered event.

use std::collections::BTreeMap;

use tokio::sync::watch;

use super::arrays::ArrayRun;
use super::error::KernelError;
use super::events::KernelEvent;
use super::record::{now_ms, Record};
use super::state::{KernelState, Transition};
use super::supervisor::Supervisor;
use crate::runtime::PullProgress;

pub(super) struct Entry {
    pub rec: Record,
    pub state: watch::Sender<KernelState>,
    /// Set once the launch task owns this kernel (array tasks wait unlaunched).
    pub launched: bool,
    /// Loaded from the registry at start and not yet reconciled by recovery (kernels
    /// created since are never recovery's business).
    pub from_registry: bool,
}

#[derive(Default)]
pub(super) struct Table {
    pub kernels: BTreeMap<String, Entry>,
    pub arrays: BTreeMap<String, ArrayRun>,
    /// Kernels whose delayed restart is scheduled or under way, with the time it is due
    /// (see [`super::restarts`]): one restart per due time, however often it is asked.
    pub pending_restarts: BTreeMap<String, i64>,
}

impl Table {
    /// Kernels that run or are about to (launched, not final): what runtimes count.
    pub fn live(&self) -> Vec<&Record> {
        self.kernels
            .values()
            .filter(|e| !e.rec.state.is_final() && e.launched)
            .map(|e| &e.rec)
            .collect()
    }
}

impl Supervisor {
    /// Applies `tr` to kernel `id`; on a final state gives its slots back (once), and
    /// persists and reports the change.
    pub(super) fn transition(
        &self,
        t: &mut Table,
        id: &str,
        tr: Transition,
        update: impl FnOnce(&mut Record),
    ) -> Result<KernelState, KernelError> {
        let e = t
            .kernels
            .get_mut(id)
            .ok_or_else(|| KernelError::NotFound(id.into()))?;
        let next = e.rec.state.apply(tr)?;
        e.rec.state = next;
        update(&mut e.rec);
        if next.is_final() {
            e.rec.slots = None;
            if e.rec.finished_at_ms == 0 {
                e.rec.finished_at_ms = now_ms();
            }
            // A runtime may stamp a very short-lived instance's end before its start; a
            // kernel never ends before it started.
            e.rec.finished_at_ms = e.rec.finished_at_ms.max(e.rec.started_at_ms);
            crate::telemetry::counters::agent().kernel_ended(id);
        }
        self.persist(&e.rec);
        self.emit(&e.rec);
        e.state.send_replace(next);
        if next.is_final() {
            let me = self.clone();
            // Outside the lock: arrays may start their next task.
            self.spawn(async move { me.pump_all() });
        }
        Ok(next)
    }

    /// Adds a record, persists it and reports its first state.
    pub(super) fn insert(
        &self,
        t: &mut Table,
        rec: Record,
        launched: bool,
    ) -> watch::Receiver<KernelState> {
        self.persist(&rec);
        self.emit(&rec);
        let (tx, rx) = watch::channel(rec.state);
        t.kernels.insert(
            rec.id.clone(),
            Entry {
                rec,
                state: tx,
                launched,
                from_registry: false,
            },
        );
        rx
    }

    pub(super) fn persist(&self, rec: &Record) {
        if let Err(e) = self.0.registry.save(rec) {
            tracing::error!(kernel_id = %rec.id, error = %e, "cannot persist kernel record");
        }
    }

    pub(super) fn emit(&self, rec: &Record) {
        tracing::info!(kernel_id = %rec.id, state = %rec.state, reason = %rec.reason, "kernel");
        self.0.events.push(KernelEvent {
            seq: 0,
            kernel_id: rec.id.clone(),
            state: rec.state,
            reason: rec.reason.clone(),
            at_ms: now_ms(),
            exit_code: rec.exit_code,
            agent_id: self.0.agent_id.clone(),
            pull: None,
            progress: rec.progress,
            part: rec.spec.cluster.as_ref().is_some_and(|c| c.is_part()),
        });
    }

    /// Reports something about a kernel that is not a state change (a pull's progress, a
    /// fallback taken), with its current state.
    pub(super) fn note(&self, id: &str, reason: String, pull: Option<PullProgress>) {
        let Ok(rec) = self.record(id) else { return };
        // Progress is only informative: while no manager takes events, it may fill at most a
        // tenth of the log, so it never pushes out state changes.
        let log = &self.0.events;
        if pull.is_some() && log.backlog() > log.capacity() / 10 {
            return;
        }
        if pull.is_none() {
            tracing::info!(kernel_id = %id, state = %rec.state, "{reason}");
        }
        let part = rec.spec.cluster.as_ref().is_some_and(|c| c.is_part());
        log.push(KernelEvent {
            seq: 0,
            kernel_id: rec.launch.id,
            part,
            state: rec.state,
            reason,
            at_ms: now_ms(),
            exit_code: rec.exit_code,
            agent_id: self.0.agent_id.clone(),
            pull,
            progress: rec.progress,
        });
    }

    /// Reports a profile kernel's progress (informative like pull progress: never more
    /// than a tenth of the event log while no manager takes events).
    pub(super) fn note_progress(&self, rec: &Record) {
        let log = &self.0.events;
        if log.backlog() > log.capacity() / 10 {
            return;
        }
        log.push(KernelEvent {
            seq: 0,
            kernel_id: rec.id.clone(),
            state: rec.state,
            reason: String::new(),
            at_ms: now_ms(),
            exit_code: rec.exit_code,
            agent_id: self.0.agent_id.clone(),
            pull: None,
            progress: rec.progress,
            part: rec.spec.cluster.as_ref().is_some_and(|c| c.is_part()),
        });
    }

    pub(super) fn record(&self, id: &str) -> Result<Record, KernelError> {
        self.lock()
            .kernels
            .get(id)
            .map(|e| e.rec.clone())
            .ok_or_else(|| KernelError::NotFound(id.into()))
    }

    /// Marks a kernel FAILED with `reason` (unless it already ended).
    pub(super) fn fail(&self, id: &str, reason: String) {
        let mut t = self.lock();
        let _ = self.transition(&mut t, id, Transition::Fail, |r| r.reason = reason);
    }

    /// A field of a kernel's record, if it exists (without cloning the record).
    pub(super) fn with_record<T>(&self, id: &str, f: impl FnOnce(&Record) -> T) -> Option<T> {
        self.lock().kernels.get(id).map(|e| f(&e.rec))
    }
}
