//! `deckhand gpu reset-health NODE UUID`: clears the unhealthy mark NVML's critical events
//! put on a GPU (see `crate::host::gpu::health`), so the agent gives it to kernels again.
//! Asked of the manager, which forwards it to the agent.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::common::ManagerArgs;
use super::output::print_json;
use crate::wire::pb::ResetGpuHealthRequest;

#[derive(Debug, Clone, Args)]
pub struct GpuArgs {
    #[command(subcommand)]
    pub command: GpuCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum GpuCommand {
    /// Clear a GPU's unhealthy mark: it takes kernels again.
    ResetHealth(ResetArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// The agent id.
    pub node: String,
    /// The GPU's UUID (as `deckhand nodes --json` shows it).
    pub uuid: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: GpuArgs) -> anyhow::Result<ExitCode> {
    let GpuCommand::ResetHealth(a) = args.command;
    let req = ResetGpuHealthRequest {
        agent_id: a.node.clone(),
        uuid: a.uuid.clone(),
    };
    let resp = a
        .target
        .call(|mut c| {
            let req = req.clone();
            async move { c.reset_gpu_health(req).await.map(|r| r.into_inner()) }
        })
        .await?;
    if a.json {
        print_json(&serde_json::json!({
            "id": resp.agent_id,
            "uuid": resp.uuid,
            "was_unhealthy": resp.was_unhealthy,
            "reason": resp.reason,
        }))?;
    } else if resp.was_unhealthy {
        println!(
            "{} {}: healthy again (was: {})",
            resp.agent_id, resp.uuid, resp.reason
        );
    } else {
        println!("{} {}: was healthy", resp.agent_id, resp.uuid);
    }
    Ok(ExitCode::SUCCESS)
}
