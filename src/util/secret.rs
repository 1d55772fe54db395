//! Secret values (registry passwords, S3 secret keys, the Vast.ai API key, the etcd
//! password): held in secrecy's zeroizing box, shown as `***` by `Debug`, and read only
//! through [`Secret::expose`], so a secret reaches a log line or an error only where code
//! asks for it by name.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. Equality compares the values (settings are diffed on every change of
/// the watched config); `Debug` shows `***`, or `""` when it is empty.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// The value, for the one place that hands it on (a request header, a login).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// `text` with every occurrence of the secret replaced by `***`: for messages that come
    /// from elsewhere (an engine's or a store's error) and may echo it.
    pub fn scrub(&self, text: &str) -> String {
        if self.is_empty() {
            text.to_string()
        } else {
            text.replace(self.expose(), "***")
        }
    }
}

impl Default for Secret {
    fn default() -> Self {
        Self::from(String::new())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(SecretString::from(s))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::from(s.to_string())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.is_empty() { "" } else { "***" };
        std::fmt::Debug::fmt(shown, f)
    }
}

/// Serialized as the plain value: the one serialized holder is the kernel record in the
/// agent's own registry file (mode 0600), which needs the login to pull again after a
/// restart. Listings and events are built from other types.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_as_stars_and_is_scrubbed_from_messages() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(s.scrub("login hunter2 refused"), "login *** refused");
        assert_eq!(Secret::default().scrub("as is"), "as is");
        assert_eq!(s, Secret::from("hunter2".to_string()));
        assert_ne!(s, Secret::default());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Secret>(&json).unwrap(), s);
    }
}
