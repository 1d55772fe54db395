//! What the agent counts as things happen ([`AgentMetrics`], a process-wide static): kernel
//! creations, image pulls, heartbeats, settings reloads, and the last heartbeat's per-kernel
//! usage. The layers below the agent (kernel, runtime) count here; the agent's scrape-time
//! collector (`crate::agent::metrics`) reads it.
//!
//! Per-kernel series exist only while the kernel lives: usage is replaced whole by every
//! heartbeat and a kernel's entry is dropped the moment it ends ([`AgentMetrics::kernel_ended`],
//! from the supervisor's one transition point).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::LATENCY_BUCKETS;

/// CPU time and memory of one running kernel, from its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub memory_bytes: u64,
}

/// One label: `[("runtime", "docker")]`, `[("reason", "auth")]`.
pub type Label = [(&'static str, String); 1];

type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// What the agent counts as it happens.
pub struct AgentMetrics {
    /// From launch (queueing for a creation permit and the image pull included) to RUNNING
    /// or HELD, per runtime.
    pub create_seconds: HistogramFamily,
    pub create_failures: Family<Label, Counter>,
    pub pulls: Counter,
    pub pull_bytes: Counter,
    pub pull_seconds: Histogram,
    pub pull_failures: Family<Label, Counter>,
    pub heartbeats_sent: Counter,
    pub heartbeats_failed: Counter,
    pub heartbeat_seconds: Histogram,
    pub config_reloads: Counter,
    pub config_rejected: Counter,
    /// The last heartbeat's per-kernel usage, less the kernels that ended since.
    usage: Mutex<HashMap<String, Usage>>,
}

static AGENT: LazyLock<AgentMetrics> = LazyLock::new(|| AgentMetrics {
    create_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
    create_failures: Family::default(),
    pulls: Counter::default(),
    pull_bytes: Counter::default(),
    pull_seconds: latency_histogram(),
    pull_failures: Family::default(),
    heartbeats_sent: Counter::default(),
    heartbeats_failed: Counter::default(),
    heartbeat_seconds: latency_histogram(),
    config_reloads: Counter::default(),
    config_rejected: Counter::default(),
    usage: Mutex::new(HashMap::new()),
});

/// The process's agent metrics.
pub fn agent() -> &'static AgentMetrics {
    &AGENT
}

impl AgentMetrics {
    /// A kernel reached RUNNING or HELD `took` after its launch began.
    pub fn kernel_created(&self, runtime: &str, took: Duration) {
        self.create_seconds
            .get_or_create(&[("runtime", runtime.to_string())])
            .observe(took.as_secs_f64());
    }

    pub fn kernel_create_failed(&self, runtime: &str) {
        self.create_failures
            .get_or_create(&[("runtime", runtime.to_string())])
            .inc();
    }

    /// A pull ended: `failure` is its reason (`auth`, `timeout`, …) when it failed.
    pub fn pull_finished(&self, took: Duration, bytes: u64, failure: Option<&'static str>) {
        self.pulls.inc();
        self.pull_seconds.observe(took.as_secs_f64());
        self.pull_bytes.inc_by(bytes);
        if let Some(reason) = failure {
            self.pull_failures
                .get_or_create(&[("reason", reason.to_string())])
                .inc();
        }
    }

    /// The usage every running kernel had at this heartbeat.
    pub fn set_usage(&self, usage: &[(String, Usage)]) {
        let mut u = self.usage.lock();
        *u = usage.iter().cloned().collect();
    }

    /// A kernel ended: its usage series goes now, not at the next heartbeat.
    pub fn kernel_ended(&self, kernel_id: &str) {
        let mut u = self.usage.lock();
        u.remove(kernel_id);
    }

    pub fn usage(&self) -> Vec<(String, Usage)> {
        let u = self.usage.lock();
        let mut v: Vec<(String, Usage)> = u.iter().map(|(k, u)| (k.clone(), *u)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Registers the etcd and agent families in `r`.
pub fn register(r: &mut Registry) {
    let m = agent();
    super::etcd::register(r);
    r.register_with_unit(
        "deckhand_kernel_create_duration",
        "Time from a kernel's launch (waiting for a creation permit and pulling included) to RUNNING or HELD, per runtime",
        Unit::Seconds,
        m.create_seconds.clone(),
    );
    r.register(
        "deckhand_kernel_create_failures",
        "Kernels whose launch failed (FAILED before RUNNING), per runtime",
        m.create_failures.clone(),
    );
    r.register(
        "deckhand_image_pulls",
        "Image pulls that ended, failed or not",
        m.pulls.clone(),
    );
    r.register_with_unit(
        "deckhand_image_pull",
        "Bytes of the image layers that pulls fetched",
        Unit::Bytes,
        m.pull_bytes.clone(),
    );
    r.register_with_unit(
        "deckhand_image_pull_duration",
        "How long image pulls took, failed or not",
        Unit::Seconds,
        m.pull_seconds.clone(),
    );
    r.register(
        "deckhand_image_pull_failures",
        "Failed image pulls by reason: auth, timeout, stalled, not_found, engine_unavailable, other",
        m.pull_failures.clone(),
    );
    r.register(
        "deckhand_heartbeats_sent",
        "Heartbeats a manager accepted",
        m.heartbeats_sent.clone(),
    );
    r.register(
        "deckhand_heartbeats_failed",
        "Heartbeat attempts a manager refused or that did not reach one",
        m.heartbeats_failed.clone(),
    );
    r.register_with_unit(
        "deckhand_heartbeat_duration",
        "Round-trip time of accepted heartbeats",
        Unit::Seconds,
        m.heartbeat_seconds.clone(),
    );
    r.register(
        "deckhand_config_reloads",
        "Changes of the cluster settings applied without a restart",
        m.config_reloads.clone(),
    );
    r.register(
        "deckhand_config_rejected_values",
        "Malformed settings values refused (the key keeps its last good value)",
        m.config_rejected.clone(),
    );
}
