//! The manager's view of kernels: which agent holds which kernel (from placements and from
//! agents' events) and the last event sequence taken per agent process. What they hold is
//! in the slot view (`slots.rs`).

use std::collections::HashMap;

use crate::wire::pb::KernelEvent;

#[derive(Default)]
pub struct KernelDirectory {
    /// Kernel id (or array id) → agent id.
    location: HashMap<String, String>,
    /// Agent id → (instance id, last sequence number taken).
    taken: HashMap<String, (String, u64)>,
    /// Agent id → the instance last reconciled with `SyncKernels`.
    synced: HashMap<String, String>,
}

impl KernelDirectory {
    pub fn place(&mut self, kernel_id: &str, agent_id: &str) {
        self.location
            .insert(kernel_id.to_string(), agent_id.to_string());
    }

    /// The agent holding `kernel_id` (a task id falls back to its array's placement).
    pub fn locate(&self, kernel_id: &str) -> Option<&str> {
        self.location
            .get(kernel_id)
            .or_else(|| {
                kernel_id
                    .rsplit_once('.')
                    .and_then(|(array, _)| self.location.get(array))
            })
            .map(String::as_str)
    }

    pub fn forget(&mut self, kernel_id: &str) {
        self.location.remove(kernel_id);
    }

    /// Whether agent process (`agent_id`, `instance_id`) has not been reconciled with
    /// `SyncKernels` yet; marks it as reconciled.
    pub fn first_sight(&mut self, agent_id: &str, instance_id: &str) -> bool {
        self.synced
            .insert(agent_id.to_string(), instance_id.to_string())
            != Some(instance_id.to_string())
    }

    /// Forgets that `agent_id` was reconciled, so the next heartbeat tries again.
    pub fn sync_failed(&mut self, agent_id: &str) {
        self.synced.remove(agent_id);
    }

    /// Kernel (and array) ids this directory places on `agent_id`.
    pub fn located_at(&self, agent_id: &str) -> Vec<String> {
        self.location
            .iter()
            .filter(|(_, a)| a.as_str() == agent_id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The last sequence number taken from this agent process (0 for a new process).
    pub fn last_taken(&self, agent_id: &str, instance_id: &str) -> u64 {
        match self.taken.get(agent_id) {
            Some((instance, last)) if instance == instance_id => *last,
            _ => 0,
        }
    }

    /// Takes the events not seen before from one agent process; returns the last sequence
    /// number now held. Events with a number already taken are duplicates and skipped.
    pub fn take(&mut self, agent_id: &str, instance_id: &str, events: &[KernelEvent]) -> u64 {
        let entry = self
            .taken
            .entry(agent_id.to_string())
            .or_insert_with(|| (instance_id.to_string(), 0));
        if entry.0 != instance_id {
            *entry = (instance_id.to_string(), 0);
        }
        let mut last = entry.1;
        for ev in events {
            if ev.seq <= last {
                continue;
            }
            if ev.seq != last + 1 && last != 0 {
                tracing::warn!(
                    agent_id,
                    from = last + 1,
                    to = ev.seq - 1,
                    "kernel events missing (dropped by the agent while no manager answered)"
                );
            }
            last = ev.seq;
            if ev.part {
                // A peer's part of a spanning cluster kernel: the kernel is its owner's.
                continue;
            }
            if ev.reason == "removed" {
                self.location.remove(&ev.kernel_id);
            } else {
                self.location
                    .insert(ev.kernel_id.clone(), agent_id.to_string());
            }
        }
        entry.1 = last;
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, id: &str) -> KernelEvent {
        KernelEvent {
            seq,
            kernel_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn duplicates_are_skipped_and_a_new_agent_process_starts_over() {
        let mut d = KernelDirectory::default();
        assert_eq!(d.take("a", "i1", &[ev(1, "k1"), ev(2, "k2")]), 2);
        assert_eq!(d.take("a", "i1", &[ev(2, "k2"), ev(3, "k3")]), 3);
        assert_eq!(d.locate("k3"), Some("a"));
        assert_eq!(d.take("a", "i2", &[ev(1, "k4")]), 1);
        assert_eq!(d.locate("k4"), Some("a"));
        assert_eq!(d.locate("unknown.7"), None);
        d.place("arr", "b");
        assert_eq!(d.locate("arr.7"), Some("b"));
    }
}
