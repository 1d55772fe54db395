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
            .filter(|e| e.rec.slots.as_ref().is_some_and(|s| s.gpus.iter().any(|g| g == uuid)))
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
