//! Delivers kernel events to the manager the agent currently reports to, in order and in
//! batches. The manager answers with the last sequence number it holds, so after a manager
//! restart or failover only what it lacks is sent again; events wait in the bounded
//! [`EventLog`](crate::kernel::events::EventLog) while no manager answers.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::agent::convert;
use crate::kernel::Supervisor;
use crate::util::tls::TlsFiles;
use crate::wire::pb::manager_service_client::ManagerServiceClient;
use crate::wire::pb::ReportEventsRequest;
use crate::wire::{self, channel};

const BATCH: usize = 500;

/// Delays between failed deliveries: 200 ms doubling to 5 s.
fn retry_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .without_max_times()
        .build()
}

pub async fn run(
    kernels: Supervisor,
    mut manager: watch::Receiver<String>,
    agent_id: String,
    instance_id: String,
    tls: TlsFiles,
    stop: CancellationToken,
) {
    let log = kernels.events();
    let mut latest = log.latest();
    let mut acked = 0u64;
    let mut delays = retry_backoff();
    let mut failing = false;
    // One channel per manager address, reused across batches (a TLS handshake per batch
    // would be wasted); a lazy channel reconnects by itself.
    let mut client: Option<(String, ManagerServiceClient<Channel>)> = None;
    loop {
        let addr = manager.borrow_and_update().clone();
        let batch = log.unacknowledged(BATCH);
        if batch.is_empty() || addr.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = latest.changed() => if r.is_err() { return },
                r = manager.changed() => if r.is_err() { return },
            }
            continue;
        }
        let last = batch.last().map(|e| e.seq).unwrap_or(acked);
        let req = ReportEventsRequest {
            agent_id: agent_id.clone(),
            instance_id: instance_id.clone(),
            events: batch.into_iter().map(convert::event).collect(),
        };
        let reuse = client
            .as_ref()
            .filter(|(a, _)| *a == addr)
            .map(|(_, c)| c.clone());
        let current = match reuse {
            Some(c) => Ok(c),
            None => channel(&addr, Duration::from_secs(5), &tls).map(|ch| {
                let c = ManagerServiceClient::new(ch);
                client = Some((addr.clone(), c.clone()));
                c
            }),
        };
        let sent = async {
            current
                .map_err(|e| e.to_string())?
                .report_events(req)
                .await
                .map(|r| r.into_inner().last_seq)
                .map_err(|s| wire::status_text(&s))
        };
        match sent.await {
            Ok(taken) => {
                // The manager holds everything up to `taken` (≤ last); the rest is resent.
                acked = taken.min(last).max(acked);
                log.acknowledge(acked);
                if failing {
                    tracing::info!(manager = %addr, "kernel events delivered again");
                    failing = false;
                }
                delays = retry_backoff();
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(manager = %addr, error = %e, "cannot deliver kernel events; keeping them");
                    failing = true;
                }
                let wait = delays.next().unwrap_or(Duration::from_secs(5));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                    r = manager.changed() => if r.is_err() { return },
                }
            }
        }
    }
}
