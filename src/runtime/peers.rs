//! How a runtime reaches the other agents a spanning cluster kernel has parts on: through
//! [`Peers`], a trait the agent layer implements over its gRPC client and hands to the
//! runtime, so nothing in `runtime/` speaks the wire.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::RuntimeError;
use crate::spec::SpanPeer;

/// What the owner asks a peer to do with its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAction {
    /// Start the held part (before the owner starts its own instances).
    Release,
    Stop,
    Signal,
    Suspend,
    Resume,
    Remove,
}

/// A part's state as its peer reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PartState {
    /// Nothing heard yet.
    #[default]
    Unheard,
    /// Made and not started (held, creating, pulling).
    Waiting,
    /// Running, stopping or restarting.
    Running,
    Suspended,
    /// Ended well.
    Done,
    /// Ended otherwise (failed, cancelled, or ended while its outputs upload).
    Ended,
}

/// What a peer says of its part of a kernel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartReport {
    pub state: PartState,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The peer has no such kernel.
    NotFound(String),
    /// The peer refused the action in the part's state (a stop of a part that ended).
    Refused(String),
    /// The peer could not be reached, or did not answer in time.
    Unreachable(String),
    Failed(String),
}

impl PeerError {
    /// The error as the runtime reports it, naming the peer and the instances it holds.
    pub fn on(&self, peer: &SpanPeer) -> RuntimeError {
        let (Self::NotFound(what)
        | Self::Refused(what)
        | Self::Unreachable(what)
        | Self::Failed(what)) = self;
        let text = format!(
            "agent `{}` (instances {}…{} of the cluster): {what}",
            peer.agent_id,
            peer.first,
            peer.first + peer.count.max(1) - 1,
        );
        match self {
            Self::Unreachable(_) => RuntimeError::Unavailable(text),
            _ => RuntimeError::Failed(text),
        }
    }
}

/// The other agents of a spanning kernel, as the owner's runtime calls them.
#[async_trait]
pub trait Peers: Send + Sync {
    /// Runs `action` on the part of `kernel_id` that `peer` holds.
    async fn control(
        &self,
        peer: &SpanPeer,
        kernel_id: &str,
        action: PeerAction,
        signal: i32,
        grace: Option<Duration>,
    ) -> Result<(), PeerError>;

    /// What `peer` says of its part of `kernel_id`.
    async fn part(&self, peer: &SpanPeer, kernel_id: &str) -> Result<PartReport, PeerError>;

    /// The ids of the kernels whose state changes on `peer`, from now on.
    async fn changes(
        &self,
        peer: &SpanPeer,
    ) -> Result<BoxStream<'static, Result<String, PeerError>>, PeerError>;
}
