//! Qarnot's task constants in a kernel's spec, by Qarnot's names: which ones deckhand knows, how `${NAME}`
//! refers to another constant, and what a constant's value reads as when the spec is shown
//! (write-only secrets as `[SECRET]`, the registry password as `***`).
//!
//! A constant deckhand knows configures the kernel (see [`KNOWN`]); any other `DOCKER_*` or
//! `QARNOT_*` name is refused naming it, and every other constant becomes an environment
//! variable of the kernel, as on Qarnot.
//!
//! The names themselves (which deckhand knows, which are secret, how a value is shown) are
//! settings too and live in [`crate::config::constants`]; re-exported here.

use std::collections::BTreeMap;

use super::SpecError;
pub use crate::config::constants::{is_known, mask_for, KNOWN, SECRET_MASK, SECRET_PREFIX};

/// Checks a constant's name: known, a write-only secret, or a valid environment variable
/// name outside Qarnot's reserved prefixes; the error names `field`.
pub fn check_name(field: &str, name: &str) -> Result<(), SpecError> {
    crate::config::constants::check_name(name).map_err(|reason| SpecError::invalid(field, reason))
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
