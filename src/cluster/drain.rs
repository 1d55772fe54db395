//! Cordon and drain of an agent, as kept in etcd at `nodes/agents/<id>/drain` (JSON, not
//! on a lease: it survives the agent's and the manager's restarts; `uncordon` deletes it).
//! Written by the manager for `deckhand node cordon|drain`, followed through watches by the
//! manager (placement, `nodes`) and by the agent itself (refusing new kernels, stopping its
//! kernels at a drain's deadline — so the deadline holds while no manager runs).

use serde::{Deserialize, Serialize};

/// The key's file name under `nodes/agents/<id>/`.
pub const DRAIN_KEY: &str = "drain";

/// What the operator asked of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainMode {
    /// No new kernels; the running ones go on.
    Cordon,
    /// No new kernels; the running ones are stopped at the deadline.
    Drain,
}

/// The value of `nodes/agents/<id>/drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDrain {
    pub mode: DrainMode,
    /// Unix ms when it was cordoned (or the drain began).
    pub since_ms: i64,
    /// Unix ms when a drain stops the kernels still running; 0 for a cordon.
    #[serde(default)]
    pub deadline_ms: i64,
    /// Who asked (the manager's id).
    #[serde(default)]
    pub by: String,
}

impl NodeDrain {
    /// The stored value, or `None` for a value that does not parse (logged by the caller).
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_str(value).ok()
    }

    /// Why agent `agent_id` takes no new kernel, as refusals say it.
    pub fn refusal(&self, agent_id: &str) -> String {
        let since = rfc3339(self.since_ms);
        let what = match self.mode {
            DrainMode::Cordon => format!("agent `{agent_id}` is cordoned (since {since})"),
            DrainMode::Drain => format!(
                "agent `{agent_id}` is draining (since {since}; its kernels are stopped at {})",
                rfc3339(self.deadline_ms)
            ),
        };
        format!("{what}: it takes no new kernels; `deckhand node uncordon {agent_id}` lets it take them again")
    }

    /// `cordoned`, `draining`.
    pub fn schedule(&self) -> &'static str {
        match self.mode {
            DrainMode::Cordon => "cordoned",
            DrainMode::Drain => "draining",
        }
    }
}

/// Unix ms as an RFC 3339 UTC time (seconds).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_reads_back_and_its_refusal_names_the_agent_and_the_way_back() {
        let d = NodeDrain {
            mode: DrainMode::Drain,
            since_ms: 1_700_000_000_000,
            deadline_ms: 1_700_000_600_000,
            by: "m1".into(),
        };
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"mode\":\"drain\""), "{json}");
        assert_eq!(NodeDrain::parse(&json), Some(d.clone()));
        let r = d.refusal("a1");
        assert!(r.contains("agent `a1` is draining"), "{r}");
        assert!(r.contains("2023-11-14T22:23:20Z"), "{r}");
        assert!(r.contains("deckhand node uncordon a1"), "{r}");
        assert_eq!(NodeDrain::parse("{nonsense"), None);
    }
}
