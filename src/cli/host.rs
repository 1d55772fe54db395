//! `deckhand host`: this host's status and GPU inventory, read locally.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use super::output::{bytes, print_json};
use crate::host::gpu::health::GpuHealth;
use crate::host::gpu::GpuProbe;
use crate::host::HostSampler;
use crate::wire::pb;

#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    /// Directory whose filesystem is reported as scratch space.
    #[arg(
        long,
        env = "DECKHAND_SCRATCH_ROOT",
        default_value = "/var/cache/scratches"
    )]
    pub scratch_root: PathBuf,

    /// NVML library to load [default: libnvidia-ml.so.1 from the loader path].
    #[arg(long, env = "DECKHAND_NVML_LIBRARY")]
    pub nvml_library: Option<PathBuf>,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: HostArgs) -> anyhow::Result<ExitCode> {
    // The scratch root may not exist yet on a fresh host: report its nearest parent.
    let mut root = args.scratch_root.clone();
    while !root.exists() {
        if !root.pop() {
            break;
        }
    }
    let mut sampler = HostSampler::new(&root);
    sampler.sample();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut host = sampler.sample();
    host.scratch_root = args.scratch_root.display().to_string();
    let mut gpus = GpuProbe::new()
        .inventory(args.nvml_library.as_deref(), &[])
        .await;
    // The marks the agent keeps under this scratch root (NVML does not replay events).
    GpuHealth::open(Some(GpuHealth::file_in(&args.scratch_root))).apply(&mut gpus);
    if args.json {
        let (host, gpus) = (pb::HostStatus::from(host), pb::GpuInventory::from(gpus));
        print_json(&serde_json::json!({ "host": host, "gpus": gpus }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("host        {} ({}, {})", host.hostname, host.os, host.arch);
    println!("kernel      {}", host.kernel_version);
    println!(
        "cpu         {} cores, {:.1}% used, load {:.2} {:.2} {:.2}",
        host.cpu_count, host.cpu_usage_percent, host.load_avg_1, host.load_avg_5, host.load_avg_15
    );
    println!(
        "memory      {} available of {}",
        bytes(host.memory_available_bytes),
        bytes(host.memory_total_bytes)
    );
    println!(
        "scratch     {} free of {} ({})",
        bytes(host.scratch_free_bytes),
        bytes(host.scratch_total_bytes),
        host.scratch_root
    );
    println!(
        "uptime      {}",
        humantime::format_duration(std::time::Duration::from_secs(host.uptime_seconds))
    );
    if !gpus.nvml_status.is_empty() {
        println!("gpus        none ({})", gpus.nvml_status);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "gpus        {} (driver {}, CUDA {}, NVML {})",
        gpus.devices.len(),
        gpus.driver_version,
        gpus.cuda_version,
        gpus.nvml_version
    );
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "#", "UUID", "NAME", "MEMORY", "UTIL", "TEMP", "POWER", "PCI", "CC", "NUMA", "MIG",
        "HEALTH", "ERROR",
    ]);
    for d in &gpus.devices {
        t.add_row([
            d.index.to_string(),
            d.uuid.clone(),
            d.name.clone(),
            format!(
                "{} / {}",
                bytes(d.memory_used_bytes),
                bytes(d.memory_total_bytes)
            ),
            d.gpu_utilization_percent
                .map(|u| format!("{u}%"))
                .unwrap_or_default(),
            d.temperature_celsius
                .map(|c| format!("{c}°C"))
                .unwrap_or_default(),
            match (d.power_draw_milliwatts, d.power_limit_milliwatts) {
                (Some(p), Some(l)) => format!("{}/{} W", p / 1000, l / 1000),
                _ => String::new(),
            },
            d.pci_bus_id.clone(),
            d.compute_capability.clone(),
            d.numa_node.map(|n| n.to_string()).unwrap_or_default(),
            d.mig_mode.clone(),
            if d.unhealthy {
                format!("unhealthy: {}", d.health_reason)
            } else {
                "ok".into()
            },
            d.error.clone(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
