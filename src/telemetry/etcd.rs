//! The etcd session's connection state, counted by [`crate::cluster::Session`] in both
//! daemons.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub struct EtcdMetrics {
    /// 1 while the session is up (registered, watching), 0 otherwise.
    pub connected: Gauge,
    /// Sessions that came back after etcd was lost or unreachable.
    pub reconnects: Counter,
}

static ETCD: LazyLock<EtcdMetrics> = LazyLock::new(|| EtcdMetrics {
    connected: Gauge::default(),
    reconnects: Counter::default(),
});

/// The process's etcd metrics.
pub fn etcd() -> &'static EtcdMetrics {
    &ETCD
}

/// Adds the etcd families to `r`.
pub fn register(r: &mut Registry) {
    let m = etcd();
    r.register(
        "deckhand_etcd_connected",
        "1 while the etcd session is up (registered and watching), 0 while etcd is lost or unreachable",
        m.connected.clone(),
    );
    r.register(
        "deckhand_etcd_reconnects",
        "etcd sessions re-established after etcd was lost or unreachable",
        m.reconnects.clone(),
    );
}
