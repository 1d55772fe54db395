//! The JSON values of registration keys: `nodes/agents/<id>` and `nodes/managers/<id>`.

use serde::{Deserialize, Serialize};

use super::session::Owner;

/// An agent's registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    /// Where the manager reaches the agent's gRPC service.
    pub address: String,
    pub version: String,
    pub arch: String,
    /// RFC 3339.
    pub started_at: String,
    pub started_at_ms: i64,
    pub region: String,
    pub scaling_group: String,
    #[serde(flatten)]
    pub owner: Owner,
}

/// A manager's registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagerRecord {
    pub id: String,
    /// Where agents and the CLI reach the manager's gRPC services.
    pub address: String,
    pub version: String,
    pub started_at: String,
    #[serde(flatten)]
    pub owner: Owner,
}
