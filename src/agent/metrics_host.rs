//! The host, its slots and its GPUs as the last heartbeat collected them, encoded at scrape
//! time (a scrape never samples the host or calls NVML itself).
//!
//! GPU series use the DCGM exporter's names and units (`DCGM_FI_DEV_GPU_UTIL` in %,
//! `DCGM_FI_DEV_FB_USED` in MiB, `DCGM_FI_DEV_POWER_USAGE` in W, …) and its labels `gpu`,
//! `UUID` and `Hostname`, so its dashboards and alerts work unchanged; the model is
//! `model_name`, not DCGM's `modelName`, because Prometheus' lint (`promtool check
//! metrics`) refuses camelCase label names. A value NVML could not read is left out, not
//! reported as 0. Fake GPUs (`docker/fake_gpus`) carry the same utilisation and memory
//! series with one more label, `fake="true"`: nothing runs on them, so their utilisation is
//! 0 %, their framebuffer 0 MiB used and all of their `ram_total` free (no temperature or
//! power: there is nothing to read).

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::agent::status::Snapshot;
use crate::host::GpuDevice;
use crate::wire::pb::SlotAmounts;

const MIB: f64 = 1024.0 * 1024.0;

/// A gauge without labels.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(e)
}

/// Encodes `snap`; nothing before the first heartbeat collected one.
pub fn encode(snap: &Snapshot, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let h = &snap.host;
    if h.cpu_count == 0 {
        return Ok(());
    }
    let host: [(&str, &str, f64); 7] = [
        (
            "deckhand_host_cpus",
            "CPUs of the host",
            f64::from(h.cpu_count),
        ),
        (
            "deckhand_host_cpu_usage_ratio",
            "Whole-host CPU usage since the previous heartbeat, 0 to 1",
            f64::from(h.cpu_usage_percent) / 100.0,
        ),
        (
            "deckhand_host_load1",
            "1-minute load average of the host",
            h.load_avg_1,
        ),
        (
            "deckhand_host_memory_total_bytes",
            "Memory of the host",
            h.memory_total_bytes as f64,
        ),
        (
            "deckhand_host_memory_available_bytes",
            "Memory of the host available to new processes",
            h.memory_available_bytes as f64,
        ),
        (
            "deckhand_host_scratch_disk_total_bytes",
            "Size of the filesystem holding the scratch root",
            h.scratch_total_bytes as f64,
        ),
        (
            "deckhand_host_scratch_disk_free_bytes",
            "Free space (for unprivileged users) on the filesystem holding the scratch root",
            h.scratch_free_bytes as f64,
        ),
    ];
    for (name, help, value) in host {
        gauge(encoder, name, help, value)?;
    }

    let s = &snap.slots;
    let mut e = encoder.encode_descriptor(
        "deckhand_slots",
        "Schedulable slots by kind (cpu in cores, memory in bytes, gpu in devices) and state (total, reserved, allocated, free)",
        None,
        MetricType::Gauge,
    )?;
    let parts = [
        ("total", s.total),
        ("reserved", s.reserved),
        ("allocated", s.allocated),
        ("free", s.free),
    ];
    for (state, amounts) in parts {
        let a: SlotAmounts = amounts.unwrap_or_default();
        let kinds = [
            ("cpu", a.cpu),
            ("memory", a.memory_bytes as f64),
            ("gpu", f64::from(a.gpus)),
        ];
        for (kind, value) in kinds {
            let labels = [("kind", kind), ("state", state)];
            ConstGauge::new(value).encode(e.encode_family(&labels)?)?;
        }
    }

    let devices: Vec<&GpuDevice> = snap.gpus.devices.iter().collect();
    let hostname = h.hostname.as_str();
    type Reading = fn(&GpuDevice) -> Option<f64>;
    let dcgm: [(&str, &str, Reading); 6] = [
        ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)", |d| {
            d.gpu_utilization_percent
                .map(f64::from)
                .or(d.fake.then_some(0.0))
        }),
        (
            "DCGM_FI_DEV_MEM_COPY_UTIL",
            "Memory utilization (in %)",
            |d| {
                d.memory_utilization_percent
                    .map(f64::from)
                    .or(d.fake.then_some(0.0))
            },
        ),
        (
            "DCGM_FI_DEV_FB_USED",
            "Framebuffer memory used (in MiB)",
            |d| (d.memory_total_bytes > 0).then(|| d.memory_used_bytes as f64 / MIB),
        ),
        (
            "DCGM_FI_DEV_FB_FREE",
            "Framebuffer memory free (in MiB)",
            |d| {
                (d.memory_total_bytes > 0)
                    .then(|| d.memory_total_bytes.saturating_sub(d.memory_used_bytes) as f64 / MIB)
            },
        ),
        ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)", |d| {
            d.temperature_celsius.map(f64::from)
        }),
        ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)", |d| {
            d.power_draw_milliwatts.map(|mw| f64::from(mw) / 1000.0)
        }),
    ];
    if devices.is_empty() {
        return Ok(());
    }
    for (name, help, reading) in dcgm {
        let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for d in &devices {
            let Some(value) = reading(d) else { continue };
            let index = d.index.to_string();
            let mut labels = vec![
                ("gpu", index.as_str()),
                ("UUID", d.uuid.as_str()),
                ("model_name", d.name.as_str()),
                ("Hostname", hostname),
            ];
            if d.fake {
                labels.push(("fake", "true"));
            }
            ConstGauge::new(value).encode(e.encode_family(&labels)?)?;
        }
    }
    let mut e = encoder.encode_descriptor(
        "deckhand_gpu_healthy",
        "1 while NVML's critical events left the GPU healthy, 0 once one marked it unhealthy (until deckhand gpu reset-health)",
        None,
        MetricType::Gauge,
    )?;
    for d in &devices {
        let index = d.index.to_string();
        let labels = [
            ("gpu", index.as_str()),
            ("UUID", d.uuid.as_str()),
            ("model_name", d.name.as_str()),
            ("Hostname", hostname),
        ];
        let healthy = if d.unhealthy { 0.0 } else { 1.0 };
        ConstGauge::new(healthy).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{GpuInventory, HostStatus};
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Fixed(Snapshot);

    impl Collector for Fixed {
        fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode(&self.0, &mut e)
        }
    }

    fn exposition(snap: Snapshot) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(Fixed(snap)));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &r).unwrap();
        text
    }

    #[test]
    fn nothing_is_reported_before_the_first_heartbeat_collected_the_host() {
        assert_eq!(exposition(Snapshot::default()), "");
    }

    #[test]
    fn gpus_read_as_the_dcgm_exporter_reports_them_and_fake_ones_labelled_fake() {
        let t4 = GpuDevice {
            index: 0,
            uuid: "GPU-1".into(),
            name: "Tesla T4".into(),
            memory_total_bytes: 16 << 30,
            memory_used_bytes: 1 << 30,
            gpu_utilization_percent: Some(37),
            temperature_celsius: Some(45),
            power_draw_milliwatts: Some(70_500),
            ..Default::default()
        };
        let fake = GpuDevice {
            index: 1,
            uuid: "0d6d1a2a-fake".into(),
            name: "Fake".into(),
            memory_total_bytes: 8 << 30,
            fake: true,
            ..Default::default()
        };
        let text = exposition(Snapshot {
            host: HostStatus {
                hostname: "h1".into(),
                cpu_count: 4,
                ..Default::default()
            },
            gpus: GpuInventory {
                devices: vec![t4, fake],
                ..Default::default()
            },
            ..Default::default()
        });
        let labels = r#"{gpu="0",UUID="GPU-1",model_name="Tesla T4",Hostname="h1"}"#;
        for sample in [
            format!("DCGM_FI_DEV_FB_USED{labels} 1024.0"),
            format!("DCGM_FI_DEV_FB_FREE{labels} 15360.0"),
            format!("DCGM_FI_DEV_GPU_UTIL{labels} 37.0"),
            format!("DCGM_FI_DEV_GPU_TEMP{labels} 45.0"),
            format!("DCGM_FI_DEV_POWER_USAGE{labels} 70.5"),
            "deckhand_host_cpus 4.0".to_string(),
            r#"deckhand_slots{kind="gpu",state="total"} 0.0"#.to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == sample),
                "no `{sample}` in:\n{text}"
            );
        }
        assert!(
            !text.contains(&format!("DCGM_FI_DEV_MEM_COPY_UTIL{labels}")),
            "a reading NVML did not give is left out:\n{text}"
        );
        // The fake GPU: the utilisation and memory series, labelled fake; no temperature or
        // power, which nothing could read.
        let fake = r#"{gpu="1",UUID="0d6d1a2a-fake",model_name="Fake",Hostname="h1",fake="true"}"#;
        for sample in [
            format!("DCGM_FI_DEV_GPU_UTIL{fake} 0.0"),
            format!("DCGM_FI_DEV_MEM_COPY_UTIL{fake} 0.0"),
            format!("DCGM_FI_DEV_FB_USED{fake} 0.0"),
            format!("DCGM_FI_DEV_FB_FREE{fake} 8192.0"),
        ] {
            assert!(
                text.lines().any(|l| l == sample),
                "no `{sample}` in:\n{text}"
            );
        }
        for name in ["DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"] {
            assert!(
                !text.contains(&format!("{name}{fake}")),
                "{name} of a fake GPU:\n{text}"
            );
        }
        // Only the fake GPU is labelled fake; the real one's labels are DCGM's own.
        assert_eq!(text.matches("fake=").count(), 4, "{text}");
    }
}
