//! The slot arithmetic of placement: what a kernel needs (read from its spec the way the
//! agent will), what an agent could hold at most, whether one fits, and the order in which
//! agents are asked, including how a cluster kernel spans one Docker swarm. Pure functions
//! of the agents' summaries; the current free slots come from the view (`slots.rs`).

use crate::config::schema;
use crate::wire::pb::{self, AgentState, AgentSummary, ResourceSlots, SlotAmounts};

pub fn is_zero(s: &SlotAmounts) -> bool {
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
pub(super) mod tests {
    use super::*;
    use crate::wire::pb::AgentIdentity;

    const MIB: u64 = 1 << 20;

    pub(in crate::manager) fn amounts(cpu: f64, mib: u64, gpus: u32) -> SlotAmounts {
        SlotAmounts {
            cpu,
            memory_bytes: mib * MIB,
            gpus,
        }
    }

    /// An agent with 4 CPUs, 1 GiB, 1 GPU, 128 MiB reserved, and `free` free.
    pub(in crate::manager) fn slots(free: SlotAmounts) -> ResourceSlots {
        ResourceSlots {
            total: Some(amounts(4.0, 1024, 1)),
            reserved: Some(amounts(0.0, 128, 0)),
            allocated: None,
            free: Some(free),
        }
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
