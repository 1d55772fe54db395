//! `AgentService`: what the agent answers to the manager and to operators.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::status::Snapshot;
use crate::config::ClusterConfig;
use crate::rpc::pb::agent_service_server::AgentService;
use crate::rpc::pb::{AgentIdentity, GetInfoRequest, GetInfoResponse};

pub struct AgentRpc {
    pub identity: AgentIdentity,
    pub config: watch::Receiver<Arc<ClusterConfig>>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub current_manager: watch::Receiver<String>,
}

#[tonic::async_trait]
impl AgentService for AgentRpc {
    async fn get_info(
        &self,
        _req: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        let cfg = self.config.borrow().clone();
        let snap = self.snapshot.borrow().clone();
        let mut identity = self.identity.clone();
        identity.region = cfg.region.clone();
        identity.scaling_group = cfg.scaling_group.clone();
        Ok(Response::new(GetInfoResponse {
            identity: Some(identity),
            host: Some(snap.host.clone()),
            gpus: Some(snap.gpus.clone()),
            slots: Some(snap.slots),
            heartbeat_interval_ms: cfg.heartbeat_interval.as_millis() as u64,
            manager_address: self.current_manager.borrow().clone(),
        }))
    }
}
