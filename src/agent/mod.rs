//! The node daemon's services: the gRPC `AgentService` ([`service`]), the heartbeat to a
//! manager ([`heartbeat`]) and the event reporter ([`reporter`]), the settings task
//! ([`settings`]), drain and GPU health followers, the conversion to the wire ([`convert`]),
//! the metrics collectors and the gRPC side of spanning kernels ([`peers`]). Start-up and
//! shutdown are `crate::daemon::agent`.

pub mod convert;
pub mod drain;
pub mod gpu_health;
pub mod heartbeat;
pub mod metrics;
pub mod metrics_host;
pub mod peers;
pub mod reporter;
pub mod service;
pub mod settings;
pub mod status;

use crate::cluster::Owner;
use crate::config::ClusterConfig;
use crate::wire::pb::AgentIdentity;

/// How an agent introduces itself in heartbeats: who it is, where, which build, since when
/// (region and scaling group as the defaults until its settings say otherwise).
pub fn identity(
    agent_id: &str,
    namespace: &str,
    address: &str,
    started: chrono::DateTime<chrono::Utc>,
    owner: &Owner,
) -> AgentIdentity {
    let defaults = ClusterConfig::default();
    AgentIdentity {
        agent_id: agent_id.to_string(),
        namespace: namespace.to_string(),
        address: address.to_string(),
        version: crate::VERSION.into(),
        arch: std::env::consts::ARCH.into(),
        region: defaults.region,
        scaling_group: defaults.scaling_group,
        started_at_ms: started.timestamp_millis(),
        instance_id: owner.instance_id.clone(),
        hostname: owner.hostname.clone(),
    }
}
