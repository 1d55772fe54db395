//! Start-up recovery: after a restart (even `kill -9`), bring the kernel table and a
//! runtime's instances back into one consistent picture before following its events:
//!
//! - a kernel whose creation was interrupted (PREPARING, PULLING, CREATING), or a held one
//!   whose instance vanished, is created again — back to PREPARING through the table's
//!   `Relaunch` transition, like every state change — or taken as RUNNING, if its instance
//!   already started; queued array tasks wait their turn again;
//! - a kernel caught TERMINATING is stopped again (by the first resync that follows);
//! - an instance of ours with no record is re-adopted from what the instance says (the
//!   runtime rebuilds its record), so its slots, GPUs and ports are counted;
//! - the runtime puts back what a live kernel needs beside its instance (an empty home that
//!   vanished) and removes what no record owns (orphan homes, process data);
//! - a profile kernel's progress and SSH access are followed again, and an upload of
//!   results that was cut short starts over.
//!
//! Nothing outside this namespace and agent id is looked at (the runtime lists only its
//! own). Problems are logged, never a reason to fail start-up.

use std::collections::{BTreeSet, HashMap};

use super::record::Record;
use super::state::{KernelState, Transition};
use super::supervisor::Supervisor;
use crate::runtime::{Handle, Owned, Runtime, RuntimeError};

/// What recovery did, for the log line and the tests.
#[derive(Debug, Default)]
pub struct Recovered {
    pub relaunched: Vec<String>,
    pub adopted: Vec<String>,
    pub restored: Vec<String>,
    pub orphans_removed: Vec<String>,
}

impl Supervisor {
    /// Reconciles the records of `rt`'s kernels with its instances; see the module docs.
    pub(super) async fn recover(&self, rt: &dyn Runtime) -> Result<Recovered, RuntimeError> {
        let mut out = Recovered::default();
        let owned: HashMap<String, Handle> = rt
            .list_owned()
            .await?
            .into_iter()
            .map(|o| (o.kernel_id, o.handle))
            .collect();
        // The records of an earlier run; kernels created since start are not recovery's.
        let records: Vec<Record> = self
            .lock()
            .kernels
            .values()
            .filter(|e| e.from_registry && e.rec.runtime == rt.name())
            .map(|e| e.rec.clone())
            .collect();
        let cfg = self.config();
        for rec in &records {
            let instance = owned.get(&rec.id);
            match rec.state {
                KernelState::Preparing | KernelState::Pulling | KernelState::Creating
                    if rec.slots.is_some() =>
                {
                    if let Some(h) = instance {
                        let st = rt.status(h).await.unwrap_or_default();
                        if st.exists && st.started_at_ms > 0 && rec.state == KernelState::Creating {
                            // Started just before the crash: it runs (or ran) — never run it
                            // twice; the first resync reports an end.
                            let mut t = self.lock();
                            let started = st.started_at_ms;
                            let h = h.clone();
                            let _ = self.transition(&mut t, &rec.id, Transition::Started, |r| {
                                r.handle = Some(h);
                                r.started_at_ms = started;
                            });
                            continue;
                        }
                        // A half-made instance; if this fails, the relaunch deals with it.
                        if let Err(e) = rt.destroy(h).await {
                            tracing::warn!(kernel_id = %rec.id, error = %e, "cannot remove a half-made instance before relaunching");
                        }
                    }
                    if self.restart_creation(&rec.id, rec.state) {
                        out.relaunched.push(rec.id.clone());
                    }
                }
                KernelState::Held
                    if instance.is_none() && self.restart_creation(&rec.id, rec.state) =>
                {
                    out.relaunched.push(rec.id.clone());
                }
                _ => {}
            }
            if !rec.state.is_final() && rec.state != KernelState::Preparing {
                if let Some(note) = rt.restore(rec, &cfg).await {
                    self.note(&rec.id, note, None);
                    out.restored.push(rec.id.clone());
                }
            }
        }
        let known: BTreeSet<String> = self.ids();
        for (kid, handle) in &owned {
            if known.contains(kid) {
                continue;
            }
            let o = Owned {
                kernel_id: kid.clone(),
                handle: handle.clone(),
            };
            match rt.adopt(&o, &cfg).await {
                Ok(None) => {}
                Ok(Some(adopted)) => {
                    let rec = Record::adopted(adopted);
                    tracing::warn!(kernel_id = %kid, instance = %handle.instance, state = %rec.state, "re-adopted an instance that had no record");
                    let mut t = self.lock();
                    self.insert(&mut t, rec, true);
                    out.adopted.push(kid.clone());
                }
                Err(e) => {
                    tracing::warn!(kernel_id = %kid, instance = %handle.instance, error = %e, "cannot re-adopt an instance without a record; left as it is")
                }
            }
        }
        {
            let mut t = self.lock();
            for rec in &records {
                if let Some(e) = t.kernels.get_mut(&rec.id) {
                    e.from_registry = false;
                }
            }
        }
        // What follows a profile kernel while it runs, or finishes it after it ended.
        for rec in &records {
            match self.with_record(&rec.id, |r| r.state) {
                Some(KernelState::Running | KernelState::Suspended | KernelState::Restarting) => {
                    self.follow_progress(&rec.id);
                    self.serve_ssh(&rec.id);
                }
                Some(KernelState::Uploading) => {
                    let me = self.clone();
                    let id = rec.id.clone();
                    self.spawn(async move { me.upload_results(id).await });
                }
                _ => {}
            }
        }
        out.orphans_removed = {
            let recs: Vec<Record> = self
                .lock()
                .kernels
                .values()
                .map(|e| e.rec.clone())
                .collect();
            rt.remove_orphans(&recs.iter().map(|r| &r.launch).collect::<Vec<_>>(), &cfg)
        };
        self.pump_all();
        Ok(out)
    }

    /// Puts a kernel whose creation was interrupted back to PREPARING and creates it again —
    /// unless something (a stop or removal arriving meanwhile) changed it since recovery
    /// looked. Returns whether it was relaunched.
    fn restart_creation(&self, id: &str, was: KernelState) -> bool {
        {
            let mut t = self.lock();
            let Some(e) = t.kernels.get_mut(id) else {
                return false;
            };
            if e.rec.state != was || !e.from_registry {
                return false;
            }
            let relaunched = self.transition(&mut t, id, Transition::Relaunch, |r| {
                r.handle = None;
                r.reason =
                    format!("the agent restarted while the kernel was {was}; creating it again");
            });
            match t.kernels.get_mut(id) {
                Some(e) if relaunched.is_ok() => e.launched = true,
                _ => return false,
            }
        }
        let me = self.clone();
        let id = id.to_string();
        self.spawn(async move { me.launch(id).await });
        true
    }
}
