//! Turns the two watched config layers (global, per agent) into the [`ClusterConfig`] the
//! agent runs with, republished on every change; malformed values are logged once and the
//! last good value stays in force ([`LiveConfig`]).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::Mirror;
use crate::config::live::Layer;
use crate::config::{ClusterConfig, LiveConfig};

/// A watched layer: its etcd prefix (for messages) and its mirror.
pub struct Source {
    pub etcd_prefix: String,
    pub mirror: watch::Receiver<Mirror>,
}

/// Publishes a new config whenever either layer changes, once both have loaded.
pub async fn run(
    mut global: Source,
    mut local: Source,
    out: watch::Sender<Arc<ClusterConfig>>,
    loaded: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut live = LiveConfig::new();
    loop {
        let ready = global.mirror.borrow().loaded && local.mirror.borrow().loaded;
        if ready {
            let layers = [layer(&mut global), layer(&mut local)];
            let (cfg, messages) = live.apply(&layers);
            crate::telemetry::counters::agent()
                .config_rejected
                .inc_by(messages.len() as u64);
            for m in messages {
                tracing::warn!("config: {m}");
            }
            out.send_if_modified(|cur| {
                let changed = **cur != cfg;
                if changed {
                    crate::telemetry::counters::agent().config_reloads.inc();
                    tracing::info!(
                        heartbeat_interval = ?cfg.heartbeat_interval,
                        fake_gpus = cfg.fake_gpus.len(),
                        region = %cfg.region,
                        scaling_group = %cfg.scaling_group,
                        "config applied"
                    );
                    *cur = Arc::new(cfg);
                }
                changed
            });
            loaded.send_if_modified(|l| !std::mem::replace(l, true));
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = global.mirror.changed() => if r.is_err() { return },
            r = local.mirror.changed() => if r.is_err() { return },
        }
    }
}

fn layer(src: &mut Source) -> Layer {
    Layer {
        etcd_prefix: src.etcd_prefix.clone(),
        values: src.mirror.borrow_and_update().kvs.clone(),
    }
}
