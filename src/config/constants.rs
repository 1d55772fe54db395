//! The names of Qarnot's task constants: which ones deckhand knows, which are write-only
//! secrets, and what a constant's value reads as when it is shown (secrets as `[SECRET]`,
//! the registry password as `***`). Settings (profile constants) and kernel specs both
//! check names here.

/// What a password reads as wherever a spec or a setting is shown.
pub const MASK: &str = "***";
/// What Qarnot's write-only secrets read as to anyone but the task.
pub const SECRET_MASK: &str = "[SECRET]";
/// Constants named `QARNOT_SECRET__<name>` are write-only.
pub const SECRET_PREFIX: &str = "QARNOT_SECRET__";

/// The constants deckhand knows, and what each does here (the README's table says the
/// same). Later features add theirs here (the cluster profiles: `DOCKER_CMD_MASTER`, …).
pub const KNOWN: &[(&str, &str)] = &[
    (
        "DOCKER_SRV",
        "registry host of the image (empty: Docker Hub)",
    ),
    ("DOCKER_REPO", "image repository (default library/ubuntu)"),
    ("DOCKER_TAG", "image tag (default latest)"),
    (
        "DOCKER_REGISTRY_LOGIN",
        "registry user for this kernel's pull",
    ),
    (
        "DOCKER_REGISTRY_PASSWORD",
        "registry password for this kernel's pull (shown as ***)",
    ),
    (
        "DOCKER_USER",
        "user the command runs as (default: the kernel uid:gid)",
    ),
    ("DOCKER_HOST", "hostname inside the container"),
    (
        "DOCKER_CMD",
        "command line, split as a shell would (empty: the image's ENTRYPOINT/CMD)",
    ),
    ("DOCKER_WORKDIR", "working directory"),
    (
        "DOCKER_CMD_MASTER",
        "cluster profiles: the master's (instance 0) command line (empty: DOCKER_CMD, else the image's)",
    ),
    (
        "DOCKER_CMD_WORKER",
        "cluster profiles: the workers' command line (empty: the image's ENTRYPOINT/CMD)",
    ),
    (
        "DOCKER_PROGRESS1",
        "regex over the output; group 1 (0-100) is the progress",
    ),
    (
        "DOCKER_PROGRESS2",
        "regex over the output; group 1 (0-100) is the progress",
    ),
    (
        "DOCKER_PROGRESS3",
        "regex over the output; group 1 (0-100) is the progress",
    ),
    (
        "DOCKER_SHUTDOWN_CMD",
        "run inside the container on stop (default /bin/true)",
    ),
    (
        "DOCKER_SSH",
        "public key allowed to `ssh -p PORT work@AGENT` (ssh profiles)",
    ),
    ("RESOURCES_PATH", "where resources appear (default /job)"),
    (
        "QARNOT_DISABLE_CPU_BOOST",
        "true: the kernel must name its cpus, and never gets CPU beyond them",
    ),
];

/// How a constant's value is shown, when it is not shown as given.
pub fn mask_for(name: &str) -> Option<&'static str> {
    if name.starts_with(SECRET_PREFIX) {
        Some(SECRET_MASK)
    } else if name == "DOCKER_REGISTRY_PASSWORD" {
        Some(MASK)
    } else {
        None
    }
}

/// Whether `name` is a constant that configures the kernel (not an environment variable).
pub fn is_known(name: &str) -> bool {
    KNOWN.iter().any(|(k, _)| *k == name)
}

/// Checks a constant's name: known, a write-only secret, or a valid environment variable
/// name outside Qarnot's reserved prefixes.
pub fn check_name(name: &str) -> Result<(), String> {
    if is_known(name) {
        return Ok(());
    }
    if let Some(rest) = name.strip_prefix(SECRET_PREFIX) {
        if rest.is_empty() {
            return Err("a secret needs a name after `QARNOT_SECRET__`".into());
        }
    } else if name.starts_with("DOCKER_") || name.starts_with("QARNOT_") {
        return Err(format!(
            "`{name}` is not a constant deckhand knows; known: {}, QARNOT_SECRET__<name>",
            KNOWN.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        ));
    }
    let valid = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err("a constant name is letters, digits and `_`, not starting with a digit".into());
    }
    Ok(())
}
