//! deckhand: a cluster worker agent.
//!
//! One `deckhand agent` runs on every worker host. It reads its settings from etcd
//! ([`config`]), registers itself under a lease and watches the namespace ([`cluster`]),
//! samples the host and its GPUs ([`host`]) and reports them to a manager over gRPC
//! ([`agent`], [`rpc`]). The same crate holds the small reference manager ([`manager`]) and
//! the operator CLI ([`cli`]), so a cluster can be stood up with this binary alone.
//! Kernels (containers run for the manager) start with their lifecycle in [`kernel`].

#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod host;
pub mod kernel;
pub mod manager;
pub mod runtime;
pub mod spec;
pub mod telemetry;
pub mod util;
pub mod wire;

/// The version every registration and heartbeat carries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
