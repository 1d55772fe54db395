//! What the supervisor does for a task-profile kernel (Qarnot's Docker profiles) beyond an
//! ordinary one, on any runtime that can carry it out:
//!
//! - [`progress`]: its progress from its output (`DOCKER_PROGRESS1..3`);
//! - [`shutdown`]: its shutdown command on stop (`DOCKER_SHUTDOWN_CMD`);
//! - [`transfer`]: its resources before it starts, its results after it ends (UPLOADING);
//! - [`ssh`]: `ssh -p PORT work@AGENT` into it (`DOCKER_SSH`), served by the agent.
//!
//! The profile itself and its constants are resolved into the spec by
//! [`crate::spec::profile`]; [`check_support`] refuses, naming the runtime, what the
//! kernel's runtime cannot do.

pub mod progress;
pub mod shutdown;
pub mod ssh;
pub mod transfer;

use crate::runtime::Runtime;
use crate::spec::{BindMount, Spec, SpecError};

/// Refuses the profile features `rt` cannot carry out, naming the constant or field and
/// the runtime.
pub fn check_support(spec: &Spec, rt: &dyn Runtime) -> Result<(), SpecError> {
    let Some(p) = &spec.profile else {
        return Ok(());
    };
    let caps = rt.capabilities();
    let refuse = |field: &str, what: &str| {
        SpecError::forbidden(
            field,
            format!("{what} is not supported by the {} runtime", rt.name()),
        )
    };
    if p.shutdown_given && !caps.exec {
        return Err(refuse(
            "constants[DOCKER_SHUTDOWN_CMD]",
            "a shutdown command",
        ));
    }
    let can_ssh = caps.exec && caps.host_ports;
    if !p.ssh_key.is_empty() && !can_ssh {
        return Err(refuse("constants[DOCKER_SSH]", "SSH access"));
    }
    if (p.resources.is_some() || p.results.is_some()) && !caps.files {
        let field = if p.resources.is_some() {
            "resources"
        } else {
            "results"
        };
        return Err(refuse(field, "resources and results"));
    }
    if p.rdma && !caps.rdma {
        return Err(refuse("profile", "RDMA devices"));
    }
    if spec
        .stage_in
        .iter()
        .any(|m| m.container == p.resources_path)
    {
        return Err(SpecError::invalid(
            "stage_in",
            format!(
                "a mount over RESOURCES_PATH ({}): the kernel's resources go there",
                p.resources_path
            ),
        ));
    }
    Ok(())
}

/// The mount of a profile kernel's resources dir at `RESOURCES_PATH`, on a runtime with a
/// local home.
pub fn resources_mount(spec: &Spec, scratch_dir: &str) -> Option<BindMount> {
    let p = spec.profile.as_ref()?;
    if scratch_dir.is_empty() {
        return None;
    }
    Some(BindMount {
        host: std::path::Path::new(scratch_dir).join(transfer::RESOURCES_DIR),
        container: p.resources_path.clone(),
        read_only: false,
    })
}
