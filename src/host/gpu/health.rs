//! GPU health from NVML's critical events, as NVIDIA's Kubernetes device plugin reads them:
//! a critical XID error (except the application-caused ones, [`IGNORED_XIDS`]), a
//! double-bit ECC error, or a GPU fallen off the bus (XID 79) marks the GPU unhealthy with
//! the reason and the time. An unhealthy GPU is no schedulable slot (see
//! `crate::agent::status::capacity`), is shown in heartbeats, `nodes` and metrics, and stays
//! so — across agent restarts, the marks are kept in `<scratch root>/.deckhand/gpu-health.json`
//! (NVML does not replay events) — until an operator clears it (`deckhand gpu reset-health`).
//!
//! [`watch_events`] is the one blocking thread that waits on NVML's event set
//! (`nvmlEventSetWait_v2`, half a second at a time so it sees the stop flag); it is owned by
//! the agent and stopped on shutdown. No polling of device state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::host::GpuInventory;

/// XIDs caused by applications, not by the GPU (the device plugin's list): ignored.
pub const IGNORED_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// Why and since when a GPU is unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unhealthy {
    pub reason: String,
    pub since_ms: i64,
}

/// A GPU newly marked unhealthy, for the supervisor (the kernel holding it is told).
#[derive(Debug, Clone)]
pub struct Marked {
    pub uuid: String,
    pub reason: String,
}

/// The unhealthy GPUs of this host, by UUID; cheap to clone.
#[derive(Clone)]
pub struct GpuHealth(Arc<Inner>);

struct Inner {
    marks: Mutex<BTreeMap<String, Unhealthy>>,
    path: Option<PathBuf>,
    changed: watch::Sender<u64>,
}

impl GpuHealth {
    /// The marks kept at `path` (none when it is missing or unreadable).
    pub fn open(path: Option<PathBuf>) -> Self {
        let marks = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self(Arc::new(Inner {
            marks: Mutex::new(marks),
            path,
            changed: watch::channel(0).0,
        }))
    }

    /// Where the agent keeps its marks under its scratch root.
    pub fn file_in(scratch_root: &Path) -> PathBuf {
        scratch_root.join(".deckhand").join("gpu-health.json")
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, BTreeMap<String, Unhealthy>> {
        self.0.marks.lock()
    }

    /// Marks `uuid` unhealthy; false when it already was (the first reason stays).
    pub fn mark(&self, uuid: &str, reason: &str) -> bool {
        {
            let mut m = self.lock();
            if m.contains_key(uuid) {
                return false;
            }
            m.insert(
                uuid.to_string(),
                Unhealthy {
                    reason: reason.to_string(),
                    since_ms: crate::util::now_ms(),
                },
            );
        }
        self.changed();
        true
    }

    /// Clears `uuid`; false when it was not unhealthy.
    pub fn reset(&self, uuid: &str) -> bool {
        let was = self.lock().remove(uuid).is_some();
        if was {
            self.changed();
        }
        was
    }

    pub fn marks(&self) -> BTreeMap<String, Unhealthy> {
        self.lock().clone()
    }

    /// Bumped on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.changed.subscribe()
    }

    /// Sets the health fields of `inv`'s devices.
    pub fn apply(&self, inv: &mut GpuInventory) {
        let m = self.lock();
        for d in &mut inv.devices {
            if let Some(u) = m.get(&d.uuid) {
                d.unhealthy = true;
                d.health_reason = u.reason.clone();
                d.unhealthy_since_ms = u.since_ms;
            }
        }
    }

    fn changed(&self) {
        if let Some(path) = &self.0.path {
            let json = serde_json::to_vec_pretty(&*self.lock()).unwrap_or_default();
            let tmp = path.with_extension("json.tmp");
            let saved = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&tmp, json))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = saved {
                tracing::error!(path = %path.display(), error = %e, "cannot keep the GPU health marks");
            }
        }
        self.0.changed.send_modify(|n| *n += 1);
    }
}

/// Why an event makes its GPU unhealthy; `None` for one that does not (an application's
/// XID, a single-bit ECC error).
pub fn classify(event: EventTypes, xid: Option<&XidError>) -> Option<String> {
    if event.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
        return Some("double-bit ECC error".into());
    }
    if event.contains(EventTypes::CRITICAL_XID_ERROR) {
        return match xid {
            Some(XidError::Value(x)) if IGNORED_XIDS.contains(x) => None,
            Some(XidError::Value(79)) => Some("XID 79 (fallen off the bus)".into()),
            Some(XidError::Value(x)) => Some(format!("XID {x} (critical)")),
            _ => Some("XID unknown (critical)".into()),
        };
    }
    None
}

/// The blocking event loop (see the module doc): registers every device for the critical
/// events it supports and marks the GPUs they hit until `stop` is set. Returns at once when
/// NVML cannot be loaded (no GPUs to watch).
pub fn watch_events(
    library: Option<PathBuf>,
    health: GpuHealth,
    marked: mpsc::Sender<Marked>,
    stop: Arc<AtomicBool>,
) {
    let nvml = match super::nvml::load(library.as_deref()) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!("no GPU health events: {e}");
            return;
        }
    };
    let mut set = match nvml.create_event_set() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("GPU health events unavailable: cannot create an NVML event set: {e}");
            return;
        }
    };
    let wanted = EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR;
    let count = nvml.device_count().unwrap_or(0);
    let mut watched = 0;
    for i in 0..count {
        let Ok(dev) = nvml.device_by_index(i) else {
            continue;
        };
        let types = dev.supported_event_types().unwrap_or(EventTypes::empty()) & wanted;
        if types.is_empty() {
            continue;
        }
        match dev.register_events(types, set) {
            Ok(s) => {
                set = s;
                watched += 1;
            }
            Err(e) => {
                tracing::warn!(index = i, error = %e.error, "GPU health events unavailable for this GPU");
                // The set is gone with the failed registration: start over without it.
                match nvml.create_event_set() {
                    Ok(s) => set = s,
                    Err(_) => return,
                }
            }
        }
    }
    tracing::info!(
        gpus = watched,
        "watching NVML critical events for GPU health"
    );
    while !stop.load(Ordering::Relaxed) {
        match set.wait(500) {
            Ok(ev) => {
                let Some(reason) = classify(ev.event_type, ev.event_data.as_ref()) else {
                    tracing::info!(event = ?ev.event_type, xid = ?ev.event_data, "NVML event ignored (application-caused)");
                    continue;
                };
                let uuid = match ev.device.uuid() {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::warn!(error = %e, "NVML event for a GPU whose UUID cannot be read");
                        continue;
                    }
                };
                if health.mark(&uuid, &reason) {
                    tracing::warn!(gpu = %uuid, %reason, "GPU marked unhealthy");
                    let _ = marked.blocking_send(Marked { uuid, reason });
                }
            }
            Err(NvmlError::Timeout) => {}
            // As the device plugin does: a GPU that is lost while waiting cannot be named,
            // so every GPU watched is marked; a pause keeps a lost driver from spinning.
            Err(NvmlError::GpuLost) => {
                for i in 0..count {
                    let Ok(uuid) = nvml.device_by_index(i).and_then(|d| d.uuid()) else {
                        continue;
                    };
                    let reason = "fallen off the bus (NVML: GPU is lost)";
                    if health.mark(&uuid, reason) {
                        tracing::warn!(gpu = %uuid, %reason, "GPU marked unhealthy");
                        let _ = marked.blocking_send(Marked {
                            uuid,
                            reason: reason.into(),
                        });
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => {
                tracing::warn!(error = %e, "waiting for NVML events failed; GPU health events stop");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_xids_are_ignored_and_the_others_mark_the_gpu() {
        let xid = EventTypes::CRITICAL_XID_ERROR;
        for x in IGNORED_XIDS {
            assert_eq!(classify(xid, Some(&XidError::Value(x))), None, "XID {x}");
        }
        assert_eq!(
            classify(xid, Some(&XidError::Value(79))).as_deref(),
            Some("XID 79 (fallen off the bus)")
        );
        assert_eq!(
            classify(xid, Some(&XidError::Value(48))).as_deref(),
            Some("XID 48 (critical)")
        );
        assert_eq!(
            classify(EventTypes::DOUBLE_BIT_ECC_ERROR, None).as_deref(),
            Some("double-bit ECC error")
        );
        assert_eq!(classify(EventTypes::SINGLE_BIT_ECC_ERROR, None), None);
    }

    #[test]
    fn marks_are_kept_across_a_restart_and_cleared_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = GpuHealth::file_in(dir.path());
        let h = GpuHealth::open(Some(path.clone()));
        assert!(h.mark("GPU-1", "XID 48 (critical)"));
        assert!(
            !h.mark("GPU-1", "double-bit ECC error"),
            "the first reason stays"
        );
        let again = GpuHealth::open(Some(path));
        assert_eq!(again.marks()["GPU-1"].reason, "XID 48 (critical)");
        assert!(again.reset("GPU-1"));
        assert!(!again.reset("GPU-1"));
    }
}
