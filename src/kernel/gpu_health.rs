//! A GPU marked unhealthy (`crate::host::gpu::health`) while a kernel holds it: the kernel
//! gets an event naming the GPU and the reason and keeps running, or — with
//! `gpu/unhealthy_policy = stop` — is stopped (its grace period), with a reason naming the
//! GPU. The GPU itself is no slot any more, so no new kernel gets it.

use super::supervisor::Supervisor;

impl Supervisor {
    /// The live kernels holding GPU `uuid`.
    fn holding_gpu(&self, uuid: &str) -> Vec<String> {
        self.lock()
            .kernels
            .values()
            .filter(|e| !e.rec.state.is_final())
            .filter(|e| {
                e.rec
                    .slots
                    .as_ref()
                    .is_some_and(|s| s.gpus.iter().any(|g| g == uuid))
            })
            .map(|e| e.rec.id.clone())
            .collect()
    }

    /// Tells (or stops, per the policy) the kernels holding GPU `uuid`, just marked
    /// unhealthy for `reason`.
    pub async fn gpu_unhealthy(&self, uuid: &str, reason: &str) {
        let stop = self.config().stop_on_unhealthy_gpu;
        for id in self.holding_gpu(uuid) {
            if stop {
                let why = format!(
                    "stopped: its GPU `{uuid}` is unhealthy ({reason}; gpu/unhealthy_policy = stop)"
                );
                self.note(&id, format!("GPU `{uuid}` is unhealthy: {reason}"), None);
                if let Err(e) = self.stop_because(&id, None, Some(&why)).await {
                    tracing::warn!(kernel_id = %id, error = %e, "stop for an unhealthy GPU failed");
                }
            } else {
                self.note(
                    &id,
                    format!("GPU `{uuid}` is unhealthy: {reason}; the kernel keeps running (gpu/unhealthy_policy = keep)"),
                    None,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Over the in-memory runtime: a kernel cannot hold an NVML GPU on a machine without
    //! NVIDIA's container runtime, so the reaction to a mark is tested here; the marks
    //! themselves from NVML events are tested end to end in `tests/gpu_health.rs`.
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    use crate::config::ClusterConfig;
    use crate::kernel::slots::{Capacity, Gpu};
    use crate::kernel::{KernelState, Supervisor, SupervisorOptions};
    use crate::runtime::memory::MemoryRuntime;
    use crate::runtime::{Runtime, Runtimes};
    use crate::spec::{CreateRequest, Template};

    #[tokio::test]
    async fn the_kernel_holding_an_unhealthy_gpu_is_told_and_stopped_only_by_policy() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg_tx, cfg) = watch::channel(Arc::new(ClusterConfig {
            default_runtime: "memory".into(),
            ..ClusterConfig::default()
        }));
        let (_cap_tx, capacity) = watch::channel(Arc::new(Capacity {
            cpu_count: 2,
            memory_total: 4 << 30,
            gpus: vec![Gpu {
                uuid: "GPU-a".into(),
                real: false,
            }],
            ..Default::default()
        }));
        let rt: Arc<dyn Runtime> = Arc::new(MemoryRuntime::new());
        let sup = Supervisor::new(SupervisorOptions {
            runtimes: Runtimes::new(rt),
            agent_id: "a1".into(),
            state_dir: dir.path().to_path_buf(),
            config: cfg,
            capacity,
            creation_concurrency: 4,
            event_capacity: 1000,
        })
        .unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(sup.clone().run(stop.clone()));
        let mut events = sup.events().subscribe();
        let holder = Template {
            kernel_id: uuid::Uuid::new_v4().to_string(),
            image: "deckhand-test/busybox:latest".into(),
            gpus: "1".into(),
            ..Default::default()
        };
        let id = holder.kernel_id.clone();
        let made = sup
            .create(CreateRequest {
                template: holder,
                array: None,
            })
            .await
            .unwrap();
        assert_eq!(made[0].record.state, KernelState::Running);

        // keep (the default): an event, and it runs on.
        sup.gpu_unhealthy("GPU-a", "XID 79 (fallen off the bus)")
            .await;
        let mut told = false;
        while let Ok(ev) = events.try_recv() {
            told |= ev.kernel_id == id && ev.reason.contains("GPU `GPU-a` is unhealthy: XID 79");
        }
        assert!(told);
        assert_eq!(sup.info(&id).unwrap().record.state, KernelState::Running);
        // A GPU nobody holds tells nobody.
        sup.gpu_unhealthy("GPU-b", "double-bit ECC error").await;
        assert_eq!(sup.info(&id).unwrap().record.state, KernelState::Running);

        // stop: the kernel is stopped, its reason naming the GPU.
        cfg_tx.send_modify(|c| Arc::make_mut(c).stop_on_unhealthy_gpu = true);
        sup.gpu_unhealthy("GPU-a", "XID 79 (fallen off the bus)")
            .await;
        let mut ended = None;
        for _ in 0..400 {
            let rec = sup.info(&id).unwrap().record;
            if rec.state.is_final() {
                ended = Some(rec);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rec = ended.expect("the kernel ended");
        assert!(
            rec.reason.contains("its GPU `GPU-a` is unhealthy"),
            "{}",
            rec.reason
        );
        assert!(rec.slots.is_none(), "its slots are given back");
        stop.cancel();
        let _ = run.await;
    }
}
