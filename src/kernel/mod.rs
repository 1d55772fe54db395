//! Kernels: manager-driven compute requests run as containers. This milestone (issue 3)
//! starts with the lifecycle state machine ([`state`]); spec validation, scratch homes and
//! the registry come next, beside it.

pub mod state;

pub use state::{Drmaa2State, KernelState, Transition, TransitionError};
