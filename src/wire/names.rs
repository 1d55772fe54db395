//! The names people read for the wire's enums: `RUNNING`, not `KERNEL_STATE_RUNNING` or 3.

use super::pb::{AgentState, KernelState};

/// A kernel state by name (`RUNNING`).
pub fn kernel_state(s: KernelState) -> &'static str {
    s.as_str_name().trim_start_matches("KERNEL_STATE_")
}

/// An agent state by name: `ALIVE`, `LOST`, …
pub fn agent_state(s: AgentState) -> &'static str {
    match s {
        AgentState::Unspecified => "UNKNOWN",
        AgentState::Registered => "REGISTERED",
        AgentState::Alive => "ALIVE",
        AgentState::Lost => "LOST",
        AgentState::Gone => "GONE",
    }
}
