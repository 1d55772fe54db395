//! Placing a cluster kernel that no single agent holds across the agents of one Docker
//! swarm (see [`super::fit::span_plan`] for who takes what, and the Docker runtime's
//! `span` module for how the owner runs it).
//!
//! Whole or not at all: the owner is created first (its overlay network, the master and its
//! first workers, their slots), then each peer's part (its slots reserved); an agent keeps
//! any kernel with a span HELD once created.
//! A refusal anywhere removes everything made so far and is the answer. Then, unless the
//! kernel was asked held, the owner is released: it releases its parts and starts its own
//! instances, master last. The kernel's id names it on every agent; the manager lists and
//! routes it by its owner, and `<id>/<i>` to the agent holding instance `i`.

use tonic::Status;

use super::service::{forwarded, ManagerRpc};
use crate::wire::pb::{
    self, AgentSummary, ControlKernelRequest, CreateKernelRequest, CreateKernelResponse,
    KernelAction,
};

/// Why a kernel was not placed (for metrics) and the answer.
type Refusal = (&'static str, Status);

/// Constants that belong to the master alone (a part never serves them).
const MASTER_ONLY: &[&str] = &["DOCKER_SSH"];

fn agent_id(a: &AgentSummary) -> String {
    a.identity
        .as_ref()
        .map(|i| i.agent_id.clone())
        .unwrap_or_default()
}

impl ManagerRpc {
    /// Creates the kernel of `create` over `split` (the owner first), as the module says.
    pub(super) async fn place_span(
        &self,
        create: CreateKernelRequest,
        split: Vec<(AgentSummary, u32)>,
    ) -> Result<CreateKernelResponse, Refusal> {
        let spec = create.spec.clone().unwrap_or_default();
        let kernel_id = spec.kernel_id.clone();
        let network = crate::runtime::docker::cluster::overlay_name(&self.namespace, &kernel_id);
        let Some(((owner, own), rest)) = split.split_first() else {
            return Err(("invalid_request", Status::internal("an empty span")));
        };
        let owner_id = agent_id(owner);
        let mut peers = Vec::new();
        let mut next = *own;
        for (a, n) in rest {
            peers.push(pb::SpanPeer {
                agent_id: agent_id(a),
                address: a
                    .identity
                    .as_ref()
                    .map(|i| i.address.clone())
                    .unwrap_or_default(),
                first: next,
                count: *n,
            });
            next += n;
        }
        tracing::info!(
            kernel_id = %kernel_id,
            owner = %owner_id,
            peers = %peers.iter().map(|p| format!("{}:{}+{}", p.agent_id, p.first, p.count)).collect::<Vec<_>>().join(","),
            "no single agent holds the cluster kernel; spanning the agents of one swarm"
        );
        let mut owner_spec = spec.clone();
        owner_spec.span = Some(pb::ClusterSpan {
            first: 0,
            count: *own,
            owner: String::new(),
            network: network.clone(),
            peers: peers.clone(),
        });
        let made = match self.create_on(owner, owner_spec).await {
            Ok(m) => m,
            Err(refusal) => {
                self.undo(&kernel_id, owner, &[]).await;
                return Err(refusal);
            }
        };
        let mut parts_made = Vec::new();
        for (p, (a, _)) in peers.iter().zip(rest) {
            let mut part = spec.clone();
            part.ports.clear();
            part.input_path.clear();
            part.output_path.clear();
            part.error_path.clear();
            part.results.clear();
            part.constants
                .retain(|k, _| !MASTER_ONLY.contains(&k.as_str()));
            part.span = Some(pb::ClusterSpan {
                first: p.first,
                count: p.count,
                owner: owner_id.clone(),
                network: network.clone(),
                peers: Vec::new(),
            });
            match self.create_on(a, part).await {
                Ok(_) => parts_made.push(a.clone()),
                Err((reason, status)) => {
                    self.undo(&kernel_id, owner, &parts_made).await;
                    let status = Status::new(
                        status.code(),
                        format!(
                            "instances {}…{} of the cluster on agent `{}`: {}",
                            p.first,
                            p.first + p.count - 1,
                            p.agent_id,
                            status.message()
                        ),
                    );
                    return Err((reason, status));
                }
            }
        }
        let resp = if spec.submit_as_hold {
            made
        } else {
            let answer = self
                .client(owner)
                .map_err(|s| ("agent_error", s))?
                .control_kernel(ControlKernelRequest {
                    kernel_id: kernel_id.clone(),
                    action: KernelAction::Release as i32,
                    ..Default::default()
                })
                .await;
            let kernels = forwarded("ControlKernel", answer)
                .map_err(|s| ("agent_error", s))?
                .into_inner()
                .kernels;
            CreateKernelResponse {
                agent_id: owner_id,
                kernels,
            }
        };
        self.placed(&kernel_id, &resp)
            .map_err(|s| ("agent_error", s))?;
        Ok(resp)
    }

    async fn create_on(
        &self,
        agent: &AgentSummary,
        spec: pb::KernelSpec,
    ) -> Result<CreateKernelResponse, Refusal> {
        let answer = self
            .client(agent)
            .map_err(|s| ("agent_error", s))?
            .create_kernel(CreateKernelRequest {
                spec: Some(spec),
                array: None,
            })
            .await;
        let resp = forwarded("CreateKernel", answer)
            .map(|r| r.into_inner())
            .map_err(|s| match s.code() {
                tonic::Code::ResourceExhausted => ("all_agents_full", s),
                _ => ("agent_error", s),
            })?;
        // Made, but it could not be created there (its engine refused): as good as refused.
        match resp.kernels.first() {
            Some(k) if k.state == pb::KernelState::Failed as i32 => Err((
                "agent_error",
                Status::failed_precondition(format!("agent `{}`: {}", agent_id(agent), k.reason)),
            )),
            _ => Ok(resp),
        }
    }

    /// Removes what a span that could not be completed made (the parts, then the owner).
    async fn undo(&self, kernel_id: &str, owner: &AgentSummary, parts: &[AgentSummary]) {
        for a in parts.iter().chain(std::iter::once(owner)) {
            let Ok(mut c) = self.client(a) else { continue };
            let removed = c
                .control_kernel(ControlKernelRequest {
                    kernel_id: kernel_id.to_string(),
                    action: KernelAction::Remove as i32,
                    force: true,
                    ..Default::default()
                })
                .await;
            if let Err(s) = removed {
                tracing::warn!(kernel_id, agent_id = %agent_id(a), "cannot undo a cluster span: {}", s.message());
            }
        }
    }
}
