//! Kernels: manager-driven compute requests run as containers.
//!
//! - [`state`]: the lifecycle state machine (with the DRMAA2 mapping);
//! - [`spec`]: validation of what a caller asks for;
//! - [`scratch`]: scratch homes and the persisted registry under the scratch root;
//! - [`container`]: the Docker create body for a kernel;
//! - [`engine`]: the table of kernels, slots/GPUs/ports, Docker events, job arrays;
//! - [`events`]: the numbered event log delivered to the manager and to watchers;
//! - [`cgroup`]: per-kernel CPU and memory from cgroups.

pub mod cgroup;
pub mod container;
pub mod engine;
pub mod events;
pub mod record;
pub mod scratch;
pub mod spec;
pub mod state;

pub use engine::{EngineOptions, KernelError, Kernels};
pub use state::{Drmaa2State, KernelState, Transition, TransitionError};
