//! The agent's kernel event log: every lifecycle transition, numbered in order per agent
//! process, kept (bounded; the oldest are dropped and counted) until a manager has taken
//! them, and fanned out to `WatchEvents` subscribers.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

use super::state::KernelState;
use crate::runtime::PullProgress;

/// One lifecycle transition (or a note about a kernel: a pull's progress, a fallback).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelEvent {
    /// Numbered by the log, from 1, per agent process.
    pub seq: u64,
    pub kernel_id: String,
    pub state: KernelState,
    pub reason: String,
    pub at_ms: i64,
    pub exit_code: Option<i32>,
    pub agent_id: String,
    pub pull: Option<PullProgress>,
    /// A profile kernel's progress (0-100).
    pub progress: Option<f64>,
    /// An event of a peer's part of a spanning cluster kernel.
    pub part: bool,
}

impl Default for KernelEvent {
    fn default() -> Self {
        Self {
            seq: 0,
            kernel_id: String::new(),
            state: KernelState::Preparing,
            reason: String::new(),
            at_ms: 0,
            exit_code: None,
            agent_id: String::new(),
            pull: None,
            progress: None,
            part: false,
        }
    }
}

/// Events kept for a manager that is away.
pub const DEFAULT_CAPACITY: usize = 10_000;

pub struct EventLog {
    inner: Mutex<Inner>,
    live: broadcast::Sender<KernelEvent>,
    latest: watch::Sender<u64>,
    capacity: usize,
}

struct Inner {
    next_seq: u64,
    /// The last `capacity` events, delivered or not (watchers replay from here).
    kept: VecDeque<KernelEvent>,
    /// Highest sequence number a manager confirmed.
    acked: u64,
    /// Events pushed out before any manager took them.
    dropped: u64,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_seq: 1,
                kept: VecDeque::new(),
                acked: 0,
                dropped: 0,
            }),
            live: broadcast::channel(1024).0,
            latest: watch::channel(0).0,
            capacity,
        }
    }

    /// Numbers and records `ev`.
    pub fn push(&self, mut ev: KernelEvent) {
        let mut g = self.inner.lock();
        ev.seq = g.next_seq;
        g.next_seq += 1;
        if g.kept.len() == self.capacity {
            if let Some(old) = g.kept.pop_front() {
                if old.seq > g.acked {
                    g.dropped += 1;
                }
            }
        }
        g.kept.push_back(ev.clone());
        let seq = ev.seq;
        // Sent under the lock so subscribers see events in sequence order.
        let _ = self.live.send(ev);
        drop(g);
        self.latest.send_replace(seq);
    }

    /// Kept events with `seq > after`, at most `max`.
    pub fn after(&self, after: u64, max: usize) -> Vec<KernelEvent> {
        let g = self.inner.lock();
        g.kept
            .iter()
            .filter(|e| e.seq > after)
            .take(max)
            .cloned()
            .collect()
    }

    /// Records that a manager holds every event up to `upto`.
    pub fn acknowledge(&self, upto: u64) {
        let mut g = self.inner.lock();
        g.acked = g.acked.max(upto);
    }

    /// Kept events a manager has not confirmed yet, at most `max`.
    pub fn unacknowledged(&self, max: usize) -> Vec<KernelEvent> {
        let acked = self.inner.lock().acked;
        self.after(acked, max)
    }

    /// Waits until a manager confirmed every event pushed so far (checked every 50 ms; the
    /// caller bounds the wait).
    pub async fn delivered(&self) {
        loop {
            let done = {
                let g = self.inner.lock();
                g.acked + 1 >= g.next_seq
            };
            if done {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Events kept that no manager has confirmed yet.
    pub fn backlog(&self) -> usize {
        let g = self.inner.lock();
        let unconfirmed = (g.next_seq - 1).saturating_sub(g.acked) as usize;
        unconfirmed.min(g.kept.len())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }

    pub fn subscribe(&self) -> broadcast::Receiver<KernelEvent> {
        self.live.subscribe()
    }

    pub fn latest(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_in_order_and_the_oldest_dropped_when_full() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.push(KernelEvent {
                kernel_id: format!("k{i}"),
                ..Default::default()
            });
        }
        let kept = log.after(0, 10);
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(log.dropped(), 2);
        log.acknowledge(4);
        assert_eq!(log.unacknowledged(10).len(), 1);
        assert_eq!(log.backlog(), 1);
        assert_eq!(
            log.after(0, 10).len(),
            3,
            "watchers still replay delivered events"
        );
        for _ in 0..2 {
            log.push(KernelEvent::default());
        }
        assert_eq!(
            log.dropped(),
            2,
            "delivered events leave without counting as lost"
        );
    }
}
