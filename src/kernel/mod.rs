//! Kernels: manager-driven compute requests, supervised independently of where they run
//! (a [`Runtime`](crate::runtime::Runtime) carries them out). Nothing here knows Docker,
//! gRPC or the wire types; the gRPC edge converts ([`crate::agent::convert`]).
//!
//! - [`supervisor`]: the public API and the concurrency rules;
//! - [`table`]: the table of kernels and the one place state changes;
//! - [`launch`]: create (validate, allocate, prepare, create, start);
//! - [`arrays`]: job arrays and their parallelism cap;
//! - [`cordon`]: a cordoned or draining agent: new kernels refused, stops at a drain's deadline;
//! - [`control`]: stop, remove, signal, suspend/resume, release, sync, stop all;
//! - [`access`]: logs, exec and files of a kernel (or of one instance of a cluster kernel);
//! - [`observe`]: runtime events, resync, restarts, exits;
//! - [`recovery`]: after a restart, records against the runtime's instances;
//! - [`restarts`]: restarts the agent makes itself (`on-failure` with a delay);
//! - [`slots`]: the one slot calculation (allocation and heartbeats);
//! - [`state`]: the lifecycle state machine (with the DRMAA2 mapping);
//! - [`spec`]: the template as asked (a task profile resolved), and its validation;
//! - [`profile`]: what task-profile kernels get beyond that (progress, shutdown command,
//!   resources and results, SSH);
//! - [`record`], [`registry`]: what is known of a kernel, and where it is persisted;
//! - [`gpu_health`]: kernels holding a GPU marked unhealthy (event, or stop by policy);
//! - [`events`]: the numbered event log delivered to the manager and to watchers;
//! - [`error`]: what operations fail with.

pub mod access;
pub mod arrays;
pub mod control;
pub mod cordon;
pub mod error;
pub mod events;
pub mod gpu_health;
pub mod launch;
pub mod observe;
pub mod profile;
pub mod record;
pub mod recovery;
pub mod registry;
pub mod restarts;
pub mod slots;
pub mod state;
pub mod supervisor;
pub mod table;

pub use control::{Action, Control, SyncOutcome};
pub use error::KernelError;
pub use state::{Drmaa2State, KernelState, Transition, TransitionError};
pub use supervisor::{KernelView, Supervisor, SupervisorOptions};

#[cfg(test)]
mod tests;
