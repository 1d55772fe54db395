//! The agent's own cordon and drain, followed from its etcd key `nodes/agents/<id>/drain`
//! (a watch, through the session's mirror; see [`crate::cluster::drain`]). While the key
//! is there the supervisor refuses new kernels. A drain tells each live kernel when it
//! will be stopped and, at the deadline, stops the kernels still live (each with its grace
//! period) with a reason naming the drain. The agent carries the deadline out itself, so it
//! holds while no manager runs; an agent that was down at the deadline stops them as soon as
//! it has reconciled its kernels after starting again. Uncordon (the key deleted) ends both.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::drain::{rfc3339, DrainMode, NodeDrain};
use crate::cluster::Mirror;
use crate::kernel::supervisor::Supervisor;
use crate::util::now_ms;

pub async fn run(
    kernels: Supervisor,
    mut mirror: watch::Receiver<Mirror>,
    agent_id: String,
    stop: CancellationToken,
) {
    let agent_id: Arc<str> = agent_id.into();
    // The drain (by its start) whose deadline was carried out, and whose start was told.
    let mut stopped_for: Option<i64> = None;
    let mut told: Option<(i64, i64)> = None;
    let mut synced = kernels.synced();
    loop {
        let m = mirror.borrow_and_update().clone();
        // Until the first load the agent does not know; it keeps what it had (nothing at start).
        let drain = if m.loaded {
            let d = m.kvs.get("").and_then(|v| {
                let d = NodeDrain::parse(v);
                if d.is_none() {
                    tracing::warn!(
                        "unreadable cordon/drain record in etcd; taking kernels as if uncordoned"
                    );
                }
                d
            });
            kernels.set_cordon(d.as_ref().map(|d| d.refusal(&agent_id)));
            d
        } else {
            None
        };
        let deadline = drain
            .as_ref()
            .filter(|d| d.mode == DrainMode::Drain)
            .map(|d| (d.since_ms, d.deadline_ms));
        if deadline.is_none() {
            stopped_for = None;
            told = None;
        }
        // Kernels of an earlier run are stopped only once they are reconciled.
        let ready = *synced.borrow_and_update() > 0;
        if let (Some((since, at)), true) = (deadline, ready) {
            if told != Some((since, at)) && stopped_for != Some(since) {
                told = Some((since, at));
                kernels.note_all(&format!(
                    "node `{agent_id}` is draining: the kernel is stopped at {} unless it ends first",
                    rfc3339(at)
                ));
            }
        }
        let due = deadline
            .filter(|(since, _)| ready && stopped_for != Some(*since))
            .map(|(_, at)| at);
        let wait = async {
            match due {
                Some(at) => {
                    let ms = (at - now_ms()).max(0) as u64;
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            r = mirror.changed() => if r.is_err() { return },
            r = synced.changed(), if !ready => if r.is_err() { return },
            _ = wait => {
                if let Some((since, at)) = deadline {
                    stopped_for = Some(since);
                    let reason = format!(
                        "stopped: node `{agent_id}` drained (deadline {} passed)",
                        rfc3339(at)
                    );
                    tracing::info!(kernels = kernels.live_ids().len(), "drain deadline passed; stopping the kernels still live");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = kernels.stop_all_because(&reason) => {}
                    }
                }
            }
        }
    }
}
