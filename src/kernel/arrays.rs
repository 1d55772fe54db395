//! Job arrays (DRMAA2 bulk jobs): tasks `<array>.<index>` made from one template, at most
//! `max_parallel` running, the next starting (when the agent has room) as one ends. The
//! queue of tasks not launched yet is rebuilt from the records after a restart.

use std::collections::{BTreeMap, VecDeque};

use super::error::KernelError;
use super::state::KernelState;
use super::supervisor::{KernelView, Supervisor};
use crate::runtime::Runtime;
use crate::spec::{ArrayRange, Spec, Template};

pub(super) struct ArrayRun {
    pub digest: String,
    pub shown: Template,
    pub range: ArrayRange,
    /// Task ids not launched yet, in index order.
    pub pending: VecDeque<String>,
}

impl Supervisor {
    pub(super) fn create_array(
        &self,
        shown: &Template,
        spec: Spec,
        range: ArrayRange,
        digest: &str,
        rt: &dyn Runtime,
    ) -> Result<Vec<KernelView>, KernelError> {
        let id = shown.kernel_id.clone();
        let cfg = self.config();
        {
            let mut t = self.lock();
            if let Some(a) = t.arrays.get(&id) {
                let same = if a.digest.is_empty() {
                    a.shown == shown.masked()
                } else {
                    a.digest == digest
                };
                if !same {
                    return Err(KernelError::Conflict(id));
                }
            } else {
                if t.kernels.contains_key(&id) {
                    return Err(KernelError::Conflict(id));
                }
                // One task must fit on this agent at all (not necessarily now).
                self.allocate(&Default::default(), &spec, &cfg, rt)?;
                let mut pending = VecDeque::new();
                for index in range.indices() {
                    let task_id = format!("{id}.{index}");
                    let (task_shown, task_spec) = task_template(shown, &spec, index);
                    let mut rec =
                        self.new_record(&task_id, &task_shown, task_spec, digest, rt, None);
                    rec.array_id = Some(id.clone());
                    rec.task_index = index;
                    rec.array_range = Some(range);
                    self.insert(&mut t, rec, false);
                    pending.push_back(task_id);
                }
                t.arrays.insert(
                    id.clone(),
                    ArrayRun {
                        digest: digest.to_string(),
                        shown: shown.masked(),
                        range,
                        pending,
                    },
                );
            }
        }
        self.pump(&id);
        self.get(&id)
    }

    /// Launches queued tasks of an array while it is under its parallelism cap and the
    /// agent has room.
    pub(super) fn pump(&self, array_id: &str) {
        let cfg = self.config();
        let mut launch = Vec::new();
        {
            let mut t = self.lock();
            let Some(run) = t.arrays.get(array_id) else {
                return;
            };
            let cap = run.range.max_parallel;
            let prefix = format!("{array_id}.");
            let mut running = t
                .kernels
                .iter()
                .filter(|(k, e)| k.starts_with(&prefix) && e.launched && !e.rec.state.is_final())
                .count() as u32;
            loop {
                if cap > 0 && running >= cap {
                    break;
                }
                let Some(task_id) = t
                    .arrays
                    .get_mut(array_id)
                    .and_then(|r| r.pending.pop_front())
                else {
                    break;
                };
                let Some(e) = t.kernels.get(&task_id) else {
                    continue;
                };
                if e.rec.state != KernelState::Preparing {
                    continue;
                }
                let spec = e.rec.spec.clone();
                let allocated = self
                    .runtime(&e.rec.runtime)
                    .and_then(|rt| self.allocate(&t, &spec, &cfg, rt.as_ref()));
                match allocated {
                    Ok(a) => {
                        let Some(e) = t.kernels.get_mut(&task_id) else {
                            continue;
                        };
                        e.rec.granted = Some(a.slots.clone());
                        e.rec.slots = Some(a.slots);
                        e.rec.ports = a.ports;
                        e.rec.real_gpus = a.real_gpus;
                        e.launched = true;
                        self.persist(&e.rec);
                        running += 1;
                        launch.push(task_id);
                    }
                    Err(_) => {
                        // No room now: retried when another kernel ends.
                        if let Some(r) = t.arrays.get_mut(array_id) {
                            r.pending.push_front(task_id);
                        }
                        break;
                    }
                }
            }
        }
        for id in launch {
            let me = self.clone();
            self.spawn(async move { me.launch(id).await });
        }
    }

    /// After any kernel ended: arrays may start their next tasks.
    pub(super) fn pump_all(&self) {
        let ids: Vec<String> = self.lock().arrays.keys().cloned().collect();
        for id in ids {
            self.pump(&id);
        }
    }

    /// Rebuilds the array queues from the reloaded records (before anything launches).
    pub(super) fn rebuild_arrays(&self) {
        let mut t = self.lock();
        let mut arrays: BTreeMap<String, ArrayRun> = BTreeMap::new();
        let mut queued: Vec<(String, u32, String)> = Vec::new();
        for e in t.kernels.values() {
            let (Some(array), Some(range)) = (&e.rec.array_id, e.rec.array_range) else {
                continue;
            };
            arrays.entry(array.clone()).or_insert_with(|| {
                let mut shown = e.rec.shown_spec.clone();
                shown.kernel_id = array.clone();
                ArrayRun {
                    digest: e.rec.digest.clone(),
                    shown,
                    range,
                    pending: VecDeque::new(),
                }
            });
            if e.rec.state == KernelState::Preparing && e.rec.slots.is_none() {
                queued.push((array.clone(), e.rec.task_index, e.rec.id.clone()));
            }
        }
        queued.sort();
        for (array, _, id) in queued {
            if let Some(run) = arrays.get_mut(&array) {
                run.pending.push_back(id.clone());
            }
            if let Some(e) = t.kernels.get_mut(&id) {
                e.launched = false;
            }
        }
        t.arrays = arrays;
    }
}

/// The template of array task `index`: `DECKHAND_TASK_INDEX` set, `$DECKHAND_INDEX$`
/// replaced in the command, working dir and output/error paths.
fn task_template(shown: &Template, spec: &Spec, index: u32) -> (Template, Spec) {
    const MARK: &str = "$DECKHAND_INDEX$";
    let i = index.to_string();
    let sub = |s: &str| s.replace(MARK, &i);
    let mut shown = shown.clone();
    shown.kernel_id = format!("{}.{index}", shown.kernel_id);
    let mut spec = spec.clone();
    spec.command = spec.command.iter().map(|a| sub(a)).collect();
    spec.working_dir = sub(&spec.working_dir);
    spec.output_path = sub(&spec.output_path);
    spec.error_path = sub(&spec.error_path);
    spec.env.insert("DECKHAND_TASK_INDEX".into(), i.clone());
    shown.command = spec.command.clone();
    shown.working_dir = spec.working_dir.clone();
    shown.output_path = spec.output_path.clone();
    shown.error_path = spec.error_path.clone();
    shown.env.insert("DECKHAND_TASK_INDEX".into(), i);
    (shown, spec)
}
