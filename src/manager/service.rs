//! The manager's gRPC services: `ManagerService` (heartbeats from agents) and
//! `ClusterService` (queries from the CLI).

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tonic::{Request, Response, Status};

use super::table::AgentTable;
use crate::cluster::keys::validate_name;
use crate::rpc::pb::cluster_service_server::ClusterService;
use crate::rpc::pb::manager_service_server::ManagerService;
use crate::rpc::pb::{HeartbeatRequest, HeartbeatResponse, ListAgentsRequest, ListAgentsResponse};

#[derive(Clone)]
pub struct ManagerRpc {
    pub manager_id: String,
    pub namespace: String,
    pub table: Arc<Mutex<AgentTable>>,
}

impl ManagerRpc {
    fn table(&self) -> Result<std::sync::MutexGuard<'_, AgentTable>, Status> {
        self.table
            .lock()
            .map_err(|_| Status::internal("agent table poisoned by an earlier panic"))
    }
}

#[tonic::async_trait]
impl ManagerService for ManagerRpc {
    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = req.into_inner();
        let Some(agent) = &req.agent else {
            return Err(Status::invalid_argument(
                "agent: the heartbeat carries no agent identity",
            ));
        };
        validate_name("agent.agent_id", &agent.agent_id).map_err(Status::invalid_argument)?;
        if agent.namespace != self.namespace {
            return Err(Status::failed_precondition(format!(
                "agent.namespace: agent `{}` belongs to namespace `{}`, this manager serves `{}`",
                agent.agent_id, agent.namespace, self.namespace
            )));
        }
        if req.heartbeat_interval_ms == 0 {
            return Err(Status::invalid_argument(
                "heartbeat_interval_ms: must be positive",
            ));
        }
        self.table()?
            .heartbeat(req, Instant::now(), SystemTime::now());
        Ok(Response::new(HeartbeatResponse {
            manager_id: self.manager_id.clone(),
        }))
    }
}

#[tonic::async_trait]
impl ClusterService for ManagerRpc {
    async fn list_agents(
        &self,
        _req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let agents = self.table()?.list(Instant::now());
        Ok(Response::new(ListAgentsResponse {
            agents,
            manager_id: self.manager_id.clone(),
        }))
    }
}
