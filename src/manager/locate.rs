//! Where a kernel is: the manager's directory first, else every agent is asked (and the
//! answer remembered); one instance of a cluster kernel that spans agents is on the peer
//! its owner names. And the reconciliation with an agent that (re)registers, which keeps
//! the directory and the slot view in step with what the agent really holds.

use std::time::Duration;

use tonic::Status;

use super::service::{is_part, ManagerRpc};
use crate::wire::channel;
use crate::wire::pb::agent_service_client::AgentServiceClient;
use crate::wire::pb::{AgentSummary, KernelRef, ListKernelsRequest, SyncKernelsRequest};

impl ManagerRpc {
    /// `SyncKernels` with one agent: kernels it has that this manager did not know are
    /// placed on it; kernels this manager placed there that it does not have are forgotten
    /// (reported, with the agent's reason).
    pub(super) async fn sync_with(&self, agent_id: &str, address: &str) {
        let known = self.directory().located_at(agent_id);
        let sent = async {
            let ch =
                channel(address, Duration::from_secs(10), &self.tls).map_err(|e| e.to_string())?;
            AgentServiceClient::new(ch)
                .sync_kernels(SyncKernelsRequest {
                    known_kernel_ids: known,
                    destroy_unknown: false,
                })
                .await
                .map(|r| r.into_inner())
                .map_err(|s| s.message().to_string())
        };
        match sent.await {
            Ok(r) => {
                {
                    let mut t = self.table();
                    t.view.known(agent_id, &r.unknown);
                    for l in &r.lost {
                        t.view.forget(&l.kernel_id);
                    }
                }
                let mut d = self.directory();
                for k in r.unknown.iter().filter(|k| !is_part(k)) {
                    d.place(&k.kernel_id, agent_id);
                }
                for l in &r.lost {
                    tracing::warn!(agent_id, kernel_id = %l.kernel_id, "kernel lost: {}", l.reason);
                    d.forget(&l.kernel_id);
                }
                tracing::info!(
                    agent_id,
                    adopted = r.unknown.len(),
                    lost = r.lost.len(),
                    "kernels reconciled with the agent"
                );
            }
            Err(e) => {
                tracing::warn!(agent_id, error = %e, "cannot reconcile kernels with the agent; trying again on its next heartbeat");
                self.directory().sync_failed(agent_id);
            }
        }
    }

    /// The agent holding `kernel_id` (or one of its instances): from the directory, else by
    /// asking every agent.
    pub(super) async fn holder(&self, id: &str) -> Result<AgentSummary, Status> {
        // One instance of a cluster kernel (`<id>/<index>`) is where its kernel is, unless
        // the kernel spans agents and its owner says the instance runs on a peer.
        let Some((kernel_id, index)) = id.split_once('/') else {
            return self.kernel_holder(id).await;
        };
        let owner = self.kernel_holder(kernel_id).await?;
        let info = self
            .client(&owner)?
            .get_kernel(KernelRef {
                kernel_id: kernel_id.to_string(),
            })
            .await
            .map(|r| r.into_inner())
            .ok();
        let peer = info
            .as_ref()
            .and_then(|k| k.runtime_info.get(&format!("instance/{index}")))
            .and_then(|v| v.rsplit_once(" on agent "))
            .map(|(_, agent)| agent.to_string());
        match peer {
            Some(agent) => self.agent_named(&agent),
            None => Ok(owner),
        }
    }

    /// The agent holding kernel (or array) `kernel_id`.
    async fn kernel_holder(&self, kernel_id: &str) -> Result<AgentSummary, Status> {
        let known = self.directory().locate(kernel_id).map(str::to_string);
        if let Some(agent_id) = known {
            if let Ok(a) = self.agent_named(&agent_id) {
                return Ok(a);
            }
        }
        for a in self.agents() {
            let Ok(mut c) = self.client(&a) else {
                continue;
            };
            let found = c
                .list_kernels(ListKernelsRequest {})
                .await
                .map(|r| {
                    r.into_inner()
                        .kernels
                        .iter()
                        .filter(|k| !is_part(k))
                        .any(|k| k.kernel_id == kernel_id || k.array_id == kernel_id)
                })
                .unwrap_or(false);
            if found {
                let agent_id = a
                    .identity
                    .as_ref()
                    .map(|i| i.agent_id.clone())
                    .unwrap_or_default();
                self.directory().place(kernel_id, &agent_id);
                return Ok(a);
            }
        }
        Err(Status::not_found(format!(
            "kernel `{kernel_id}` is on no agent of namespace `{}`",
            self.namespace
        )))
    }
}
