//! The manager's view of each agent's free slots, kept current between heartbeats (the
//! slot arithmetic of placement, what a kernel needs and what fits where, is `fit.rs`).
//!
//! A heartbeat says what an agent had free when it was sent. Before the next one the
//! manager learns of changes itself: its own placements, the removals and stops it
//! forwards, and kernels' ends reported in events (`ReportEvents`). The view is the
//! heartbeat's free slots plus a per-agent adjustment for those changes; each heartbeat is
//! the authority and resets the adjustment. What each kernel holds is remembered per
//! kernel, so an end seen twice (the forwarded removal and then its event) gives its slots
//! back once, and a kernel placed twice (the same id again) takes them once.
//!
//! The view is a hint for choosing agents, not a promise: the agent still decides, and when
//! the view says nothing fits, placement asks the agents whose capacity could
//! (`placement.rs`).

use std::collections::{HashMap, VecDeque};

use super::fit::{capacity, is_zero};
use crate::wire::pb::{self, KernelInfo, ResourceSlots, SlotAmounts};

/// Kernels whose end was seen are remembered (for a placement reply that arrives after its
/// kernel's end event) up to this many.
const ENDED_KEPT: usize = 10_000;

/// Slots given back (positive) or taken (negative) since an agent's last heartbeat.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Delta {
    cpu: f64,
    memory: i128,
    gpus: i64,
}

impl Delta {
    fn add(&mut self, s: &SlotAmounts, sign: i8) {
        self.cpu += f64::from(sign) * s.cpu;
        self.memory += i128::from(sign) * i128::from(s.memory_bytes);
        self.gpus += i64::from(sign) * i64::from(s.gpus);
    }
}

/// What a kernel this manager knows holds, and where.
#[derive(Debug, Clone)]
struct Held {
    agent_id: String,
    slots: SlotAmounts,
}

/// Free slots per agent as the manager believes them now; see the module doc.
#[derive(Debug, Default)]
pub struct SlotView {
    delta: HashMap<String, Delta>,
    held: HashMap<String, Held>,
    /// Kernel id → when (agent's Unix ms) its end was seen; oldest first in `ended_order`.
    ended: HashMap<String, i64>,
    ended_order: VecDeque<String>,
}

impl SlotView {
    /// A heartbeat from `agent_id` arrived: its free slots are the truth again.
    pub fn heartbeat(&mut self, agent_id: &str) {
        self.delta.remove(agent_id);
    }

    /// Kernels `agent_id` just created for this manager: each takes what it holds. A
    /// kernel already known, final, or seen ending since it was created takes nothing.
    pub fn placed(&mut self, agent_id: &str, kernels: &[KernelInfo]) {
        for k in kernels {
            let ended_since = self
                .ended
                .get(&k.kernel_id)
                .is_some_and(|at| *at >= k.created_at_ms);
            if self.held.contains_key(&k.kernel_id) || ended_since || is_final(k.state) {
                continue;
            }
            let slots = k.slots.unwrap_or_default();
            if is_zero(&slots) {
                continue;
            }
            self.delta
                .entry(agent_id.to_string())
                .or_default()
                .add(&slots, -1);
            self.held.insert(
                k.kernel_id.clone(),
                Held {
                    agent_id: agent_id.to_string(),
                    slots,
                },
            );
        }
    }

    /// Kernels `agent_id` already had when it last reported (found on reconciling): their
    /// slots are in its heartbeats already; remembered so their end gives them back.
    pub fn known(&mut self, agent_id: &str, kernels: &[KernelInfo]) {
        for k in kernels {
            let slots = k.slots.unwrap_or_default();
            if is_final(k.state) || is_zero(&slots) {
                continue;
            }
            self.held.entry(k.kernel_id.clone()).or_insert(Held {
                agent_id: agent_id.to_string(),
                slots,
            });
        }
    }

    /// Kernel `kernel_id` ended (a final state or its removal, seen at agent time `at_ms`):
    /// what it held goes back to its agent, once.
    pub fn ended(&mut self, kernel_id: &str, at_ms: i64) {
        self.give_back(kernel_id);
        match self.ended.get_mut(kernel_id) {
            Some(at) => *at = (*at).max(at_ms),
            None => {
                self.ended.insert(kernel_id.to_string(), at_ms);
                self.ended_order.push_back(kernel_id.to_string());
            }
        }
        while self.ended_order.len() > ENDED_KEPT {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    /// A forwarded removal of `kernel_id` succeeded: the kernel, or an array's every task,
    /// gives back what it held.
    pub fn removed(&mut self, kernel_id: &str) {
        let prefix = format!("{kernel_id}.");
        let ids: Vec<String> = self
            .held
            .keys()
            .filter(|k| *k == kernel_id || k.starts_with(&prefix))
            .cloned()
            .collect();
        for id in ids {
            self.give_back(&id);
        }
    }

    /// Kernel `kernel_id` is not on its agent after all (lost on reconciling): its slots
    /// are not in the agent's heartbeats, so nothing goes back.
    pub fn forget(&mut self, kernel_id: &str) {
        self.held.remove(kernel_id);
    }

    fn give_back(&mut self, kernel_id: &str) {
        if let Some(h) = self.held.remove(kernel_id) {
            self.delta.entry(h.agent_id).or_default().add(&h.slots, 1);
        }
    }

    /// `agent_id`'s free slots now: its last heartbeat's, adjusted, within
    /// [0, total − reserved].
    pub fn free(&self, agent_id: &str, slots: &ResourceSlots) -> SlotAmounts {
        let free = slots.free.unwrap_or_default();
        let cap = capacity(slots);
        let d = self.delta.get(agent_id).copied().unwrap_or_default();
        SlotAmounts {
            cpu: (free.cpu + d.cpu).min(cap.cpu).max(0.0),
            memory_bytes: (i128::from(free.memory_bytes) + d.memory)
                .clamp(0, i128::from(cap.memory_bytes)) as u64,
            gpus: (i64::from(free.gpus) + d.gpus).clamp(0, i64::from(cap.gpus)) as u32,
        }
    }
}

/// Whether a kernel in `state` is done for good (DONE, FAILED, CANCELLED).
pub fn is_final(state: i32) -> bool {
    use pb::KernelState as S;
    matches!(S::try_from(state), Ok(S::Done | S::Failed | S::Cancelled))
}

#[cfg(test)]
mod tests {
    use super::super::fit::tests::{amounts, slots};
    use super::*;
    use crate::wire::pb::KernelState;

    fn kernel(id: &str, state: KernelState, held: SlotAmounts, created: i64) -> KernelInfo {
        KernelInfo {
            kernel_id: id.into(),
            state: state as i32,
            slots: Some(held),
            created_at_ms: created,
            ..Default::default()
        }
    }

    fn gpu_kernel(id: &str) -> KernelInfo {
        kernel(id, KernelState::Running, amounts(1.0, 64, 1), 100)
    }

    #[test]
    fn a_placement_takes_and_a_removal_gives_back_at_once() {
        let mut v = SlotView::default();
        let hb = slots(amounts(4.0, 896, 1));
        v.placed("a", &[gpu_kernel("k1")]);
        assert_eq!(v.free("a", &hb), amounts(3.0, 832, 0));
        v.removed("k1");
        assert_eq!(v.free("a", &hb), amounts(4.0, 896, 1));
        assert_eq!(
            v.free("b", &hb),
            amounts(4.0, 896, 1),
            "other agents untouched"
        );
    }

    #[test]
    fn an_end_event_gives_back_what_the_kernel_held_and_only_once() {
        let mut v = SlotView::default();
        // The heartbeat was sent while k1 ran: nothing free.
        let hb = slots(amounts(3.0, 832, 0));
        v.known("a", &[gpu_kernel("k1")]);
        assert_eq!(v.free("a", &hb), amounts(3.0, 832, 0));
        v.ended("k1", 200);
        assert_eq!(v.free("a", &hb), amounts(4.0, 896, 1));
        // Its removal forwarded afterwards, and the event again: nothing more.
        v.removed("k1");
        v.ended("k1", 200);
        assert_eq!(v.free("a", &hb), amounts(4.0, 896, 1));
    }

    #[test]
    fn a_heartbeat_resets_the_adjustment_but_remembers_what_kernels_hold() {
        let mut v = SlotView::default();
        v.placed("a", &[gpu_kernel("k1")]);
        v.heartbeat("a");
        // The heartbeat counted k1 as allocated.
        let hb = slots(amounts(3.0, 832, 0));
        assert_eq!(v.free("a", &hb), amounts(3.0, 832, 0));
        v.removed("k1");
        assert_eq!(v.free("a", &hb), amounts(4.0, 896, 1));
    }

    #[test]
    fn the_same_kernel_placed_twice_takes_once() {
        let mut v = SlotView::default();
        let hb = slots(amounts(4.0, 896, 1));
        v.placed("a", &[gpu_kernel("k1")]);
        v.placed("a", &[gpu_kernel("k1")]);
        assert_eq!(v.free("a", &hb), amounts(3.0, 832, 0));
    }

    #[test]
    fn a_reply_arriving_after_its_kernels_end_event_takes_nothing() {
        let mut v = SlotView::default();
        let hb = slots(amounts(4.0, 896, 1));
        v.ended("k1", 150);
        v.placed("a", &[gpu_kernel("k1")]);
        assert_eq!(v.free("a", &hb), amounts(4.0, 896, 1));
        // The same id created again later is a new kernel.
        v.placed(
            "a",
            &[kernel("k1", KernelState::Running, amounts(1.0, 64, 1), 300)],
        );
        assert_eq!(v.free("a", &hb), amounts(3.0, 832, 0));
    }

    #[test]
    fn final_and_queued_kernels_take_nothing() {
        let mut v = SlotView::default();
        let hb = slots(amounts(4.0, 896, 1));
        v.placed(
            "a",
            &[
                kernel("done", KernelState::Done, amounts(1.0, 64, 1), 100),
                kernel("arr.1", KernelState::Preparing, SlotAmounts::default(), 100),
            ],
        );
        assert_eq!(v.free("a", &hb), amounts(4.0, 896, 1));
    }

    #[test]
    fn removing_an_array_gives_back_every_task() {
        let mut v = SlotView::default();
        let hb = slots(amounts(4.0, 896, 1));
        let task = |id: &str| kernel(id, KernelState::Running, amounts(1.0, 0, 0), 100);
        v.placed("a", &[task("arr.1"), task("arr.2"), task("arrow")]);
        assert_eq!(v.free("a", &hb).cpu, 1.0);
        v.removed("arr");
        assert_eq!(v.free("a", &hb).cpu, 3.0, "`arrow` is not a task of `arr`");
    }

    #[test]
    fn a_lost_kernel_is_forgotten_without_giving_back() {
        let mut v = SlotView::default();
        let hb = slots(amounts(4.0, 896, 1));
        v.known("a", &[gpu_kernel("k1")]);
        v.forget("k1");
        v.ended("k1", 200);
        assert_eq!(v.free("a", &hb), amounts(4.0, 896, 1));
    }

    #[test]
    fn the_view_stays_within_zero_and_capacity() {
        let mut v = SlotView::default();
        // A stale heartbeat: it already counted k1 free, then k1 ended.
        let hb = slots(amounts(4.0, 896, 1));
        v.known("a", &[gpu_kernel("k1")]);
        v.ended("k1", 200);
        assert_eq!(v.free("a", &hb), amounts(4.0, 896, 1));
        let full = slots(SlotAmounts::default());
        v.placed("a", &[gpu_kernel("k2")]);
        v.heartbeat("a");
        v.placed("a", &[gpu_kernel("k3")]);
        assert_eq!(v.free("a", &full), SlotAmounts::default());
    }
}
