//! The etcd key layout, all under `/deckhand/<namespace>/`:
//!
//! | key | meaning |
//! | --- | --- |
//! | `config/…` | cluster-wide settings (flattened TOML tree) |
//! | `nodes/agents/<id>/config/…` | per-agent overrides of the same tree |
//! | `nodes/agents/<id>` | an agent's registration, on a lease |
//! | `nodes/agents/<id>/drain` | the agent's cordon or drain (not on a lease), see [`super::drain`] |
//! | `nodes/managers/<id>` | a manager's registration, on a lease |

/// Key builder for one namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Self {
            root: format!("/deckhand/{namespace}/"),
        }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn config(&self) -> String {
        format!("{}config/", self.root)
    }

    pub fn agents(&self) -> String {
        format!("{}nodes/agents/", self.root)
    }

    pub fn agent(&self, id: &str) -> String {
        format!("{}{id}", self.agents())
    }

    pub fn agent_config(&self, id: &str) -> String {
        format!("{}{id}/config/", self.agents())
    }

    pub fn agent_drain(&self, id: &str) -> String {
        format!("{}{id}/{}", self.agents(), super::drain::DRAIN_KEY)
    }

    pub fn managers(&self) -> String {
        format!("{}nodes/managers/", self.root)
    }

    pub fn manager(&self, id: &str) -> String {
        format!("{}{id}", self.managers())
    }
}

/// Checks a namespace, agent id or manager id: 1–64 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with `.` or `-`. `what` names the flag in the message.
pub fn validate_name(what: &str, value: &str) -> Result<(), String> {
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if value.is_empty() || value.len() > 64 || !ok_chars || value.starts_with(['.', '-']) {
        return Err(format!(
            "invalid {what} `{value}`: use 1-64 characters of letters, digits, `.`, `_` and `-`, not starting with `.` or `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let k = Keys::new("prod");
        assert_eq!(k.config(), "/deckhand/prod/config/");
        assert_eq!(k.agent("gpu-01"), "/deckhand/prod/nodes/agents/gpu-01");
        assert_eq!(
            k.agent_config("gpu-01"),
            "/deckhand/prod/nodes/agents/gpu-01/config/"
        );
        assert_eq!(k.manager("m1"), "/deckhand/prod/nodes/managers/m1");
    }

    #[test]
    fn names_that_would_escape_the_layout_are_refused() {
        assert!(validate_name("namespace", "team-a.prod_1").is_ok());
        for bad in ["", "a/b", "..", "-x", "a b", &"x".repeat(65)] {
            let err = validate_name("namespace", bad).unwrap_err();
            assert!(err.contains("namespace"), "{err}");
        }
    }
}
