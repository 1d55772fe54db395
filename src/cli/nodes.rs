//! `deckhand nodes`: the namespace's agents as the manager sees them.

use std::process::ExitCode;

use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;

use super::common::ManagerArgs;
use super::output::{ago, bytes, print_json};
use crate::wire::pb::{AgentSummary, GpuDevice, HostStatus, ListAgentsRequest, ResourceSlots};

#[derive(Debug, Clone, Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub target: ManagerArgs,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One agent in `nodes --json`.
#[derive(Debug, Serialize)]
pub struct NodeView {
    pub id: String,
    pub address: String,
    pub state: &'static str,
    /// `schedulable`, `cordoned`, `draining`, `drained` (`deckhand node …`).
    pub schedule: String,
    /// Unix ms when it was cordoned or its drain began; 0 when schedulable.
    pub cordoned_at_ms: i64,
    /// Unix ms when a drain stops its kernels; 0 without a drain.
    pub drain_deadline_ms: i64,
    pub last_seen_ms: i64,
    pub version: String,
    pub region: String,
    pub scaling_group: String,
    pub heartbeat_interval_ms: u64,
    pub heartbeats_received: u64,
    pub host: Option<HostStatus>,
    pub slots: Option<ResourceSlots>,
    pub gpus: Vec<GpuDevice>,
    /// The runtimes the agent offers (`docker`, `vastai`) with capacity and kernels in use.
    pub runtimes: Vec<crate::wire::pb::RuntimeInfo>,
    /// The progress (0-100) of its profile kernels that report one, by kernel id.
    pub kernel_progress: std::collections::BTreeMap<String, f64>,
}

pub use crate::wire::names::agent_state as state_name;

impl From<AgentSummary> for NodeView {
    fn from(a: AgentSummary) -> Self {
        let state = state_name(a.state());
        let id = a.identity.unwrap_or_default();
        Self {
            id: id.agent_id,
            address: id.address,
            state,
            schedule: if a.schedule.is_empty() {
                "schedulable".into()
            } else {
                a.schedule
            },
            cordoned_at_ms: a.cordoned_at_ms,
            drain_deadline_ms: a.drain_deadline_ms,
            last_seen_ms: a.last_seen_ms,
            version: id.version,
            region: id.region,
            scaling_group: id.scaling_group,
            heartbeat_interval_ms: a.heartbeat_interval_ms,
            heartbeats_received: a.heartbeats_received,
            host: a.host,
            slots: a.slots,
            gpus: a.gpus.map(|g| g.devices).unwrap_or_default(),
            runtimes: a.runtimes,
            kernel_progress: a.kernel_progress.into_iter().collect(),
        }
    }
}

pub async fn run(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let resp = args
        .target
        .call(|mut c| async move {
            c.list_agents(ListAgentsRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await?;
    let nodes: Vec<NodeView> = resp.agents.into_iter().map(NodeView::from).collect();
    if args.json {
        print_json(&nodes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "ID",
        "ADDRESS",
        "STATE",
        "SCHEDULE",
        "LAST SEEN",
        "CPU",
        "MEMORY",
        "FREE SLOTS",
        "GPUS",
    ]);
    for n in &nodes {
        let (cpu, mem) = n
            .host
            .as_ref()
            .map(|h| {
                (
                    format!("{:.0}% of {}", h.cpu_usage_percent, h.cpu_count),
                    format!(
                        "{} / {}",
                        bytes(h.memory_available_bytes),
                        bytes(h.memory_total_bytes)
                    ),
                )
            })
            .unwrap_or_default();
        let slots = n
            .slots
            .as_ref()
            .and_then(|s| Some((s.free?, s.total?)))
            .map(|(f, t)| {
                format!(
                    "cpu {}/{}  mem {}  gpu {}/{}",
                    f.cpu,
                    t.cpu,
                    bytes(f.memory_bytes),
                    f.gpus,
                    t.gpus
                )
            })
            .unwrap_or_default();
        let gpus = n
            .gpus
            .iter()
            .map(|g| {
                let util = g
                    .gpu_utilization_percent
                    .map(|u| format!(" {u}%"))
                    .unwrap_or_default();
                let fake = if g.fake { " (fake)" } else { "" };
                let health = if g.unhealthy {
                    format!(" UNHEALTHY: {}", g.health_reason)
                } else {
                    String::new()
                };
                format!(
                    "{} {}{util}{fake}{health}",
                    g.name,
                    bytes(g.memory_total_bytes)
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        t.add_row([
            n.id.clone(),
            n.address.clone(),
            n.state.to_string(),
            n.schedule.clone(),
            ago(n.last_seen_ms),
            cpu,
            mem,
            slots,
            gpus,
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
