//! The manager's metrics: heartbeats, placements and forwarded calls counted as they
//! happen ([`ManagerMetrics`]), agents by state and their heartbeats' age read from the
//! agent table at scrape time ([`ManagerCollector`]; an agent's series goes when the table
//! drops it, `--gone-retention` after its registration went).

use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::manager::table::AgentTable;
use crate::telemetry::counters::Label;
use crate::wire::pb::AgentState;

/// What the manager counts as it happens.
pub struct ManagerMetrics {
    pub heartbeats: Counter,
    pub placements: Counter,
    pub refusals: Family<Label, Counter>,
    pub forwarded: Family<[(&'static str, String); 2], Counter>,
}

static MANAGER: LazyLock<ManagerMetrics> = LazyLock::new(|| ManagerMetrics {
    heartbeats: Counter::default(),
    placements: Counter::default(),
    refusals: Family::default(),
    forwarded: Family::default(),
});

/// The process's manager metrics.
pub fn manager() -> &'static ManagerMetrics {
    &MANAGER
}

impl ManagerMetrics {
    /// A `RunKernel` the manager refused (or an agent refused for it) for `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.refusals
            .get_or_create(&[("reason", reason.to_string())])
            .inc();
    }

    /// Counts a call forwarded to an agent by its method (`GetKernel`) and the status it
    /// got (`OK`, `NOT_FOUND`, …), and hands the result on.
    pub fn forwarded<T>(
        &self,
        method: &'static str,
        result: Result<T, tonic::Status>,
    ) -> Result<T, tonic::Status> {
        let status = match &result {
            Ok(_) => "OK".to_string(),
            Err(s) => code_name(s.code()).to_string(),
        };
        self.forwarded
            .get_or_create(&[("method", method.to_string()), ("status", status)])
            .inc();
        result
    }
}

/// gRPC's spelling of a status code: `RESOURCE_EXHAUSTED`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The manager's registry: etcd and manager families, and the agent-table collector.
pub fn registry(table: Arc<Mutex<AgentTable>>) -> Registry {
    let m = manager();
    let mut r = Registry::default();
    crate::telemetry::etcd::register(&mut r);
    r.register(
        "deckhand_manager_heartbeats_received",
        "Heartbeats accepted from agents",
        m.heartbeats.clone(),
    );
    r.register(
        "deckhand_manager_placements",
        "Kernels (or job arrays) placed on an agent by RunKernel",
        m.placements.clone(),
    );
    r.register(
        "deckhand_manager_placement_refusals",
        "RunKernel requests not placed, by reason: no_agent_alive, no_agent_large_enough, all_agents_full, unknown_agent, invalid_request, agent_error",
        m.refusals.clone(),
    );
    r.register(
        "deckhand_manager_forwarded_calls",
        "Calls forwarded to agents, by method and the gRPC status they got",
        m.forwarded.clone(),
    );
    r.register_collector(Box::new(ManagerCollector { table }));
    r
}

/// Reads the agent table at scrape time.
#[derive(Debug)]
pub struct ManagerCollector {
    table: Arc<Mutex<AgentTable>>,
}

const AGENT_STATES: [AgentState; 4] = [
    AgentState::Registered,
    AgentState::Alive,
    AgentState::Lost,
    AgentState::Gone,
];

impl Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let agents = self.table.lock().list(Instant::now());
        let mut e = encoder.encode_descriptor(
            "deckhand_manager_agents",
            "Agents of the namespace by state (REGISTERED, ALIVE, LOST, GONE)",
            None,
            MetricType::Gauge,
        )?;
        for state in AGENT_STATES {
            let n = agents.iter().filter(|a| a.state == state as i32).count();
            ConstGauge::new(n as i64)
                .encode(e.encode_family(&[("state", crate::wire::names::agent_state(state))])?)?;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut e = encoder.encode_descriptor(
            "deckhand_manager_heartbeat_age_seconds",
            "Time since each agent's last accepted heartbeat",
            None,
            MetricType::Gauge,
        )?;
        for a in agents.iter().filter(|a| a.last_seen_ms > 0) {
            let id = a
                .identity
                .as_ref()
                .map(|i| i.agent_id.as_str())
                .unwrap_or("");
            let age = (now_ms - a.last_seen_ms).max(0) as f64 / 1000.0;
            ConstGauge::new(age).encode(e.encode_family(&[("agent_id", id)])?)?;
        }
        Ok(())
    }
}
