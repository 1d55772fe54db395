//! A cordoned or draining agent, as the supervisor carries it out: new kernels are refused
//! (FAILED_PRECONDITION naming the cordon, also for a kernel asked of this agent by name);
//! kernels that exist go on. A drain tells each live kernel when it will be stopped (an
//! event) and, at the deadline, stops those still live with a reason naming the drain. The
//! agent learns its cordon from etcd (`crate::agent::drain`), not from the manager.

use std::time::Duration;

use super::error::KernelError;
use super::supervisor::Supervisor;

impl Supervisor {
    /// Sets (or clears, with `None`) why this agent takes no new kernels.
    pub fn set_cordon(&self, refusal: Option<String>) {
        *self.0.cordon.lock() = refusal;
    }

    /// Why new kernels are refused now, if they are.
    pub fn cordon(&self) -> Option<String> {
        self.0.cordon.lock().clone()
    }

    /// Refuses a new kernel `id` on a cordoned agent (asking again for a kernel that exists
    /// answers it as before).
    pub(super) fn check_cordon(&self, id: &str) -> Result<(), KernelError> {
        let Some(refusal) = self.cordon() else {
            return Ok(());
        };
        let t = self.lock();
        if t.kernels.contains_key(id) || t.arrays.contains_key(id) {
            return Ok(());
        }
        Err(KernelError::WrongState(refusal))
    }

    /// The live kernels (not final), by id.
    pub fn live_ids(&self) -> Vec<String> {
        self.lock()
            .kernels
            .values()
            .filter(|e| !e.rec.state.is_final())
            .map(|e| e.rec.id.clone())
            .collect()
    }

    /// Tells every live kernel `what` (an event that is not a state change).
    pub fn note_all(&self, what: &str) {
        for id in self.live_ids() {
            self.note(&id, what.to_string(), None);
        }
    }

    /// Stops every live kernel (each with its grace period, all at once), reading `reason`.
    pub async fn stop_all_because(&self, reason: &str) {
        let live = self.live_ids();
        let grace: Option<Duration> = None;
        let stops = live
            .iter()
            .map(|id| self.stop_because(id, grace, Some(reason)));
        for (id, r) in live.iter().zip(futures::future::join_all(stops).await) {
            if let Err(e) = r {
                tracing::warn!(kernel_id = %id, error = %e, "stop for a drain failed");
            }
        }
    }
}
