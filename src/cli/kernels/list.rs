//! `ps` and `inspect`: listing kernels, and kernel states and JSON by name.

use std::process::ExitCode;

use clap::Args;
use comfy_table::{presets::NOTHING, Table};

use super::super::common::ManagerArgs;
use super::super::output::{ago, print_json};
use super::{get, list_kernels};
use crate::wire::pb::KernelInfo;

pub use crate::wire::names::kernel_state as state_name;

/// A kernel as JSON for people and scripts: the state by name (`RUNNING`), not number.
pub fn kernel_json(k: &KernelInfo) -> serde_json::Value {
    let mut v = serde_json::to_value(k).unwrap_or_default();
    v["state"] = state_name(k.state()).into();
    v
}

pub(super) fn print_kernels(list: &[KernelInfo]) -> anyhow::Result<()> {
    print_json(&list.iter().map(kernel_json).collect::<Vec<_>>())
}

#[derive(Debug, Clone, Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// Print the kernels as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

pub async fn ps(args: PsArgs) -> anyhow::Result<ExitCode> {
    let list = list_kernels(&args.target).await?;
    if args.json {
        print_kernels(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header([
        "KERNEL", "NAME", "AGENT", "STATE", "PROGRESS", "IMAGE", "CREATED", "EXIT", "GPUS", "PORTS",
    ]);
    for k in list {
        let ports: Vec<String> = k
            .ports
            .iter()
            .map(|p| {
                let ip = if p.host_ip.is_empty() {
                    String::new()
                } else if p.host_ip.contains(':') {
                    format!("[{}]:", p.host_ip)
                } else {
                    format!("{}:", p.host_ip)
                };
                format!("{ip}{}->{}/{}", p.host_port, p.container_port, p.protocol)
            })
            .chain((k.ssh_port > 0).then(|| format!("{}->ssh", k.ssh_port)))
            .collect();
        t.add_row([
            k.kernel_id.clone(),
            k.name.clone(),
            k.agent_id.clone(),
            state_name(k.state()).to_string(),
            k.progress.map(|p| format!("{p:.0}%")).unwrap_or_default(),
            k.image.clone(),
            ago(k.created_at_ms),
            k.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            k.gpus.len().to_string(),
            ports.join(","),
        ]);
        // A cluster kernel's instances, each by its id and hostname.
        let instances = k.spec.as_ref().map_or(0, |s| s.instances);
        if instances > 0 {
            for i in 0..instances {
                let host = crate::runtime::docker::cluster::hostname(i);
                let mut row = vec![format!("{}/{i}", k.kernel_id), host];
                row.resize(10, String::new());
                t.add_row(row);
            }
        }
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub target: ManagerArgs,
    /// Kernel id, task id `<array>.<index>`, or array id.
    pub id: String,
    /// JSON, as without it (inspect's only format; accepted like every listing's --json).
    #[arg(long)]
    pub json: bool,
}

pub async fn inspect(args: IdArgs) -> anyhow::Result<ExitCode> {
    let k = get(&args.target, &args.id).await;
    match k {
        Ok(k) => print_json(&kernel_json(&k))?,
        Err(_) => {
            // An array id: show all its tasks.
            let id = args.id.clone();
            let list = list_kernels(&args.target).await?;
            let tasks: Vec<KernelInfo> = list.into_iter().filter(|k| k.array_id == id).collect();
            if tasks.is_empty() {
                get(&args.target, &args.id).await?;
            }
            print_kernels(&tasks)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
