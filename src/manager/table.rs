//! The manager's agent table, fed by etcd registrations and heartbeats.
//!
//! States are derived at read time, never stored: REGISTERED (key present, no heartbeat
//! yet), ALIVE, LOST (three heartbeat intervals without one), GONE (registration key
//! disappeared). GONE entries are dropped after the retention period.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::slots::SlotView;
use crate::cluster::drain::{DrainMode, NodeDrain, DRAIN_KEY};
use crate::cluster::{AgentRecord, Mirror};
use crate::wire::pb::{AgentIdentity, AgentState, AgentSummary, HeartbeatRequest, SlotAmounts};

/// Heartbeat intervals an agent may miss before it reads LOST.
pub const LOST_AFTER_MISSED: u32 = 3;

#[derive(Debug, Default)]
struct Entry {
    record: Option<AgentRecord>,
    registered: bool,
    gone_since: Option<Instant>,
    last: Option<HeartbeatRequest>,
    last_seen: Option<(Instant, SystemTime)>,
    heartbeats: u64,
}

/// All agents of the namespace that the manager knows.
#[derive(Debug)]
pub struct AgentTable {
    entries: BTreeMap<String, Entry>,
    /// Cordons and drains by agent id, from `nodes/agents/<id>/drain`.
    drains: BTreeMap<String, NodeDrain>,
    gone_retention: Duration,
    /// Free slots as the manager believes them between heartbeats.
    pub view: SlotView,
}

impl AgentTable {
    pub fn new(gone_retention: Duration) -> Self {
        Self {
            entries: BTreeMap::new(),
            drains: BTreeMap::new(),
            gone_retention,
            view: SlotView::default(),
        }
    }

    /// Applies the mirror of `nodes/agents/` (keys relative to it). Only `<id>` keys are
    /// registrations; `<id>/drain` are cordons and drains; `<id>/config/…` are config
    /// overrides and ignored here.
    pub fn sync_registrations(&mut self, mirror: &Mirror, now: Instant) {
        self.drains = mirror
            .kvs
            .iter()
            .filter_map(|(k, v)| {
                let id = k.strip_suffix(DRAIN_KEY)?.strip_suffix('/')?;
                if id.contains('/') {
                    return None;
                }
                let d = NodeDrain::parse(v);
                if d.is_none() {
                    tracing::warn!(agent_id = %id, "unreadable cordon/drain record in etcd; the agent reads as schedulable");
                }
                Some((id.to_string(), d?))
            })
            .collect();
        let records: BTreeMap<&str, Option<AgentRecord>> = mirror
            .kvs
            .iter()
            .filter(|(k, _)| !k.contains('/'))
            .map(|(k, v)| (k.as_str(), serde_json::from_str(v).ok()))
            .collect();
        for (id, record) in &records {
            let e = self.entries.entry(id.to_string()).or_default();
            e.registered = true;
            e.gone_since = None;
            if record.is_some() {
                e.record = record.clone();
            }
        }
        for (id, e) in self.entries.iter_mut() {
            if e.registered && !records.contains_key(id.as_str()) {
                e.registered = false;
                e.gone_since = Some(now);
                tracing::info!(agent_id = %id, "agent registration disappeared; marked GONE");
            }
        }
    }

    pub fn heartbeat(&mut self, req: HeartbeatRequest, now: Instant, wall: SystemTime) {
        let id = req
            .agent
            .as_ref()
            .map(|a| a.agent_id.clone())
            .unwrap_or_default();
        self.view.heartbeat(&id);
        let e = self.entries.entry(id).or_default();
        e.last_seen = Some((now, wall));
        e.heartbeats += 1;
        e.last = Some(req);
    }

    /// Every agent, sorted by id, with its state as of `now`; forgets GONE agents past the
    /// retention period.
    pub fn list(&mut self, now: Instant) -> Vec<AgentSummary> {
        let retention = self.gone_retention;
        self.entries.retain(|_, e| {
            e.gone_since
                .is_none_or(|since| now.duration_since(since) < retention)
        });
        let wall = crate::util::now_ms();
        self.entries
            .iter()
            .map(|(id, e)| {
                let mut s = summary(id, e, now);
                schedule(&mut s, self.drains.get(id), wall);
                s
            })
            .collect()
    }

    /// Records agent `id`'s cordon or drain at once (`None`: uncordoned), before the etcd
    /// watch brings the same.
    pub fn set_drain(&mut self, id: &str, drain: Option<NodeDrain>) {
        match drain {
            Some(d) => self.drains.insert(id.to_string(), d),
            None => self.drains.remove(id),
        };
    }

    /// Whether the table has agent `id` (any state) or a cordon of it.
    pub fn knows(&self, id: &str) -> bool {
        self.entries.contains_key(id) || self.drains.contains_key(id)
    }

    /// Agent `id`'s cordon or drain, if it has one.
    pub fn drain(&self, id: &str) -> Option<&NodeDrain> {
        self.drains.get(id)
    }

    /// Every agent with its free slots in the slot view, for placement.
    pub fn with_free_slots(&mut self, now: Instant) -> Vec<(AgentSummary, SlotAmounts)> {
        self.list(now)
            .into_iter()
            .map(|a| {
                let id = a.identity.as_ref().map(|i| i.agent_id.as_str());
                let free = self
                    .view
                    .free(id.unwrap_or_default(), &a.slots.unwrap_or_default());
                (a, free)
            })
            .collect()
    }
}

/// Fills the summary's schedule from the agent's cordon or drain: `drained` once a drain
/// has no kernel left (as the last heartbeat said) or its deadline passed.
fn schedule(s: &mut AgentSummary, drain: Option<&NodeDrain>, now_ms: i64) {
    let Some(d) = drain else {
        s.schedule = "schedulable".into();
        return;
    };
    s.cordoned_at_ms = d.since_ms;
    s.schedule = match d.mode {
        DrainMode::Cordon => "cordoned".into(),
        DrainMode::Drain => {
            s.drain_deadline_ms = d.deadline_ms;
            let heard = s.heartbeats_received > 0;
            if now_ms >= d.deadline_ms || (heard && s.kernels_reported == 0) {
                "drained".into()
            } else {
                "draining".into()
            }
        }
    };
}

fn state(e: &Entry, now: Instant) -> AgentState {
    if e.gone_since.is_some() {
        return AgentState::Gone;
    }
    match (&e.last_seen, &e.last) {
        (Some((seen, _)), Some(last)) => {
            let interval = Duration::from_millis(last.heartbeat_interval_ms.max(1));
            if now.duration_since(*seen) > interval * LOST_AFTER_MISSED {
                AgentState::Lost
            } else {
                AgentState::Alive
            }
        }
        _ => AgentState::Registered,
    }
}

fn summary(id: &str, e: &Entry, now: Instant) -> AgentSummary {
    let last = e.last.clone().unwrap_or_default();
    let identity = last.agent.clone().or_else(|| {
        e.record.as_ref().map(|r| AgentIdentity {
            agent_id: r.id.clone(),
            address: r.address.clone(),
            version: r.version.clone(),
            arch: r.arch.clone(),
            region: r.region.clone(),
            scaling_group: r.scaling_group.clone(),
            started_at_ms: r.started_at_ms,
            instance_id: r.owner.instance_id.clone(),
            hostname: r.owner.hostname.clone(),
            ..Default::default()
        })
    });
    let identity = identity.unwrap_or_else(|| AgentIdentity {
        agent_id: id.to_string(),
        ..Default::default()
    });
    AgentSummary {
        identity: Some(identity),
        state: state(e, now) as i32,
        last_seen_ms: e
            .last_seen
            .and_then(|(_, wall)| wall.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        host: last.host,
        gpus: last.gpus,
        slots: last.slots,
        heartbeat_interval_ms: last.heartbeat_interval_ms,
        heartbeats_received: e.heartbeats,
        kernels_reported: last.kernels.len() as u32,
        kernel_progress: last
            .progress
            .iter()
            .map(|p| (p.kernel_id.clone(), p.progress))
            .collect(),
        runtimes: last.runtimes,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(ids: &[&str]) -> Mirror {
        Mirror {
            kvs: ids
                .iter()
                .map(|i| (i.to_string(), "{}".to_string()))
                .collect(),
            loaded: true,
        }
    }

    fn beat(id: &str, interval_ms: u64) -> HeartbeatRequest {
        HeartbeatRequest {
            agent: Some(AgentIdentity {
                agent_id: id.into(),
                ..Default::default()
            }),
            heartbeat_interval_ms: interval_ms,
            ..Default::default()
        }
    }

    fn states(t: &mut AgentTable, now: Instant) -> Vec<(String, AgentState)> {
        t.list(now)
            .into_iter()
            .map(|s| {
                let st = s.state();
                (s.identity.unwrap().agent_id, st)
            })
            .collect()
    }

    #[test]
    fn an_agent_goes_registered_alive_lost_gone_then_is_dropped() {
        let t0 = Instant::now();
        let mut t = AgentTable::new(Duration::from_secs(60));
        t.sync_registrations(&mirror(&["a"]), t0);
        assert_eq!(states(&mut t, t0), [("a".into(), AgentState::Registered)]);
        t.heartbeat(beat("a", 1000), t0, SystemTime::now());
        assert_eq!(
            states(&mut t, t0 + Duration::from_secs(3)),
            [("a".into(), AgentState::Alive)]
        );
        assert_eq!(
            states(&mut t, t0 + Duration::from_millis(3001)),
            [("a".into(), AgentState::Lost)]
        );
        t.sync_registrations(&mirror(&[]), t0 + Duration::from_secs(5));
        assert_eq!(
            states(&mut t, t0 + Duration::from_secs(6)),
            [("a".into(), AgentState::Gone)]
        );
        assert!(states(&mut t, t0 + Duration::from_secs(65)).is_empty());
    }

    #[test]
    fn config_override_keys_are_not_agents() {
        let mut t = AgentTable::new(Duration::from_secs(60));
        let mut m = mirror(&["a"]);
        m.kvs.insert("b/config/agent/region".into(), "eu".into());
        t.sync_registrations(&m, Instant::now());
        assert_eq!(t.list(Instant::now()).len(), 1);
    }

    #[test]
    fn agents_are_listed_sorted_by_id() {
        let mut t = AgentTable::new(Duration::from_secs(60));
        t.sync_registrations(&mirror(&["zeta", "alpha", "mid"]), Instant::now());
        let ids: Vec<String> = states(&mut t, Instant::now())
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ids, ["alpha", "mid", "zeta"]);
    }
}
