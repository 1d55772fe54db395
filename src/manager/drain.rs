//! `SetNodeSchedule`: `deckhand node cordon|uncordon|drain NODE [--deadline D]`. The manager
//! checks the request and writes the agent's `nodes/agents/<id>/drain` key
//! ([`crate::cluster::drain`]); uncordon deletes it. The key is not on a lease, so a cordon
//! or drain outlives the agent's and the manager's restarts. The manager reads it back
//! through its watch of `nodes/agents/` (placement refuses the agent, `nodes` shows it); the
//! agent watches its own key and carries the drain out itself (see `crate::agent::drain`),
//! so a deadline that passes while no manager runs is still kept.
//!
//! Cordon of a draining agent keeps the drain (and its deadline); drain of a draining agent
//! sets the new deadline; uncordon ends either.

use std::time::Duration;

use tonic::Status;

use super::service::ManagerRpc;
use crate::cluster::drain::{DrainMode, NodeDrain};
use crate::cluster::Keys;
use crate::config::schema::parse_duration;
use crate::util::now_ms;
use crate::wire::pb::{NodeAction, SetNodeScheduleRequest, SetNodeScheduleResponse};

/// A drain's deadline when none is given (Nomad's default).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);
/// The longest deadline accepted.
const MAX_DEADLINE: Duration = Duration::from_secs(30 * 24 * 3600);

impl ManagerRpc {
    pub(super) async fn set_schedule(
        &self,
        req: SetNodeScheduleRequest,
    ) -> Result<SetNodeScheduleResponse, Status> {
        let id = req.agent_id.trim().to_string();
        if id.is_empty() {
            return Err(Status::invalid_argument(
                "agent_id: missing; name the agent",
            ));
        }
        let action = match NodeAction::try_from(req.action) {
            Ok(NodeAction::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(
                    "action: say cordon, uncordon or drain",
                ))
            }
            Ok(a) => a,
        };
        let deadline = if action == NodeAction::Drain {
            deadline(&req.deadline)?
        } else if !req.deadline.is_empty() {
            return Err(Status::invalid_argument(
                "deadline: only a drain has a deadline",
            ));
        } else {
            Duration::ZERO
        };
        if !self.table().knows(&id) {
            return Err(Status::not_found(format!(
                "agent_id: no agent `{id}` in namespace `{}`",
                self.namespace
            )));
        }
        let key = Keys::new(&self.namespace).agent_drain(&id);
        let mut etcd = crate::cluster::etcd::connect(&self.etcd)
            .await
            .map_err(|e| Status::unavailable(format!("etcd: {e}")))?;
        let unavailable = |e: etcd_client::Error| {
            Status::unavailable(format!("etcd: {}", crate::cluster::etcd::describe(&e)))
        };
        let current = etcd
            .get(key.as_str(), None)
            .await
            .map_err(unavailable)?
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok().and_then(NodeDrain::parse));
        let now = now_ms();
        let since = current.as_ref().map_or(now, |d| d.since_ms);
        let next = match action {
            NodeAction::Uncordon => None,
            NodeAction::Cordon => Some(match current {
                Some(d) if d.mode == DrainMode::Drain => d,
                _ => NodeDrain {
                    mode: DrainMode::Cordon,
                    since_ms: since,
                    deadline_ms: 0,
                    by: self.manager_id.clone(),
                },
            }),
            NodeAction::Drain | NodeAction::Unspecified => Some(NodeDrain {
                mode: DrainMode::Drain,
                since_ms: since,
                deadline_ms: now + deadline.as_millis() as i64,
                by: self.manager_id.clone(),
            }),
        };
        match &next {
            Some(d) => {
                let value = serde_json::to_string(d)
                    .map_err(|e| Status::internal(format!("cannot encode the drain: {e}")))?;
                etcd.put(key.as_str(), value, None)
                    .await
                    .map_err(unavailable)?;
            }
            None => {
                etcd.delete(key.as_str(), None).await.map_err(unavailable)?;
            }
        }
        tracing::info!(agent_id = %id, action = ?action, "node schedule changed");
        let resp = SetNodeScheduleResponse {
            agent_id: id.clone(),
            schedule: next
                .as_ref()
                .map_or("schedulable", |d| d.schedule())
                .to_string(),
            drain_deadline_ms: next.as_ref().map_or(0, |d| d.deadline_ms),
        };
        self.table().set_drain(&id, next);
        Ok(resp)
    }
}

/// A drain's `deadline`: a duration up to 30 days; empty: [`DEFAULT_DEADLINE`].
fn deadline(v: &str) -> Result<Duration, Status> {
    if v.trim().is_empty() {
        return Ok(DEFAULT_DEADLINE);
    }
    let d = parse_duration(v).map_err(|r| Status::invalid_argument(format!("deadline: {r}")))?;
    if d > MAX_DEADLINE {
        return Err(Status::invalid_argument(format!(
            "deadline: `{v}` is longer than 30 days"
        )));
    }
    Ok(d)
}
