//! Qarnot's task constants, by Qarnot's names: which ones deckhand knows, how `${NAME}`
//! refers to another constant, and what a constant's value reads as when the spec is shown
//! (write-only secrets as `[SECRET]`, the registry password as `***`).
//!
//! A constant deckhand knows configures the kernel (see [`KNOWN`]); any other `DOCKER_*` or
//! `QARNOT_*` name is refused naming it, and every other constant becomes an environment
//! variable of the kernel, as on Qarnot.

use std::collections::BTreeMap;

use super::SpecError;

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
        Some(super::MASK)
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
pub fn check_name(field: &str, name: &str) -> Result<(), SpecError> {
    if is_known(name) {
        return Ok(());
    }
    if let Some(rest) = name.strip_prefix(SECRET_PREFIX) {
        if rest.is_empty() {
            return Err(SpecError::invalid(
                field,
                "a secret needs a name after `QARNOT_SECRET__`",
            ));
        }
    } else if name.starts_with("DOCKER_") || name.starts_with("QARNOT_") {
        return Err(SpecError::invalid(
            field,
            format!(
                "`{name}` is not a constant deckhand knows; known: {}, QARNOT_SECRET__<name>",
                KNOWN.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let valid = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(SpecError::invalid(
            field,
            "a constant name is letters, digits and `_`, not starting with a digit",
        ));
    }
    Ok(())
}

/// Constants with every `${NAME}` that names another constant replaced by its value
/// (recursively). A reference to something that is not a constant is left as written (a
/// shell may still expand it); a cycle is refused naming the constant.
pub fn substitute(
    constants: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for name in constants.keys() {
        let mut stack = Vec::new();
        out.insert(name.clone(), expand(name, constants, &mut stack)?);
    }
    Ok(out)
}

fn expand(
    name: &str,
    constants: &BTreeMap<String, String>,
    stack: &mut Vec<String>,
) -> Result<String, SpecError> {
    if stack.iter().any(|s| s == name) || stack.len() > 16 {
        return Err(SpecError::invalid(
            format!("constants[{}]", stack.first().map_or(name, |s| s.as_str())),
            format!(
                "`${{{name}}}` refers back to itself ({} → {name})",
                stack.join(" → ")
            ),
        ));
    }
    let Some(value) = constants.get(name) else {
        return Ok(format!("${{{name}}}"));
    };
    stack.push(name.to_string());
    let mut out = String::with_capacity(value.len());
    let mut rest = value.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) if constants.contains_key(&after[..end]) => {
                out.push_str(&expand(&after[..end], constants, stack)?);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    stack.pop();
    Ok(out)
}

/// Whether a constant (after substitution) must stay write-only: a `QARNOT_SECRET__*`
/// itself, or one whose value holds a secret's value.
pub fn holds_secret(name: &str, value: &str, resolved: &BTreeMap<String, String>) -> bool {
    name.starts_with(SECRET_PREFIX)
        || resolved.iter().any(|(k, secret)| {
            k.starts_with(SECRET_PREFIX) && !secret.is_empty() && value.contains(secret.as_str())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn references_to_constants_are_replaced_and_others_left_for_the_shell() {
        let c = map(&[
            ("DOCKER_TAG", "${VERSION}-slim"),
            ("VERSION", "${MAJOR}.2"),
            ("MAJOR", "3"),
            ("DOCKER_CMD", "sh -c 'echo ${HOME} ${MAJOR}'"),
        ]);
        let r = substitute(&c).unwrap();
        assert_eq!(r["DOCKER_TAG"], "3.2-slim");
        assert_eq!(r["DOCKER_CMD"], "sh -c 'echo ${HOME} 3'");
    }

    #[test]
    fn a_cycle_is_refused_naming_the_constant() {
        let c = map(&[("A", "${B}"), ("B", "x${A}")]);
        let err = substitute(&c).unwrap_err();
        assert_eq!(err.field, "constants[A]");
        assert!(err.reason.contains("refers back"), "{err}");
    }

    #[test]
    fn unknown_qarnot_and_docker_names_are_refused_and_others_are_env() {
        assert!(check_name("c", "DOCKER_TAG").is_ok());
        assert!(check_name("c", "QARNOT_SECRET__TOKEN").is_ok());
        assert!(check_name("c", "MY_SETTING").is_ok());
        let err = check_name("constants[DOCKER_TAGG]", "DOCKER_TAGG").unwrap_err();
        assert!(err.reason.contains("`DOCKER_TAGG`"), "{err}");
        assert!(check_name("c", "QARNOT_FOO").is_err());
        assert!(check_name("c", "QARNOT_SECRET__").is_err());
        assert!(check_name("c", "A-B").is_err());
    }

    #[test]
    fn secrets_and_the_registry_password_are_masked() {
        assert_eq!(mask_for("QARNOT_SECRET__X"), Some("[SECRET]"));
        assert_eq!(mask_for("DOCKER_REGISTRY_PASSWORD"), Some("***"));
        assert_eq!(mask_for("DOCKER_TAG"), None);
        let r = map(&[
            ("QARNOT_SECRET__K", "s3cr3t"),
            ("URL", "https://u:s3cr3t@h"),
        ]);
        assert!(holds_secret("URL", &r["URL"], &r));
        assert!(!holds_secret("OTHER", "plain", &r));
    }
}
