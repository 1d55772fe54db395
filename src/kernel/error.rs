//! What a kernel operation can fail with. Each kind maps to one gRPC status at the gRPC edge
//! ([`crate::agent::convert`]); messages name the field or setting a person can act on.

use super::state::TransitionError;
use crate::runtime::RuntimeError;
use crate::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// INVALID_ARGUMENT, or FAILED_PRECONDITION when the cluster config forbids it.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// NOT_FOUND.
    #[error("kernel `{0}` is not on this agent")]
    NotFound(String),
    /// ALREADY_EXISTS.
    #[error("kernel `{0}` already exists with a different spec")]
    Conflict(String),
    /// FAILED_PRECONDITION: "cannot suspend a kernel that is HELD".
    #[error("{0}")]
    WrongState(String),
    /// RESOURCE_EXHAUSTED, naming the slot.
    #[error("{0}")]
    Exhausted(String),
    /// What the runtime answered.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// INTERNAL.
    #[error("{0}")]
    Internal(String),
}

impl From<TransitionError> for KernelError {
    fn from(e: TransitionError) -> Self {
        Self::WrongState(e.to_string())
    }
}
