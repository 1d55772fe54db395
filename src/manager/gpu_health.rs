//! `ResetGpuHealth` (`deckhand gpu reset-health NODE UUID`): forwarded to the agent named,
//! which keeps the marks (see `crate::host::gpu::health`); its next heartbeat shows the GPU
//! as a slot again.

use tonic::Status;

use super::service::{forwarded, ManagerRpc};
use crate::wire::pb::{ResetGpuHealthRequest, ResetGpuHealthResponse};

impl ManagerRpc {
    pub(super) async fn reset_gpu(
        &self,
        req: ResetGpuHealthRequest,
    ) -> Result<ResetGpuHealthResponse, Status> {
        if req.agent_id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "agent_id: missing; name the agent",
            ));
        }
        let agent = self.agent_named(req.agent_id.trim())?;
        let answer = self.client(&agent)?.reset_gpu_health(req).await;
        forwarded("ResetGpuHealth", answer).map(|r| r.into_inner())
    }
}
