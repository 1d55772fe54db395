//! The manager's view of each agent's free slots, kept current between heartbeats, and the
//! slot arithmetic of placement (what a kernel needs, what fits where).
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

use crate::config::schema;
use crate::wire::pb::{self, AgentState, AgentSummary, KernelInfo, ResourceSlots, SlotAmounts};

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

fn is_zero(s: &SlotAmounts) -> bool {
    s.cpu <= 0.0 && s.memory_bytes == 0 && s.gpus == 0
}

/// What an agent could give kernels at most: total − reserved.
pub fn capacity(slots: &ResourceSlots) -> SlotAmounts {
    let total = slots.total.unwrap_or_default();
    let reserved = slots.reserved.unwrap_or_default();
    SlotAmounts {
        cpu: (total.cpu - reserved.cpu).max(0.0),
        memory_bytes: total.memory_bytes.saturating_sub(reserved.memory_bytes),
        gpus: total.gpus.saturating_sub(reserved.gpus),
    }
}

/// What one kernel (or one array task; all instances of a cluster kernel) needs, read from
/// the spec the way the agent will.
pub fn demand(spec: &pb::KernelSpec) -> SlotAmounts {
    let gpus = match spec.gpus.trim() {
        "" => 0,
        "all" => 1,
        g => g
            .parse::<u32>()
            .unwrap_or_else(|_| g.split(',').count() as u32),
    };
    // A cluster kernel's instances are placed together, on one agent.
    let n = spec.instances.max(1);
    SlotAmounts {
        cpu: spec.cpus.max(0.0) * f64::from(n),
        memory_bytes: schema::parse_bytes(&spec.memory).unwrap_or(0) * u64::from(n),
        gpus: gpus * n,
    }
}

/// The slots of `need` that `have` cannot cover (`["gpus"]`), empty when it fits.
pub fn short_of(have: &SlotAmounts, need: &SlotAmounts) -> Vec<&'static str> {
    let mut short = Vec::new();
    if have.cpu + 1e-9 < need.cpu {
        short.push("cpu");
    }
    if have.memory_bytes < need.memory_bytes {
        short.push("memory");
    }
    if have.gpus < need.gpus {
        short.push("gpus");
    }
    short
}

/// `cpu 0.5, memory 64.0 MiB, gpus 1`.
pub fn describe(s: &SlotAmounts) -> String {
    format!(
        "cpu {}, memory {}, gpus {}",
        s.cpu,
        crate::config::schema::show_bytes(s.memory_bytes),
        s.gpus
    )
}

/// The agents to ask for a kernel needing `need`, in order.
#[derive(Debug, Default)]
pub struct Plan {
    /// ALIVE agents the view says have room, most free CPU first.
    pub fit: Vec<AgentSummary>,
    /// ALIVE agents the view says are full but whose capacity could hold it (the view may
    /// be behind), most free CPU first.
    pub maybe: Vec<AgentSummary>,
}

/// Orders the agents (each with its free slots in the view) for `need`.
pub fn plan(agents: &[(AgentSummary, SlotAmounts)], need: &SlotAmounts) -> Plan {
    let mut alive: Vec<&(AgentSummary, SlotAmounts)> = agents
        .iter()
        .filter(|(a, _)| a.state == AgentState::Alive as i32)
        .collect();
    alive.sort_by(|(_, fa), (_, fb)| fb.cpu.total_cmp(&fa.cpu));
    let mut plan = Plan::default();
    for (a, free) in alive {
        if short_of(free, need).is_empty() {
            plan.fit.push(a.clone());
        } else if short_of(&capacity(&a.slots.unwrap_or_default()), need).is_empty() {
            plan.maybe.push(a.clone());
        }
    }
    plan
}

/// How many instances needing `per` each fit in `free` (`cap` when `per` asks nothing).
fn how_many(free: &SlotAmounts, per: &SlotAmounts, cap: u32) -> u32 {
    let mut n = cap;
    if per.cpu > 0.0 {
        n = n.min(((free.cpu + 1e-9) / per.cpu).floor().max(0.0) as u32);
    }
    if let Some(m) = free.memory_bytes.checked_div(per.memory_bytes) {
        n = n.min(m.min(u64::from(cap)) as u32);
    }
    if let Some(g) = free.gpus.checked_div(per.gpus) {
        n = n.min(g);
    }
    n
}

/// The swarm an agent's Docker engine is in, and whether it is a manager of it.
fn swarm(a: &AgentSummary) -> Option<(&str, bool)> {
    a.runtimes
        .iter()
        .find(|r| r.name == "docker" && !r.swarm.is_empty())
        .map(|r| (r.swarm.as_str(), r.swarm_manager))
}

/// How a cluster kernel of `instances` instances, each needing `per`, spans the ALIVE
/// agents of one Docker swarm when no single agent holds it: the owner (an agent whose
/// engine is a manager of the swarm, most room first) takes the master and as many workers
/// as it has room for, the other agents of its swarm the rest, most room first. Each entry
/// is an agent and how many instances it takes, the owner first; `None` when no swarm
/// has room for all of them.
pub fn span_plan(
    agents: &[(AgentSummary, SlotAmounts)],
    per: &SlotAmounts,
    instances: u32,
) -> Option<Vec<(AgentSummary, u32)>> {
    let mut alive: Vec<(&AgentSummary, u32)> = agents
        .iter()
        .filter(|(a, _)| a.state == AgentState::Alive as i32 && swarm(a).is_some())
        .map(|(a, free)| (a, how_many(free, per, instances)))
        .filter(|(_, n)| *n > 0)
        .collect();
    alive.sort_by_key(|x| std::cmp::Reverse(x.1));
    for &(owner, room) in alive.iter().filter(|(a, _)| swarm(a).is_some_and(|s| s.1)) {
        let group = swarm(owner).map(|s| s.0);
        let mut plan = vec![(owner.clone(), room.min(instances))];
        let mut placed = room.min(instances);
        for &(peer, room) in &alive {
            if placed == instances {
                break;
            }
            if std::ptr::eq(peer, owner) || swarm(peer).map(|s| s.0) != group {
                continue;
            }
            let take = room.min(instances - placed);
            plan.push((peer.clone(), take));
            placed += take;
        }
        if placed == instances && plan.len() > 1 {
            return Some(plan);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::{AgentIdentity, KernelState};

    const MIB: u64 = 1 << 20;

    fn amounts(cpu: f64, mib: u64, gpus: u32) -> SlotAmounts {
        SlotAmounts {
            cpu,
            memory_bytes: mib * MIB,
            gpus,
        }
    }

    /// An agent with 4 CPUs, 1 GiB, 1 GPU, 128 MiB reserved, and `free` free.
    fn slots(free: SlotAmounts) -> ResourceSlots {
        ResourceSlots {
            total: Some(amounts(4.0, 1024, 1)),
            reserved: Some(amounts(0.0, 128, 0)),
            allocated: None,
            free: Some(free),
        }
    }

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

    fn agent(id: &str, state: AgentState, free: SlotAmounts) -> (AgentSummary, SlotAmounts) {
        let summary = AgentSummary {
            identity: Some(AgentIdentity {
                agent_id: id.into(),
                ..Default::default()
            }),
            state: state as i32,
            slots: Some(slots(free)),
            ..Default::default()
        };
        (summary, free)
    }

    fn ids(list: &[AgentSummary]) -> Vec<String> {
        list.iter()
            .map(|a| a.identity.clone().unwrap_or_default().agent_id)
            .collect()
    }

    fn in_swarm(id: &str, gpus: u32, swarm: &str, manager: bool) -> (AgentSummary, SlotAmounts) {
        let (mut a, free) = agent(id, AgentState::Alive, amounts(4.0, 896, gpus));
        a.runtimes = vec![pb::RuntimeInfo {
            name: "docker".into(),
            swarm: swarm.into(),
            swarm_manager: manager,
            ..Default::default()
        }];
        (a, free)
    }

    #[test]
    fn a_cluster_spans_the_agents_of_one_swarm_owned_by_a_manager_with_room() {
        let per = amounts(0.0, 0, 1);
        let agents = [
            in_swarm("w1", 2, "s", false),
            in_swarm("m1", 1, "s", true),
            in_swarm("other", 8, "t", false),
            in_swarm("w2", 1, "s", false),
        ];
        let plan = span_plan(&agents, &per, 3).expect("fits across swarm s");
        let got: Vec<(String, u32)> = plan
            .iter()
            .map(|(a, n)| (a.identity.clone().unwrap_or_default().agent_id, *n))
            .collect();
        assert_eq!(got, [("m1".to_string(), 1), ("w1".to_string(), 2)]);
        // Four GPUs in swarm s at most: five instances fit nowhere; another swarm's agent
        // never helps, and a swarm without a manager owns nothing.
        assert!(span_plan(&agents, &per, 5).is_none());
        let no_manager = [in_swarm("w1", 2, "s", false), in_swarm("w2", 2, "s", false)];
        assert!(span_plan(&no_manager, &per, 3).is_none());
        let no_swarm = [
            agent("a", AgentState::Alive, amounts(4.0, 896, 2)),
            agent("b", AgentState::Alive, amounts(4.0, 896, 2)),
        ];
        assert!(span_plan(&no_swarm, &per, 3).is_none());
    }

    #[test]
    fn the_plan_puts_agents_with_room_first_then_those_whose_capacity_could_fit() {
        let agents = [
            agent("full", AgentState::Alive, amounts(3.0, 896, 0)),
            agent("roomy", AgentState::Alive, amounts(1.0, 896, 1)),
            agent("roomier", AgentState::Alive, amounts(2.0, 896, 1)),
            agent("lost", AgentState::Lost, amounts(4.0, 896, 1)),
        ];
        let p = plan(&agents, &amounts(0.0, 0, 1));
        assert_eq!(ids(&p.fit), ["roomier", "roomy"]);
        assert_eq!(ids(&p.maybe), ["full"]);
        // More memory than any agent has after its reserve: nobody to ask.
        let p = plan(&agents, &amounts(0.0, 1000, 0));
        assert!(p.fit.is_empty() && p.maybe.is_empty());
        assert_eq!(
            short_of(&amounts(4.0, 896, 1), &amounts(0.0, 1000, 2)),
            ["memory", "gpus"]
        );
    }

    #[test]
    fn demand_reads_the_spec_as_the_agent_does() {
        let spec = pb::KernelSpec {
            cpus: 0.5,
            memory: "64MiB".into(),
            gpus: "GPU-a,GPU-b".into(),
            ..Default::default()
        };
        assert_eq!(demand(&spec), amounts(0.5, 64, 2));
        let spec = pb::KernelSpec {
            gpus: "all".into(),
            ..Default::default()
        };
        assert_eq!(demand(&spec).gpus, 1);
    }

    #[test]
    fn a_cluster_kernel_needs_all_of_its_instances_on_one_agent() {
        let spec = pb::KernelSpec {
            cpus: 0.5,
            memory: "64MiB".into(),
            gpus: "1".into(),
            instances: 3,
            ..Default::default()
        };
        assert_eq!(demand(&spec), amounts(1.5, 192, 3));
    }
}
