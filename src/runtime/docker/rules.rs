//! What Docker adds to the rules of a spec's single fields ([`FieldRules`]), asked by spec
//! validation at each field's place: a host path may not give the kernel the engine's socket
//! (which is root on the host) unless `security/allow_docker_socket` says so; a network mode
//! is a Docker network name (never `container:`, another container's network); memory is at
//! least Docker's minimum of 6MiB.

use std::path::{Path, PathBuf};

use crate::config::cluster::KernelSettings;
use crate::spec::{FieldRules, SpecError};

/// The smallest memory limit the engine accepts.
pub const MIN_MEMORY: u64 = 6 << 20;

pub struct DockerRules;

impl FieldRules for DockerRules {
    fn host_path(
        &self,
        field: &str,
        path: &str,
        real: &Path,
        cfg: &KernelSettings,
    ) -> Result<(), SpecError> {
        // The engine's socket gives root on the host: never through a stage-in dir by accident.
        if exposes(real, &engine_sockets()) && !cfg.allow_docker_socket {
            return Err(SpecError::forbidden(
                field,
                format!(
                    "`{path}` would give the kernel the Docker socket; set config/security/allow_docker_socket = true to allow it"
                ),
            ));
        }
        Ok(())
    }

    fn network_mode(&self, mode: &str) -> Result<(), SpecError> {
        if mode.starts_with("container:") {
            return Err(SpecError::invalid(
                "network_mode",
                "sharing another container's network is not supported",
            ));
        }
        docker_name("network_mode", mode)
    }

    fn memory(&self, shown: &str, bytes: u64) -> Result<(), SpecError> {
        if bytes < MIN_MEMORY {
            return Err(SpecError::invalid(
                "memory",
                format!("`{shown}` is below Docker's minimum of 6MiB"),
            ));
        }
        Ok(())
    }
}

/// The engine's socket as `DOCKER_HOST` names it (`unix://…`), and the default one.
fn engine_sockets() -> [PathBuf; 2] {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
    [socket, PathBuf::from("/var/run/docker.sock")]
}

/// Whether a kernel seeing `real` (resolved) would see one of `sockets`: it is one, or a
/// dir above one.
fn exposes(real: &Path, sockets: &[PathBuf]) -> bool {
    sockets
        .iter()
        .filter_map(|s| std::fs::canonicalize(s).ok())
        .any(|s| s.starts_with(real))
}

/// A Docker object name (a network): letters, digits, `_`, `.`, `-`, starting with a letter
/// or digit.
fn docker_name(field: &str, v: &str) -> Result<(), SpecError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(SpecError::invalid(
            field,
            format!("`{v}` is not a network name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{self, Template};

    fn template() -> Template {
        Template {
            kernel_id: uuid::Uuid::new_v4().to_string(),
            image: "busybox".into(),
            ..Default::default()
        }
    }

    fn first_error(t: &Template, cfg: &KernelSettings) -> SpecError {
        spec::validate_for(t, cfg, &DockerRules).unwrap_err()
    }

    #[test]
    fn memory_below_the_engines_minimum_is_refused_naming_it_as_written() {
        let mut t = template();
        t.memory = "1KiB".into();
        let e = first_error(&t, &KernelSettings::default());
        assert_eq!(e.field, "memory");
        assert_eq!(e.reason, "`1KiB` is below Docker's minimum of 6MiB");
        assert!(!e.forbidden);
        t.memory = "6MiB".into();
        assert!(spec::validate_for(&t, &KernelSettings::default(), &DockerRules).is_ok());
    }

    #[test]
    fn another_containers_network_and_bad_network_names_are_refused() {
        let mut t = template();
        t.network_mode = "container:abc".into();
        let e = first_error(&t, &KernelSettings::default());
        assert_eq!(
            e.to_string(),
            "network_mode: sharing another container's network is not supported"
        );
        t.network_mode = "-bad name".into();
        let e = first_error(&t, &KernelSettings::default());
        assert_eq!(
            e.to_string(),
            "network_mode: `-bad name` is not a network name"
        );
        t.network_mode = "my-net_1.x".into();
        assert!(spec::validate_for(&t, &KernelSettings::default(), &DockerRules).is_ok());
    }

    /// The first problem of a request is the same as when these checks were generic: the
    /// network mode before `privileged`, memory before `cpus`.
    #[test]
    fn dockers_field_rules_are_reported_at_their_fields_place() {
        let mut t = template();
        t.network_mode = "container:abc".into();
        t.privileged = true;
        assert_eq!(
            first_error(&t, &KernelSettings::default()).field,
            "network_mode"
        );
        let mut t = template();
        t.memory = "1KiB".into();
        t.cpus = -1.0;
        assert_eq!(first_error(&t, &KernelSettings::default()).field, "memory");
    }

    #[test]
    fn a_path_is_refused_when_it_is_the_socket_or_a_dir_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let sockets = [socket.clone(), PathBuf::from("/nonexistent/docker.sock")];
        assert!(exposes(&real, &sockets));
        assert!(exposes(&real.join("docker.sock"), &sockets));
        assert!(!exposes(&real.join("elsewhere"), &sockets));
        assert!(!exposes(
            &real,
            &[PathBuf::from("/nonexistent/docker.sock")]
        ));
    }

    #[test]
    fn the_socket_refusal_names_the_field_the_path_as_given_and_the_setting() {
        let sockets = engine_sockets();
        let Some(real) = sockets.iter().find_map(|s| std::fs::canonicalize(s).ok()) else {
            return; // no engine socket on this host: nothing to expose
        };
        let mut cfg = KernelSettings::default();
        let e = DockerRules
            .host_path("stage_in[0].host_path", "/given", &real, &cfg)
            .unwrap_err();
        assert_eq!(e.field, "stage_in[0].host_path");
        assert!(e.forbidden);
        assert!(
            e.reason
                .starts_with("`/given` would give the kernel the Docker socket")
                && e.reason.contains("allow_docker_socket"),
            "{e}"
        );
        cfg.allow_docker_socket = true;
        assert!(DockerRules
            .host_path("stage_in[0].host_path", "/given", &real, &cfg)
            .is_ok());
    }
}
