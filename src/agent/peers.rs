//! The agent's side of [`Peers`]: the other agents of a spanning cluster kernel, called over
//! their own `AgentService` (one lazily connecting channel per peer address, kept: every
//! event of a part asks).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use parking_lot::Mutex;
use tonic::transport::Channel;

use crate::runtime::peers::{PartReport, PartState, PeerAction, PeerError, Peers};
use crate::spec::SpanPeer;
use crate::util::tls::TlsFiles;
use crate::wire::pb::{self, agent_service_client::AgentServiceClient, KernelAction};

/// How long one call to a peer may take (a stop waits out the kernel's grace period).
const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// Peers reached over gRPC with the agent's own TLS files.
pub struct GrpcPeers {
    tls: TlsFiles,
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcPeers {
    pub fn new(tls: TlsFiles) -> Self {
        Self {
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, peer: &SpanPeer) -> Result<AgentServiceClient<Channel>, PeerError> {
        let mut channels = self.channels.lock();
        let ch = match channels.get(&peer.address) {
            Some(ch) => ch.clone(),
            None => {
                let ch = crate::wire::channel(&peer.address, PEER_TIMEOUT, &self.tls)
                    .map_err(|e| PeerError::Unreachable(e.to_string()))?;
                channels.insert(peer.address.clone(), ch.clone());
                ch
            }
        };
        Ok(AgentServiceClient::new(ch))
    }
}

/// A peer's refusal as the runtime reads it.
fn peer_error(s: &tonic::Status) -> PeerError {
    let m = s.message().to_string();
    match s.code() {
        tonic::Code::NotFound => PeerError::NotFound(m),
        tonic::Code::FailedPrecondition => PeerError::Refused(m),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            PeerError::Unreachable(m)
        }
        _ => PeerError::Failed(m),
    }
}

fn action(a: PeerAction) -> KernelAction {
    match a {
        PeerAction::Release => KernelAction::Release,
        PeerAction::Stop => KernelAction::Stop,
        PeerAction::Signal => KernelAction::Signal,
        PeerAction::Suspend => KernelAction::Suspend,
        PeerAction::Resume => KernelAction::Resume,
        PeerAction::Remove => KernelAction::Remove,
    }
}

/// A kernel state on the wire as a part's state.
fn part_state(state: i32) -> PartState {
    use pb::KernelState as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Unspecified => PartState::Unheard,
        S::Running | S::Terminating | S::Restarting => PartState::Running,
        S::Suspended => PartState::Suspended,
        S::Done => PartState::Done,
        S::Failed | S::Cancelled | S::Uploading => PartState::Ended,
        _ => PartState::Waiting,
    }
}

#[async_trait]
impl Peers for GrpcPeers {
    async fn control(
        &self,
        peer: &SpanPeer,
        kernel_id: &str,
        a: PeerAction,
        signal: i32,
        grace: Option<Duration>,
    ) -> Result<(), PeerError> {
        let req = pb::ControlKernelRequest {
            kernel_id: kernel_id.to_string(),
            action: action(a) as i32,
            signal,
            grace_ms: grace.map_or(0, |g| g.as_millis().max(1) as u64),
            force: true,
        };
        self.client(peer)?
            .control_kernel(req)
            .await
            .map(|_| ())
            .map_err(|s| peer_error(&s))
    }

    async fn part(&self, peer: &SpanPeer, kernel_id: &str) -> Result<PartReport, PeerError> {
        let k = self
            .client(peer)?
            .get_kernel(pb::KernelRef {
                kernel_id: kernel_id.to_string(),
            })
            .await
            .map_err(|s| peer_error(&s))?
            .into_inner();
        Ok(PartReport {
            state: part_state(k.state),
            exit_code: k.exit_code,
            reason: k.reason,
            started_at_ms: k.started_at_ms,
            finished_at_ms: k.finished_at_ms,
        })
    }

    async fn changes(
        &self,
        peer: &SpanPeer,
    ) -> Result<BoxStream<'static, Result<String, PeerError>>, PeerError> {
        let events = self
            .client(peer)?
            .watch_events(pb::WatchEventsRequest { after_seq: 0 })
            .await
            .map_err(|s| peer_error(&s))?
            .into_inner();
        // Events without a state (pull progress) change no part.
        Ok(events
            .filter_map(|ev| async move {
                match ev {
                    Ok(ev) if ev.state == 0 => None,
                    Ok(ev) => Some(Ok(ev.kernel_id)),
                    Err(s) => Some(Err(peer_error(&s))),
                }
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_states_read_as_part_states() {
        use pb::KernelState as S;
        let cases = [
            (S::Unspecified, PartState::Unheard),
            (S::Held, PartState::Waiting),
            (S::Creating, PartState::Waiting),
            (S::Running, PartState::Running),
            (S::Terminating, PartState::Running),
            (S::Restarting, PartState::Running),
            (S::Suspended, PartState::Suspended),
            (S::Done, PartState::Done),
            (S::Failed, PartState::Ended),
            (S::Cancelled, PartState::Ended),
            (S::Uploading, PartState::Ended),
        ];
        for (wire, part) in cases {
            assert_eq!(part_state(wire as i32), part, "{wire:?}");
        }
    }
}
