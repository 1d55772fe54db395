//! Heartbeats to the manager: every `agent/heartbeat_interval`, and at once when the
//! config or the set of managers changes, or when reconciling the kernels with their
//! runtime (after start-up recovery, after an engine outage) changed what the last
//! heartbeat said of them.
//!
//! Managers are found under `nodes/managers/` (watched). The agent reports to one of them
//! and fails over to the next on error; it logs one line per change of link state, not per
//! failed attempt. Without any manager it keeps collecting status and waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::status::{Snapshot, StatusCollector};
use crate::agent::convert;
use crate::cluster::{ManagerRecord, Mirror};
use crate::config::ClusterConfig;
use crate::kernel::slots::Capacity;
use crate::kernel::Supervisor;
use crate::util::tls::TlsFiles;
use crate::wire::pb::manager_service_client::ManagerServiceClient;
use crate::wire::pb::{AgentIdentity, HeartbeatRequest, SlotAmounts};
use crate::wire::{self, channel};

/// Inputs and outputs of the heartbeat task.
pub struct Heartbeat {
    pub identity: AgentIdentity,
    pub config: watch::Receiver<Arc<ClusterConfig>>,
    pub config_loaded: watch::Receiver<bool>,
    pub managers: watch::Receiver<Mirror>,
    pub collector: StatusCollector,
    /// The latest snapshot, for `GetInfo`.
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    /// What the host offers kernels, for the supervisor's slot calculation.
    pub capacity: watch::Sender<Arc<Capacity>>,
    /// The manager currently reported to (address), for `GetInfo`.
    pub current_manager: watch::Sender<String>,
    /// Allocated slots and per-kernel usage come from here.
    pub kernels: Supervisor,
    /// TLS of the connections to managers.
    pub tls: TlsFiles,
}

impl Heartbeat {
    pub async fn run(mut self, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = self.config_loaded.wait_for(|l| *l) => if r.is_err() { return },
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = self.managers.wait_for(|m| m.loaded) => if r.is_err() { return },
        }
        // Seen now: the first tick reports this config; a `changed()` still pending from
        // before would send a second heartbeat right after it.
        let mut period = self.config.borrow_and_update().heartbeat_interval;
        let mut ticker = ticker(period, Instant::now());
        let mut links = Links {
            tls: self.tls.clone(),
            ..Links::default()
        };
        links.update(&self.managers.borrow_and_update());
        let mut sequence = 0u64;
        let mut synced = self.kernels.synced();
        // What the last accepted heartbeat said of the kernels: running ones, slots held.
        let mut reported: Option<Report> = None;
        let mut health = self.collector.health_changes();
        loop {
            let mut resynced = false;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
                r = self.config.changed() => {
                    if r.is_err() { return }
                    let new = self.config.borrow().heartbeat_interval;
                    if new != period {
                        period = new;
                        ticker = ticker_after(period);
                    }
                }
                r = self.managers.changed() => {
                    if r.is_err() { return }
                    links.update(&self.managers.borrow_and_update());
                }
                r = synced.changed() => {
                    if r.is_err() { return }
                    resynced = true;
                }
                // A GPU marked unhealthy or reset: the manager hears it at once.
                Some(()) = changed(&mut health) => {}
            }
            let cfg = self.config.borrow_and_update().clone();
            let snap = self.collector.collect(&cfg, self.kernels.allocated()).await;
            self.identity.region = cfg.region.clone();
            self.identity.scaling_group = cfg.scaling_group.clone();
            let usage = self.kernels.usage();
            crate::telemetry::counters::agent().set_usage(&usage);
            let req = HeartbeatRequest {
                agent: Some(self.identity.clone()),
                host: Some(snap.host.clone().into()),
                gpus: Some(snap.gpus.clone().into()),
                slots: Some(snap.slots),
                heartbeat_interval_ms: period.as_millis() as u64,
                sequence: sequence + 1,
                kernels: convert::usages(usage),
                runtimes: convert::runtime_infos(self.kernels.runtime_loads()),
                progress: convert::progresses(self.kernels.progress()),
            };
            let cap = super::status::capacity(&snap.host, &snap.gpus);
            self.capacity.send_if_modified(|c| {
                let changed = **c != cap;
                if changed {
                    *c = Arc::new(cap);
                }
                changed
            });
            self.snapshot.send_replace(Arc::new(snap));
            // A resync is worth a heartbeat before the period ends only if it changed what
            // the manager was told (a kernel ended while the engine was away, the kernels
            // found running after a restart); before the first accepted heartbeat, the
            // pending tick reports it.
            let report = Report::of(&req);
            if resynced && reported.as_ref().is_none_or(|r| *r == report) {
                continue;
            }
            let timeout = period.clamp(Duration::from_millis(500), Duration::from_secs(5));
            if let Some(addr) = links.send(req, timeout).await {
                reported = Some(report);
                sequence += 1;
                self.current_manager.send_if_modified(|cur| {
                    let changed = *cur != addr;
                    *cur = addr;
                    changed
                });
            }
        }
    }
}

/// The kernels a heartbeat reports (running ones, in id order) and the slots they hold.
#[derive(Debug, PartialEq)]
struct Report {
    kernels: Vec<String>,
    allocated: Option<SlotAmounts>,
}

impl Report {
    fn of(req: &HeartbeatRequest) -> Self {
        Self {
            kernels: req.kernels.iter().map(|k| k.kernel_id.clone()).collect(),
            allocated: req.slots.as_ref().and_then(|s| s.allocated),
        }
    }
}

/// The next change of `rx`; `None` once its sender is gone; pending without one.
async fn changed(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Option<()> {
    match rx {
        Some(r) => r.changed().await.ok(),
        None => std::future::pending().await,
    }
}

fn ticker(period: Duration, start: Instant) -> Interval {
    let mut t = interval_at(start, period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

fn ticker_after(period: Duration) -> Interval {
    ticker(period, Instant::now() + period)
}

#[derive(Debug, PartialEq)]
enum LinkState {
    Unknown,
    NoManager,
    Up(String),
    Down,
}

/// The registered managers and the one currently used.
struct Links {
    managers: Vec<(String, String)>,
    current: usize,
    clients: HashMap<String, ManagerServiceClient<Channel>>,
    state: LinkState,
    tls: TlsFiles,
}

impl Default for Links {
    fn default() -> Self {
        Self {
            managers: Vec::new(),
            current: 0,
            clients: HashMap::new(),
            state: LinkState::Unknown,
            tls: TlsFiles::default(),
        }
    }
}

impl Links {
    fn update(&mut self, mirror: &Mirror) {
        let before = self.managers.get(self.current).cloned();
        self.managers = mirror
            .kvs
            .iter()
            .filter_map(|(id, v)| {
                serde_json::from_str::<ManagerRecord>(v)
                    .ok()
                    .map(|r| (id.clone(), r.address))
            })
            .collect();
        self.current = before
            .and_then(|b| self.managers.iter().position(|m| *m == b))
            .unwrap_or(0);
        self.clients
            .retain(|addr, _| self.managers.iter().any(|(_, a)| a == addr));
    }

    /// Sends to the current manager, failing over through the others; returns the address
    /// that accepted the heartbeat.
    async fn send(&mut self, req: HeartbeatRequest, timeout: Duration) -> Option<String> {
        if self.managers.is_empty() {
            if self.state != LinkState::NoManager {
                tracing::info!("no manager registered in this namespace yet; waiting for one");
                self.state = LinkState::NoManager;
            }
            return None;
        }
        let n = self.managers.len();
        for attempt in 0..n {
            let idx = (self.current + attempt) % n;
            let (id, addr) = self.managers[idx].clone();
            let client = match self.clients.get(&addr) {
                Some(c) => c.clone(),
                None => match channel(&addr, timeout, &self.tls) {
                    Ok(ch) => {
                        let c = ManagerServiceClient::new(ch);
                        self.clients.insert(addr.clone(), c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::warn!(manager = %id, "bad manager address: {e}");
                        continue;
                    }
                },
            };
            let mut client = client;
            let sent = std::time::Instant::now();
            let answer = client.heartbeat(req.clone()).await;
            let metrics = crate::telemetry::counters::agent();
            match &answer {
                Ok(_) => {
                    metrics.heartbeats_sent.inc();
                    metrics
                        .heartbeat_seconds
                        .observe(sent.elapsed().as_secs_f64());
                }
                Err(_) => {
                    metrics.heartbeats_failed.inc();
                }
            }
            match answer {
                Ok(_) => {
                    self.current = idx;
                    if self.state != LinkState::Up(addr.clone()) {
                        tracing::info!(manager = %id, address = %addr, "reporting to manager");
                        self.state = LinkState::Up(addr.clone());
                    }
                    return Some(addr);
                }
                Err(status) => {
                    // Logged when the link in use breaks, not on every retry.
                    if self.state == LinkState::Up(addr.clone()) {
                        tracing::warn!(manager = %id, address = %addr, "heartbeat failed: {}", wire::status_text(&status));
                        self.state = LinkState::Unknown;
                    }
                }
            }
        }
        if self.state != LinkState::Down {
            tracing::warn!(
                managers = n,
                "no manager reachable; retrying at every heartbeat"
            );
            self.state = LinkState::Down;
        }
        None
    }
}
