//! Start-up recovery: after a restart (even `kill -9`), bring the kernel table, the
//! containers of this namespace and agent id, and the scratch root back into one consistent
//! picture before serving events:
//!
//! - a kernel whose creation was interrupted (PREPARING, PULLING, CREATING) is created again
//!   (or adopted, if its container already runs); queued array tasks wait their turn again;
//! - a kernel caught TERMINATING is stopped again (by the first resync that follows);
//! - a container of ours with no record is re-adopted from its labels, its `kernel.json`
//!   and what the engine says about its resources, so its slots, GPUs and ports are counted;
//! - a kernel whose scratch dir vanished gets an empty one again (reported); a scratch dir
//!   or process dir nobody owns is removed (reported).
//!
//! Nothing outside this namespace and agent id is looked at. Problems are logged, never a
//! reason to fail start-up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use bollard::models::ContainerInspectResponse;

use super::*;
use crate::kernel::container::{LABEL_ARRAY, LABEL_SCRATCH};

/// What recovery did, for the log line and the tests.
#[derive(Debug, Default)]
pub struct Recovered {
    pub relaunched: Vec<String>,
    pub adopted: Vec<String>,
    pub scratch_recreated: Vec<String>,
    pub orphan_dirs_removed: Vec<String>,
}

impl Kernels {
    /// Rebuilds the array queues from the reloaded records (before anything launches).
    pub(super) fn rebuild_arrays(&self) {
        let mut t = self.lock();
        let mut arrays: BTreeMap<String, ArrayRun> = BTreeMap::new();
        let mut queued: Vec<(String, u32, String)> = Vec::new();
        for e in t.kernels.values() {
            let (Some(array), Some(range)) = (&e.rec.array_id, e.rec.array_range) else {
                continue;
            };
            arrays.entry(array.clone()).or_insert_with(|| ArrayRun {
                fingerprint: e.rec.fingerprint,
                range,
                pending: VecDeque::new(),
            });
            if e.rec.state == KernelState::Preparing && e.rec.slots.is_none() {
                queued.push((array.clone(), e.rec.task_index, e.rec.id.clone()));
            }
        }
        queued.sort();
        for (array, _, id) in queued {
            if let Some(run) = arrays.get_mut(&array) {
                run.pending.push_back(id.clone());
            }
            if let Some(e) = t.kernels.get_mut(&id) {
                e.launched = false;
            }
        }
        t.arrays = arrays;
    }

    /// Reconciles records, containers and the scratch root; see the module docs.
    pub(super) async fn recover(&self) -> Result<Recovered, EngineError> {
        let mut out = Recovered::default();
        let containers: HashMap<String, String> = self
            .0
            .docker
            .list_labelled(&self.0.namespace, &self.0.agent_id)
            .await?
            .into_iter()
            .map(|(cid, kid)| (kid, cid))
            .collect();
        let records: Vec<Record> = self
            .lock()
            .kernels
            .values()
            .map(|e| e.rec.clone())
            .collect();
        let cfg = self.config();
        for rec in &records {
            let container = containers.get(&rec.id);
            match rec.state {
                KernelState::Preparing | KernelState::Pulling | KernelState::Creating
                    if rec.slots.is_some() =>
                {
                    if let Some(cid) = container {
                        let st = self.0.docker.inspect(cid).await.unwrap_or_default();
                        if st.exists && st.started_at_ms > 0 && rec.state == KernelState::Creating {
                            // Started just before the crash: it runs (or ran) — never run it
                            // twice; the first resync reports an exit.
                            let mut t = self.lock();
                            let started = st.started_at_ms;
                            let cid = cid.clone();
                            let _ = self.transition(&mut t, &rec.id, Transition::Started, |r| {
                                r.container_id = cid;
                                r.started_at_ms = started;
                            });
                            continue;
                        }
                        // A half-made container; if this fails, the relaunch's name-conflict
                        // path removes it.
                        if let Err(e) = self.0.docker.remove(cid, true).await {
                            tracing::warn!(kernel_id = %rec.id, error = %e, "cannot remove a half-made container before relaunching");
                        }
                    }
                    if self.restart_creation(&rec.id, rec.state) {
                        out.relaunched.push(rec.id.clone());
                    }
                }
                KernelState::Held if container.is_none() => {
                    let relaunched = self.restart_creation(&rec.id, rec.state);
                    out.relaunched.extend(relaunched.then(|| rec.id.clone()));
                }
                _ => {}
            }
            if !rec.state.is_final()
                && !std::path::Path::new(&rec.scratch_dir).exists()
                && rec.state != KernelState::Preparing
            {
                let files = config_files(rec, &self.0.agent_id);
                let files: Vec<(&str, String)> =
                    files.iter().map(|(n, c)| (*n, c.clone())).collect();
                match self
                    .0
                    .scratch
                    .prepare(&rec.id, cfg.kernel.uid, cfg.kernel.gid, &files)
                {
                    Ok(_) => {
                        self.note(
                            &rec.id,
                            "the scratch dir was gone after a restart; an empty one was made"
                                .into(),
                            None,
                        );
                        out.scratch_recreated.push(rec.id.clone());
                    }
                    Err(e) => {
                        tracing::warn!(kernel_id = %rec.id, error = %e, "cannot recreate a missing scratch dir")
                    }
                }
            }
        }
        let known: BTreeSet<String> = records.iter().map(|r| r.id.clone()).collect();
        for (kid, cid) in &containers {
            if known.contains(kid) {
                continue;
            }
            match self.adopt(kid, cid, &cfg).await {
                Ok(()) => out.adopted.push(kid.clone()),
                Err(e) => {
                    tracing::warn!(kernel_id = %kid, container = %cid, error = %e, "cannot re-adopt a container without a record; left as it is")
                }
            }
        }
        out.orphan_dirs_removed = self.remove_orphan_dirs(&cfg);
        self.pump_all();
        Ok(out)
    }

    /// Puts a kernel whose creation was interrupted back to PREPARING and creates it again —
    /// unless something (a stop or removal arriving meanwhile) changed it since recovery
    /// looked. Returns whether it was relaunched.
    fn restart_creation(&self, id: &str, was: KernelState) -> bool {
        {
            let mut t = self.lock();
            let Some(e) = t.kernels.get_mut(id) else {
                return false;
            };
            if e.rec.state != was {
                return false;
            }
            e.rec.state = KernelState::Preparing;
            e.rec.container_id.clear();
            e.rec.reason =
                format!("the agent restarted while the kernel was {was}; creating it again");
            e.launched = true;
            e.state.send_replace(KernelState::Preparing);
            self.persist(&e.rec);
            self.emit(&e.rec);
        }
        let me = self.clone();
        let id = id.to_string();
        self.spawn(async move { me.launch(id).await });
        true
    }

    /// Takes in a container of ours that has no record (lost with a crash between creating
    /// it and writing the record, or a deleted record file).
    async fn adopt(&self, kid: &str, cid: &str, cfg: &ClusterConfig) -> Result<(), String> {
        let info: ContainerInspectResponse = self
            .0
            .docker
            .api()
            .inspect_container(cid, None)
            .await
            .map_err(|e| EngineError::from(e).to_string())?;
        let config = info.config.clone().unwrap_or_default();
        let host = info.host_config.clone().unwrap_or_default();
        let state = info.state.clone().unwrap_or_default();
        let labels = config.labels.clone().unwrap_or_default();
        let scratch_dir = labels
            .get(LABEL_SCRATCH)
            .cloned()
            .unwrap_or_else(|| self.0.scratch.root().join(kid).display().to_string());
        let array_id = labels.get(LABEL_ARRAY).cloned();
        let base_id = kid.split('.').next().unwrap_or(kid).to_string();
        let task_index = kid
            .split_once('.')
            .and_then(|(_, i)| i.parse().ok())
            .unwrap_or(0);
        // The spec as it was shown (kernel.json), else what the container itself says.
        let shown: pb::KernelSpec =
            std::fs::read(PathBuf::from(&scratch_dir).join("config/kernel.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_else(|| pb::KernelSpec {
                    kernel_id: base_id.clone(),
                    image: config.image.clone().unwrap_or_default(),
                    command: config.cmd.clone().unwrap_or_default(),
                    ..Default::default()
                });
        let mut for_validation = shown.clone();
        for_validation.kernel_id = base_id.clone();
        let spec = spec::validate(&for_validation, &cfg.kernel)
            .or_else(|_| {
                spec::validate(
                    &pb::KernelSpec {
                        kernel_id: base_id.clone(),
                        image: shown.image.clone(),
                        ..Default::default()
                    },
                    &cfg.kernel,
                )
            })
            .map_err(|e| format!("{}: {}", e.field, e.reason))?;
        let env = config.env.clone().unwrap_or_default();
        let gpus: Vec<String> = env
            .iter()
            .find_map(|e| e.strip_prefix("NVIDIA_VISIBLE_DEVICES="))
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let slots = Slots {
            cpu: host.nano_cpus.unwrap_or(0) as f64 / 1e9,
            memory: host.memory.unwrap_or(0).max(0) as u64,
            gpus,
        };
        let mut ports = Vec::new();
        for (key, bindings) in host.port_bindings.clone().unwrap_or_default() {
            let (port, protocol) = key.split_once('/').unwrap_or((&key, "tcp"));
            let Ok(container) = port.parse() else {
                continue;
            };
            for b in bindings.unwrap_or_default() {
                if let Some(h) = b.host_port.and_then(|p| p.parse().ok()) {
                    ports.push(HostPort {
                        container,
                        host: h,
                        protocol: protocol.to_string(),
                        host_ip: b.host_ip.unwrap_or_default(),
                    });
                }
            }
        }
        let running = state.running.unwrap_or(false);
        let paused = state.paused.unwrap_or(false);
        let restarting = state.restarting.unwrap_or(false);
        let started = state
            .started_at
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.timestamp_millis())
            .filter(|ms| *ms > 0)
            .unwrap_or(0);
        // A container that ran and stopped is recorded RUNNING: the first sync reports its
        // real end. One that never started waits HELD (nothing is started behind anyone).
        let rec_state = match (running, paused, started > 0) {
            _ if restarting => KernelState::Restarting,
            (true, true, _) => KernelState::Suspended,
            (true, false, _) | (false, _, true) => KernelState::Running,
            (false, _, false) => KernelState::Held,
        };
        let rec = Record {
            id: kid.to_string(),
            name: shown.name.clone(),
            slug: shown.slug.clone(),
            array_id,
            task_index,
            array_range: None,
            shown_spec: masked(&shown),
            fingerprint: 0,
            real_gpus: host.device_requests.as_ref().is_some_and(|d| !d.is_empty()),
            spec,
            state: rec_state,
            container_id: cid.to_string(),
            exit_code: None,
            signal: String::new(),
            oom_killed: false,
            reason: "re-adopted after a restart: its container had no record".into(),
            created_at_ms: info
                .created
                .as_deref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.timestamp_millis())
                .unwrap_or_else(now_ms),
            started_at_ms: started,
            finished_at_ms: 0,
            granted: Some(slots.clone()),
            slots: Some(slots),
            restart_count: info.restart_count.unwrap_or(0).max(0) as u32,
            ports,
            scratch_dir,
            process_data: None,
        };
        tracing::warn!(kernel_id = %kid, container = %cid, state = %rec_state, "re-adopted a container that had no record");
        let mut t = self.lock();
        self.insert(&mut t, rec, true);
        Ok(())
    }

    /// Scratch dirs named like kernels and process dirs that no record owns.
    fn remove_orphan_dirs(&self, cfg: &ClusterConfig) -> Vec<String> {
        let (owned, processes): (BTreeSet<String>, BTreeSet<String>) = {
            let t = self.lock();
            (
                t.kernels.keys().cloned().collect(),
                t.kernels
                    .values()
                    .map(|e| e.rec.spec.process_id.clone())
                    .filter(|p| !p.is_empty())
                    .collect(),
            )
        };
        let mut removed = Vec::new();
        let root = self.0.scratch.root().to_path_buf();
        let entries = std::fs::read_dir(&root).into_iter().flatten().flatten();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().to_string();
            if spec::validate_kernel_id(&name).is_err() || owned.contains(&name) {
                continue;
            }
            if cfg.kernel.keep_scratch {
                tracing::info!(dir = %entry.path().display(), "scratch dir without a kernel kept (container/keep_scratch)");
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::warn!(dir = %entry.path().display(), "removed a scratch dir that no kernel owns");
                    removed.push(entry.path().display().to_string());
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove an orphan scratch dir")
                }
            }
        }
        let dirs = std::fs::read_dir(root.join("processes"))
            .into_iter()
            .flatten()
            .flatten();
        for entry in dirs {
            let path = entry.path().display().to_string();
            if processes.contains(entry.file_name().to_string_lossy().as_ref()) {
                continue;
            }
            if std::fs::remove_dir_all(entry.path()).is_ok() {
                tracing::warn!(dir = %path, "removed a process data dir that no kernel uses");
                removed.push(path);
            }
        }
        removed
    }
}
