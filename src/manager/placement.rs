//! `RunKernel`: choosing the agent for a new kernel (or job array) and creating it there.
//!
//! Agents are asked in the order of the slot view (`slots.rs`): first the ALIVE agents the
//! view says have room, most free CPU first; then the ALIVE agents the view says are full
//! but whose capacity (total − reserved) could hold the kernel, since the view may be
//! behind (a kernel that ended on its own whose event is still on its way). The agent's
//! answer is the authority: RESOURCE_EXHAUSTED moves on to the next agent, any other error
//! is the answer. The kernel is refused only when no agent could hold it or every agent
//! asked said it is full; the refusal names the slots short and carries the agents' words.
//! `--agent ID` asks that agent only. Cordoned and draining agents are never asked (see
//! `drain.rs`); naming one is FAILED_PRECONDITION naming the cordon.

use std::time::Instant;

use tonic::Status;

use super::fit::{self, capacity, describe, short_of};
use super::service::ManagerRpc;
use crate::wire::pb::{
    self, AgentState, AgentSummary, CreateKernelResponse, RunKernelRequest, SlotAmounts,
};

/// Why a kernel was not placed, for `deckhand_manager_placement_refusals`.
type Refusal = (&'static str, Status);

fn refused(reason: &'static str) -> impl FnOnce(Status) -> Refusal {
    move |s| (reason, s)
}

impl ManagerRpc {
    /// Places and creates the kernel of `req` (see the module doc); counts and logs the
    /// outcome.
    pub(super) async fn place(
        &self,
        req: RunKernelRequest,
    ) -> Result<CreateKernelResponse, Status> {
        let kernel_id = req
            .request
            .as_ref()
            .and_then(|c| c.spec.as_ref())
            .map(|s| s.kernel_id.clone())
            .unwrap_or_default();
        let metrics = crate::manager::metrics::manager();
        match self.place_on_an_agent(req).await {
            Ok(resp) => {
                metrics.placements.inc();
                tracing::info!(kernel_id = %kernel_id, agent_id = %resp.agent_id, "kernel placed");
                Ok(resp)
            }
            Err((reason, status)) => {
                metrics.refused(reason);
                tracing::info!(kernel_id = %kernel_id, reason, "kernel not placed: {}", status.message());
                Err(status)
            }
        }
    }

    async fn place_on_an_agent(
        &self,
        req: RunKernelRequest,
    ) -> Result<CreateKernelResponse, Refusal> {
        let invalid = refused("invalid_request");
        let Some(create) = req.request else {
            return Err(invalid(Status::invalid_argument("request: missing")));
        };
        let Some(spec) = create.spec.as_ref() else {
            return Err(invalid(Status::invalid_argument("request.spec: missing")));
        };
        let kernel_id = spec.kernel_id.clone();
        if spec.span.is_some() {
            return Err(invalid(Status::invalid_argument(
                "request.spec.span: set by the manager when it places a cluster kernel across agents, never by a request",
            )));
        }
        let internal = refused("agent_error");
        if !req.agent_id.is_empty() {
            let agent = self
                .agent_named(&req.agent_id)
                .map_err(refused("unknown_agent"))?;
            let cordon = self
                .table()
                .drain(&req.agent_id)
                .map(|d| d.refusal(&req.agent_id));
            if let Some(why) = cordon {
                return Err((
                    "cordoned",
                    Status::failed_precondition(format!("agent_id: {why}")),
                ));
            }
            let answer = self
                .client(&agent)
                .map_err(refused("agent_error"))?
                .create_kernel(create)
                .await;
            let resp = super::service::forwarded("CreateKernel", answer)
                .map_err(|s| match s.code() {
                    tonic::Code::ResourceExhausted => ("all_agents_full", s),
                    _ => ("agent_error", s),
                })?
                .into_inner();
            self.placed(&kernel_id, &resp).map_err(internal)?;
            return Ok(resp);
        }
        let runtime = spec.runtime.as_str();
        let agents: Vec<(AgentSummary, SlotAmounts)> = self
            .table()
            .with_free_slots(Instant::now())
            .into_iter()
            .filter(|(a, _)| has_runtime(a, runtime))
            .collect();
        // Cordoned and draining agents take no new kernels; a refusal says they were left out.
        let (agents, cordoned): (Vec<_>, Vec<_>) = agents
            .into_iter()
            .partition(|(a, _)| matches!(a.schedule.as_str(), "" | "schedulable"));
        let left_out = if cordoned.is_empty() {
            String::new()
        } else {
            let ids: Vec<String> = cordoned
                .iter()
                .map(|(a, _)| {
                    let id = a.identity.as_ref().map_or("", |i| i.agent_id.as_str());
                    format!("`{id}` ({})", a.schedule)
                })
                .collect();
            format!("; not asked, cordoned: {}", ids.join(", "))
        };
        if agents.is_empty() && !runtime.is_empty() {
            return Err((
                "no_runtime",
                Status::failed_precondition(format!(
                    "runtime: no agent in namespace `{}` has the `{runtime}` runtime (an agent offers vastai once config/vast_api/api_key is set)",
                    self.namespace
                )),
            ));
        }
        let alive = |a: &AgentSummary| a.state == AgentState::Alive as i32;
        if !agents.iter().any(|(a, _)| alive(a)) && cordoned.iter().any(|(a, _)| alive(a)) {
            return Err((
                "cordoned",
                Status::failed_precondition(format!(
                    "no agent in namespace `{}` takes new kernels: every alive agent is cordoned{left_out} (`deckhand node uncordon ID` lets one take them again)",
                    self.namespace
                )),
            ));
        }
        // A remote runtime takes none of the agent's own slots; the agent bounds it.
        let need = if matches!(runtime, "" | "docker") {
            fit::demand(spec)
        } else {
            SlotAmounts::default()
        };
        let plan = fit::plan(&agents, &need);
        if plan.fit.is_empty() && plan.maybe.is_empty() && spec.instances > 1 {
            // A cluster no single agent holds may span the agents of one swarm.
            let per = fit::demand(&pb::KernelSpec {
                instances: 1,
                ..spec.clone()
            });
            if matches!(runtime, "" | "docker") {
                if let Some(split) = fit::span_plan(&agents, &per, spec.instances) {
                    return self.place_span(create.clone(), split).await;
                }
            }
        }
        if plan.fit.is_empty() && plan.maybe.is_empty() {
            let (reason, why) = nobody_could(&agents, &need);
            return Err((
                reason,
                Status::resource_exhausted(format!(
                    "{}: {why}{left_out}",
                    self.no_room(&need, runtime)
                )),
            ));
        }
        let mut refusals = Vec::new();
        for agent in plan.fit.iter().chain(&plan.maybe) {
            let agent_id = agent
                .identity
                .as_ref()
                .map(|i| i.agent_id.clone())
                .unwrap_or_default();
            let mut client = self.client(agent).map_err(refused("agent_error"))?;
            let answer = client.create_kernel(create.clone()).await;
            match super::service::forwarded("CreateKernel", answer) {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    self.placed(&kernel_id, &resp)
                        .map_err(refused("agent_error"))?;
                    return Ok(resp);
                }
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    tracing::debug!(agent_id = %agent_id, kernel_id = %kernel_id, "agent full: {}", s.message());
                    refusals.push(format!("agent `{agent_id}`: {}", s.message()));
                }
                Err(s) => return Err(("agent_error", s)),
            }
        }
        Err((
            "all_agents_full",
            Status::resource_exhausted(format!(
                "{} ({}){left_out}",
                self.no_room(&need, runtime),
                refusals.join("; ")
            )),
        ))
    }

    /// Records a created kernel: where it is and what it holds.
    pub(super) fn placed(
        &self,
        kernel_id: &str,
        resp: &CreateKernelResponse,
    ) -> Result<(), Status> {
        self.directory().place(kernel_id, &resp.agent_id);
        self.table().view.placed(&resp.agent_id, &resp.kernels);
        Ok(())
    }

    fn no_room(&self, need: &SlotAmounts, runtime: &str) -> String {
        if matches!(runtime, "" | "docker") {
            format!(
                "no alive agent in namespace `{}` has room for {}",
                self.namespace,
                describe(need)
            )
        } else {
            format!(
                "no alive agent in namespace `{}` can take another `{runtime}` kernel",
                self.namespace
            )
        }
    }
}

/// Whether agent `a` runs kernels on `runtime` (any runtime when empty; an agent that reports
/// none is a Docker agent of an earlier version).
fn has_runtime(a: &AgentSummary, runtime: &str) -> bool {
    runtime.is_empty()
        || a.runtimes.iter().any(|r| r.name == runtime)
        || (a.runtimes.is_empty() && runtime == "docker")
}

/// Why no agent was even asked: none ALIVE, or none that large (with the refusal's reason
/// for metrics).
fn nobody_could(
    agents: &[(AgentSummary, SlotAmounts)],
    need: &SlotAmounts,
) -> (&'static str, String) {
    let alive: Vec<SlotAmounts> = agents
        .iter()
        .filter(|(a, _)| a.state == AgentState::Alive as i32)
        .map(|(a, _)| capacity(&a.slots.unwrap_or_default()))
        .collect();
    if alive.is_empty() {
        return ("no_agent_alive", "no agent is ALIVE".into());
    }
    let most = alive
        .iter()
        .fold(SlotAmounts::default(), |m, c| SlotAmounts {
            cpu: m.cpu.max(c.cpu),
            memory_bytes: m.memory_bytes.max(c.memory_bytes),
            gpus: m.gpus.max(c.gpus),
        });
    let short = short_of(&most, need);
    let why = if short.is_empty() {
        format!(
            "no single agent has all of that after its reserve (the most of each: {})",
            describe(&most)
        )
    } else {
        format!(
            "no agent has that much {} after its reserve (the most any has: {})",
            short.join(" or "),
            describe(&most)
        )
    };
    ("no_agent_large_enough", why)
}
