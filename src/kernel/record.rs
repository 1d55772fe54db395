//! What the agent knows about one kernel: the [`Record`] kept in memory and persisted by the
//! [`registry`](super::registry) on every lifecycle change. Runtime-independent: where the
//! kernel runs is an opaque [`Handle`] its runtime wrote.
//!
//! Records written by earlier versions (before the runtime seam) carried Docker's container
//! id and process data as fields of their own; they load into a version-0 Docker handle.

use serde::{Deserialize, Serialize};

use super::state::KernelState;
use crate::runtime::{Activity, Adopted, Handle};
pub use crate::runtime::{HostPort, Launch, Slots, SSH_PROTOCOL};
use crate::spec::{ArrayRange, Spec, Template};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Who the kernel is and what it holds: what its runtime is told.
    #[serde(flatten)]
    pub launch: Launch,
    /// On array tasks: the array's range (its parallelism cap survives a restart).
    #[serde(default)]
    pub array_range: Option<ArrayRange>,
    /// SHA-256 of the whole create request (secrets included, never shown): tells an
    /// identical repeated create from a conflicting one, stable across builds.
    #[serde(default)]
    pub digest: String,
    /// The fingerprint of records written before `digest` (a hash that is not stable across
    /// Rust releases); such records are compared by their shown spec instead.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fingerprint: u64,
    pub state: KernelState,
    pub exit_code: Option<i32>,
    pub signal: String,
    pub oom_killed: bool,
    pub reason: String,
    /// What the kernel was given, kept after it ends (DRMAA2 JobInfo `slots`); records of
    /// earlier versions have none and show `slots` instead.
    #[serde(default)]
    pub granted: Option<Slots>,
    /// How many times the runtime's restart policy restarted the kernel.
    #[serde(default)]
    pub restart_count: u32,
    /// When the agent starts a RESTARTING kernel again (Unix ms; `--restart-delay`), so a
    /// restarted agent keeps the schedule; 0: no restart pending.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub restart_at_ms: i64,
    /// A profile kernel's latest progress (0-100) from its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Stopped on request (Qarnot reads such a task Cancelled however it ended).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_requested: bool,
    /// Why the agent itself stopped the kernel (a drain), read in its final reason instead
    /// of "stopped on request"; empty for a stop someone asked for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_reason: String,
    /// Records of earlier versions: Docker's container id and process data.
    #[serde(default, skip_serializing)]
    container_id: String,
    #[serde(default, skip_serializing)]
    process_data: Option<serde_json::Value>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// The runtime of records written before there was a choice.
pub const LEGACY_RUNTIME: &str = "docker";

impl std::ops::Deref for Record {
    type Target = Launch;

    fn deref(&self) -> &Launch {
        &self.launch
    }
}

impl std::ops::DerefMut for Record {
    fn deref_mut(&mut self) -> &mut Launch {
        &mut self.launch
    }
}

impl Record {
    /// A new PREPARING record; `slots` is `None` for array tasks, which get their slots when
    /// their turn comes.
    pub fn new(id: &str, shown: &Template, spec: Spec, digest: &str, runtime: &str) -> Self {
        Self {
            launch: Launch {
                id: id.to_string(),
                name: shown.name.clone(),
                slug: shown.slug.clone(),
                array_id: None,
                task_index: 0,
                shown_spec: shown.masked(),
                spec,
                runtime: runtime.to_string(),
                real_gpus: false,
                handle: None,
                created_at_ms: now_ms(),
                started_at_ms: 0,
                finished_at_ms: 0,
                slots: None,
                ports: Vec::new(),
                scratch_dir: String::new(),
            },
            array_range: None,
            digest: digest.to_string(),
            fingerprint: 0,
            state: KernelState::Preparing,
            exit_code: None,
            signal: String::new(),
            oom_killed: false,
            reason: String::new(),
            granted: None,
            restart_count: 0,
            restart_at_ms: 0,
            stop_reason: String::new(),
            progress: None,
            stop_requested: false,
            container_id: String::new(),
            process_data: None,
        }
    }

    /// The record of an instance that had none (see [`Adopted`]): a container that ran and
    /// stopped is recorded RUNNING, so the first sync reports its real end; one that never
    /// started waits HELD (nothing is started behind anyone's back).
    pub fn adopted(a: Adopted) -> Self {
        let mut rec = Self::new(
            &a.launch.id,
            &a.launch.shown_spec,
            a.launch.spec.clone(),
            "",
            &a.launch.runtime,
        );
        rec.launch = a.launch;
        rec.state = match a.activity {
            Activity::Restarting => KernelState::Restarting,
            Activity::Paused => KernelState::Suspended,
            Activity::Running | Activity::Stopped => KernelState::Running,
            Activity::Created => KernelState::Held,
        };
        rec.granted = rec.slots.clone();
        rec.restart_count = a.restart_count;
        rec.reason = "re-adopted after a restart: its instance had no record".into();
        rec
    }

    /// Brings a record read from disk to the current layout: the runtime named, the
    /// container id and process data of earlier versions inside a version-0 handle.
    pub fn upgraded(mut self) -> Self {
        if self.runtime.is_empty() {
            self.runtime = LEGACY_RUNTIME.into();
        }
        if self.handle.is_none() && !self.container_id.is_empty() {
            let data = match self.process_data.take() {
                Some(p) => serde_json::json!({ "process_data": p }),
                None => serde_json::Value::Null,
            };
            self.handle = Some(Handle {
                runtime: self.runtime.clone(),
                version: 0,
                instance: std::mem::take(&mut self.container_id),
                data,
            });
        }
        self
    }

    /// Whether a create with `digest` and shown template `shown` asks for this very kernel.
    pub fn same_request(&self, digest: &str, shown: &Template) -> bool {
        if self.digest.is_empty() {
            // Written before digests: its masked template is what can be compared.
            let mut mine = self.shown_spec.clone();
            mine.kernel_id = shown.kernel_id.clone();
            return mine == shown.masked();
        }
        self.digest == digest
    }
}

pub use crate::util::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as deckhand wrote it before the runtime seam (fields trimmed to the ones that
    /// matter): it must still load, its container inside a Docker handle.
    const LEGACY: &str = r#"{"id":"3f2b7c1e-0c4d-4e8a-9b1a-2d5e6f7a8b9c","name":"","slug":"",
        "array_id":null,"task_index":0,"shown_spec":{"kernel_id":"3f2b7c1e-0c4d-4e8a-9b1a-2d5e6f7a8b9c",
        "image":"deckhand-test/busybox:latest","secret_env":{"K":"***"},"ports":[{"container_port":80,"protocol":"tcp"}]},
        "fingerprint":1234567,"spec":{"image":"deckhand-test/busybox:latest","command":[],"env":{},
        "working_dir":"","hostname":"","user":"1000:1000","stage_in":[],"output_path":"","error_path":"",
        "ports":[{"container":80,"protocol":"tcp"}],"network_mode":"","privileged":false,"restart_policy":"no",
        "restart_retries":0,"ipc_mode":"private","uts_mode":"","pid_mode":"","auto_remove":false,"gpus":"None",
        "shm_size":null,"ulimits":[],"cpus":0.5,"memory":null,"pids_limit":null,"hold":false,
        "stop_grace_period":{"secs":10,"nanos":0}},"real_gpus":false,"state":"Running",
        "container_id":"abc123","exit_code":null,"signal":"","oom_killed":false,"reason":"",
        "created_at_ms":1,"started_at_ms":2,"finished_at_ms":0,"slots":{"cpu":0.5,"memory":0,"gpus":[]},
        "ports":[{"container":80,"host":30001,"protocol":"tcp"}],"scratch_dir":"/s/x",
        "process_data":{"Dir":"/s/processes/p1"}}"#;

    #[test]
    fn records_of_earlier_versions_load_into_a_docker_handle() {
        let rec: Record = serde_json::from_str(LEGACY).expect("a legacy record loads");
        let rec = rec.upgraded();
        assert_eq!(rec.runtime, "docker");
        let h = rec.handle.as_ref().expect("handle");
        assert_eq!(
            (h.runtime.as_str(), h.version, h.instance.as_str()),
            ("docker", 0, "abc123")
        );
        assert_eq!(h.data["process_data"]["Dir"], "/s/processes/p1");
        assert_eq!(rec.state, KernelState::Running);
        assert_eq!(rec.ports[0].host, 30001);
        assert_eq!(rec.shown_spec.secret_env["K"], "***");
        // Saved again, it is in the new layout and loads the same.
        let again: Record = serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
        assert_eq!(again.upgraded().handle, rec.handle);
    }

    #[test]
    fn a_legacy_record_is_the_same_request_when_its_shown_spec_matches() {
        let rec: Record = serde_json::from_str::<Record>(LEGACY).unwrap().upgraded();
        let mut asked = rec.shown_spec.clone();
        asked.secret_env.insert("K".into(), "anything".into());
        assert!(rec.same_request("new-digest", &asked));
        asked.image = "other".into();
        assert!(!rec.same_request("new-digest", &asked));
    }
}
