//! The agent's kernel event log: every lifecycle transition, numbered in order per agent
//! process, kept (bounded; the oldest are dropped and counted) until a manager has taken
//! them, and fanned out to `WatchEvents` subscribers.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::{broadcast, watch};

use crate::rpc::pb::KernelEvent;

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
    kept: VecDeque<KernelEvent>,
    dropped: u64,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_seq: 1,
                kept: VecDeque::new(),
                dropped: 0,
            }),
            live: broadcast::channel(1024).0,
            latest: watch::channel(0).0,
            capacity,
        }
    }

    /// Numbers and records `ev`.
    pub fn push(&self, mut ev: KernelEvent) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ev.seq = g.next_seq;
        g.next_seq += 1;
        if g.kept.len() == self.capacity {
            g.kept.pop_front();
            g.dropped += 1;
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
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.kept
            .iter()
            .filter(|e| e.seq > after)
            .take(max)
            .cloned()
            .collect()
    }

    /// Forgets events a manager has confirmed.
    pub fn acknowledge(&self, upto: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while g.kept.front().is_some_and(|e| e.seq <= upto) {
            g.kept.pop_front();
        }
    }

    pub fn dropped(&self) -> u64 {
        self.inner.lock().map(|g| g.dropped).unwrap_or(0)
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
        assert_eq!(log.after(0, 10).len(), 1);
    }
}
