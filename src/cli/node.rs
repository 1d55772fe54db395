//! `deckhand node cordon|uncordon|drain NODE [--deadline D]`: takes an agent out of
//! placement (cordon), back in (uncordon), or empties it for maintenance (drain: cordon, then
//! its kernels are stopped at the deadline unless they end first). Asked of the manager,
//! which writes the agent's `nodes/agents/<id>/drain` key in etcd.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::common::ManagerArgs;
use super::output::print_json;
use crate::wire::pb::{NodeAction, SetNodeScheduleRequest};

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum NodeCommand {
    /// No new kernels on NODE; its kernels go on.
    Cordon(NodeTarget),
    /// NODE takes new kernels again (ends a drain too).
    Uncordon(NodeTarget),
    /// Cordon NODE, then stop its kernels at the deadline (unless they end first).
    Drain(DrainArgs),
}

#[derive(Debug, Clone, Args)]
pub struct NodeTarget {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// The agent id.
    pub node: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub node: NodeTarget,
    /// How long its kernels may still run, e.g. `10m` (default 1h).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub deadline: String,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let (t, action, deadline) = match args.command {
        NodeCommand::Cordon(t) => (t, NodeAction::Cordon, String::new()),
        NodeCommand::Uncordon(t) => (t, NodeAction::Uncordon, String::new()),
        NodeCommand::Drain(d) => (d.node, NodeAction::Drain, d.deadline),
    };
    let req = SetNodeScheduleRequest {
        agent_id: t.node.clone(),
        action: action as i32,
        deadline,
    };
    let resp = t
        .target
        .call(|mut c| {
            let req = req.clone();
            async move { c.set_node_schedule(req).await.map(|r| r.into_inner()) }
        })
        .await?;
    if t.json {
        print_json(&serde_json::json!({
            "id": resp.agent_id,
            "schedule": resp.schedule,
            "drain_deadline_ms": resp.drain_deadline_ms,
        }))?;
    } else if resp.drain_deadline_ms > 0 {
        println!(
            "{}: {} (kernels still running are stopped at {})",
            resp.agent_id,
            resp.schedule,
            crate::cluster::drain::rfc3339(resp.drain_deadline_ms)
        );
    } else {
        println!("{}: {}", resp.agent_id, resp.schedule);
    }
    Ok(ExitCode::SUCCESS)
}
