//! What a kernel must be to run on a Vast.ai instance, checked before any call to the API:
//! the fields the runtime cannot honour (refused naming them), one GPU at most, and the
//! input limits the service enforces (docs: env values at most 256 bytes each, `args` and
//! `onstart` together at most 4,096 bytes, `label` at most 256 bytes, `disk` at least 8 GB;
//! the docs' 1,024 characters of `image` are within the 512 every image reference is held
//! to already). The limits are measured on the create body the kernel would send, so what
//! is checked is what would go.

use super::offers::{create_body, disk_gb};
use super::{label, KeyState, VastRuntime};
use crate::config::ClusterConfig;
use crate::spec::{GpuRequest, Spec, SpecError};

/// The most bytes of one env value (docs).
pub const MAX_ENV_VALUE: usize = 256;
/// The most bytes of `args` (joined by spaces) plus `onstart` (docs).
pub const MAX_ARGS: usize = 4096;
/// The most bytes of a label (docs).
pub const MAX_LABEL: usize = 256;
/// The least disk an instance may have, GB (docs).
pub const MIN_DISK_GB: f64 = 8.0;

/// The longest kernel id: a task id `<uuid>.<u32>`.
const LONGEST_ID: &str = "00000000-0000-0000-0000-000000000000.4294967295";
/// A label's token as `provision` makes it (12 hex digits).
const TOKEN: &str = "000000000000";

fn refuse(field: &str, what: &str) -> SpecError {
    SpecError::invalid(
        field,
        format!("{what} is not supported by the vastai runtime"),
    )
}

impl VastRuntime {
    /// See the module docs.
    pub(super) fn check(&self, spec: &Spec, cfg: &ClusterConfig) -> Result<(), SpecError> {
        if !cfg.vast.enabled() {
            return Err(SpecError::forbidden(
                "config/vast_api/api_key",
                "not set: this agent cannot rent Vast.ai instances",
            ));
        }
        if let KeyState::Refused(why) = &*self.key_state.lock() {
            return Err(SpecError::forbidden("config/vast_api/api_key", why.clone()));
        }
        unsupported(spec)?;
        self.limits(spec, cfg)
    }

    /// The service's input limits, on the body this kernel would send.
    fn limits(&self, spec: &Spec, cfg: &ClusterConfig) -> Result<(), SpecError> {
        let disk = disk_gb(spec, cfg);
        if disk < MIN_DISK_GB {
            let field = if spec.storage_opt.contains_key("size") {
                "storage_opt[size]"
            } else {
                "config/vast_api/disk_gb"
            };
            return Err(SpecError::invalid(
                field,
                format!("{disk:.1} GB; a Vast.ai instance has at least {MIN_DISK_GB} GB of disk"),
            ));
        }
        let label = label(&self.namespace, &self.agent_id, LONGEST_ID, TOKEN);
        if label.len() > MAX_LABEL {
            return Err(SpecError::invalid(
                "label",
                format!(
                    "the instance label `deckhand:<namespace>:<agent id>:<kernel id>:<token>` can be {} bytes here, more than the {MAX_LABEL} Vast.ai takes: shorten the namespace or the agent id",
                    label.len()
                ),
            ));
        }
        let body = create_body(spec, LONGEST_ID, cfg, &label, TOKEN);
        if let Some(env) = body["env"].as_object() {
            for (k, v) in env {
                let n = v.as_str().map_or(0, str::len);
                if n > MAX_ENV_VALUE {
                    let field = match k.as_str() {
                        "TASK_PARENTS" => "parents".to_string(),
                        _ => format!("env[{k:?}]"),
                    };
                    return Err(SpecError::invalid(
                        field,
                        format!("{k} would be {n} bytes; Vast.ai takes env values of at most {MAX_ENV_VALUE} bytes"),
                    ));
                }
            }
        }
        let args: usize = body["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .map(|s| s.len() + 1)
                    .sum()
            })
            .unwrap_or(0);
        let onstart = body["onstart"].as_str().map_or(0, str::len);
        if args + onstart > MAX_ARGS {
            return Err(SpecError::invalid(
                "command",
                format!(
                    "the instance's args and onstart would be {} bytes; Vast.ai takes at most {MAX_ARGS}",
                    args + onstart
                ),
            ));
        }
        Ok(())
    }
}

/// The fields a Vast.ai instance cannot honour, and more than one GPU.
fn unsupported(spec: &Spec) -> Result<(), SpecError> {
    let checks: [(&str, &str, bool); 14] = [
        ("submit_as_hold", "holding", spec.hold),
        ("ports", "exposing ports", !spec.ports.is_empty()),
        ("stage_in", "stage-in mounts", !spec.stage_in.is_empty()),
        ("output_path", "output files", !spec.output_path.is_empty()),
        ("error_path", "error files", !spec.error_path.is_empty()),
        ("input_path", "an input file", !spec.input_path.is_empty()),
        ("working_dir", "a working dir", !spec.working_dir.is_empty()),
        ("privileged", "privileged mode", spec.privileged),
        (
            "network_mode",
            "a network mode",
            !spec.network_mode.is_empty(),
        ),
        (
            "restart_policy",
            "a restart policy",
            spec.restart_policy != "no",
        ),
        ("process_id", "process data", !spec.process_id.is_empty()),
        ("tmpfs", "tmpfs mounts", !spec.tmpfs.is_empty()),
        (
            "memory",
            "a memory limit (filter offers by cpu_ram)",
            spec.memory.is_some(),
        ),
        (
            "cpus",
            "a CPU limit (filter offers by cpu_cores)",
            spec.cpus > 0.0,
        ),
    ];
    if let Some((field, what, _)) = checks.iter().find(|(_, _, set)| *set) {
        return Err(refuse(field, what));
    }
    if matches!(&spec.gpus, GpuRequest::Count(n) if *n > 1)
        || matches!(spec.gpus, GpuRequest::Ids(_))
    {
        return Err(refuse("gpus", "more than the one GPU of an instance"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{self, Template};
    use std::sync::Arc;
    use tokio::sync::watch as tokio_watch;

    fn runtime(agent: &str) -> (VastRuntime, ClusterConfig, tempfile::TempDir) {
        let mut cfg = ClusterConfig::default();
        cfg.vast.api_key = "k".into();
        let (_tx, rx) = tokio_watch::channel(Arc::new(cfg.clone()));
        let dir = tempfile::tempdir().unwrap();
        (VastRuntime::new(rx, "ns", agent, dir.path()), cfg, dir)
    }

    fn spec_of(t: Template) -> Spec {
        spec::validate(
            &Template {
                kernel_id: uuid::Uuid::new_v4().to_string(),
                ..t
            },
            &Default::default(),
        )
        .unwrap()
    }

    fn image(image: &str) -> Spec {
        spec_of(Template {
            image: image.into(),
            ..Default::default()
        })
    }

    #[test]
    fn each_service_limit_is_refused_naming_its_field_and_sizes_not_values() {
        let (rt, cfg, _dir) = runtime("a1");
        assert!(rt.check(&image("busybox"), &cfg).is_ok());

        let mut spec = image("busybox");
        spec.env
            .insert("TOKEN".into(), "s".repeat(MAX_ENV_VALUE + 1));
        let e = rt.check(&spec, &cfg).unwrap_err();
        assert_eq!(e.field, "env[\"TOKEN\"]");
        assert!(!e.reason.contains("sss"), "{}", e.reason);
        spec.env.clear();
        spec.env.insert("TOKEN".into(), "s".repeat(MAX_ENV_VALUE));
        assert!(rt.check(&spec, &cfg).is_ok(), "256 bytes are allowed");

        let mut spec = image("busybox");
        spec.command = vec!["echo".into(), "c".repeat(MAX_ARGS)];
        assert_eq!(rt.check(&spec, &cfg).unwrap_err().field, "command");

        let mut spec = image("busybox");
        spec.storage_opt.insert("size".into(), "5000000000".into());
        assert_eq!(
            rt.check(&spec, &cfg).unwrap_err().field,
            "storage_opt[size]"
        );

        let (rt, cfg, _dir) = runtime(&"a".repeat(200));
        let e = rt.check(&image("busybox"), &cfg).unwrap_err();
        assert_eq!(e.field, "label");
        assert!(e.reason.contains("agent id"), "{}", e.reason);
    }
}
