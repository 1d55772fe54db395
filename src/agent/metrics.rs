//! The agent's scrape-time collector ([`AgentCollector`]): kernels by state and runtime, the
//! event log, per-kernel usage (counted in [`crate::telemetry::counters`]), and through
//! [`super::metrics_host`] the host, slots and GPUs of the last heartbeat.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::agent::status::Snapshot;
use crate::kernel::{KernelState, Supervisor};
use crate::telemetry::counters::agent;

/// Every state a kernel can be in, so each runtime reports all of them (zeros included).
const STATES: [KernelState; 12] = [
    KernelState::Preparing,
    KernelState::Pulling,
    KernelState::Creating,
    KernelState::Held,
    KernelState::Running,
    KernelState::Suspended,
    KernelState::Restarting,
    KernelState::Terminating,
    KernelState::Uploading,
    KernelState::Done,
    KernelState::Failed,
    KernelState::Cancelled,
];
/// The agent's registry: etcd and agent families, and the scrape-time collector.
pub fn registry(collector: AgentCollector) -> Registry {
    let mut r = Registry::default();
    crate::telemetry::counters::register(&mut r);
    r.register_collector(Box::new(collector));
    r
}

/// Reads the agent's state at scrape time.
pub struct AgentCollector {
    pub kernels: Supervisor,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl std::fmt::Debug for AgentCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCollector")
            .field("agent_id", &self.kernels.agent_id())
            .finish()
    }
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let census = self.kernels.census();
        let mut counts: BTreeMap<(String, String), u32> = BTreeMap::new();
        for runtime in self.kernels.runtimes().names() {
            for state in STATES {
                counts.insert((runtime.to_string(), state.to_string()), 0);
            }
        }
        for ((runtime, state), n) in census {
            counts.insert((runtime, state.to_string()), n);
        }
        let mut e = encoder.encode_descriptor(
            "deckhand_kernels",
            "Kernels this agent holds, by runtime and state",
            None,
            MetricType::Gauge,
        )?;
        for ((runtime, state), n) in &counts {
            let labels = [("runtime", runtime.as_str()), ("state", state.as_str())];
            ConstGauge::new(i64::from(*n)).encode(e.encode_family(&labels)?)?;
        }

        let events = self.kernels.events();
        let e = encoder.encode_descriptor(
            "deckhand_events_queued",
            "Kernel events waiting for a manager to take them",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(events.backlog() as i64).encode(e)?;
        let e = encoder.encode_descriptor(
            "deckhand_events_dropped",
            "Kernel events dropped undelivered because the queue was full",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(events.dropped()).encode(e)?;

        let usage = agent().usage();
        let mut e = encoder.encode_descriptor(
            "deckhand_kernel_cpu_seconds",
            "CPU time a running kernel used, from its cgroup",
            None,
            MetricType::Counter,
        )?;
        for (id, u) in &usage {
            let secs = u.cpu_ns as f64 / 1e9;
            ConstCounter::new(secs).encode(e.encode_family(&[("kernel_id", id.as_str())])?)?;
        }
        let mut e = encoder.encode_descriptor(
            "deckhand_kernel_memory_bytes",
            "Memory a running kernel uses, from its cgroup",
            None,
            MetricType::Gauge,
        )?;
        for (id, u) in &usage {
            ConstGauge::new(u.memory_bytes as i64)
                .encode(e.encode_family(&[("kernel_id", id.as_str())])?)?;
        }

        let snapshot = self.snapshot.borrow().clone();
        super::metrics_host::encode(&snapshot, &mut encoder)
    }
}
