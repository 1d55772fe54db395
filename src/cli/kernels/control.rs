//! `stop`, `rm`, `suspend`, `resume`, `release`, `kill`: lifecycle actions on a kernel.

use std::process::ExitCode;

use clap::Args;

use super::super::common::ManagerArgs;
use super::list::state_name;
use super::LONG;
use crate::wire::pb::{ControlKernelRequest, KernelAction};

#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// stop: seconds between SIGTERM and SIGKILL (default: the kernel's grace period).
    #[arg(short = 't', long = "time")]
    pub time: Option<u64>,
    /// rm: also a kernel that still runs.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// kill: the signal number.
    #[arg(short = 's', long, default_value_t = 15)]
    pub signal: i32,
    /// Kernel ids, task ids `<array>.<index>` or array ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

pub async fn control(action: KernelAction, args: ControlArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for id in &args.ids {
        let req = ControlKernelRequest {
            kernel_id: id.clone(),
            action: action as i32,
            signal: args.signal,
            grace_ms: args.time.map(|t| t * 1000).unwrap_or(0),
            force: args.force,
        };
        let r = args
            .target
            .call_with(LONG, |mut c| {
                let req = req.clone();
                async move { c.control_kernel(req).await.map(|r| r.into_inner()) }
            })
            .await;
        match r {
            Ok(resp) => {
                if resp.kernels.is_empty() {
                    println!("{id}");
                }
                for k in resp.kernels {
                    println!("{} {}", k.kernel_id, state_name(k.state()));
                }
            }
            Err(e) => {
                eprintln!("error: {id}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
