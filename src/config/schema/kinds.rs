//! Value kinds (what a value must look like) and the check of a value against its kind.

use super::*;

/// What a value must look like.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `500ms`, `5s`, `2m` (humantime), within bounds.
    Duration {
        min: Duration,
        max: Duration,
    },
    /// A byte size: `1024`, `512MiB`, `16GB`.
    Bytes,
    /// A decimal number within bounds.
    Float {
        min: f64,
        max: f64,
    },
    /// An integer within bounds.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// Free text of at most 256 characters.
    Text,
    /// An absolute filesystem path.
    AbsPath,
    /// A GPU UUID: `GPU-<uuid>` or `<uuid>`.
    GpuId,
    /// An inclusive port range `low-high`.
    PortRange,
    /// Comma-separated absolute paths.
    PathList,
    /// Free text that is never shown: `config get`, logs and errors read `***`.
    Secret,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// Comma-separated IP addresses.
    IpList,
    /// A shell-style wildcard (fnmatch): `*`, `?`, `[abc]`.
    Glob,
    /// A Docker object name: letters, digits, `_`, `.`, `-`.
    DockerName,
    /// A registry address: `host[:port]`, optionally with `https://` or `http://`.
    RegistryUrl,
    /// An absolute path inside the container that does not cover the kernel's home.
    ContainerPath,
    /// An `http://` or `https://` URL.
    HttpUrl,
    /// A Vast.ai offer filter (`vast_api/offer_filters/<field>/<op>`): the key names an API
    /// field and operator, the value fits the field.
    OfferFilter,
    /// A `profiles/<name>/…` setting: the key names the profile and field, the value fits
    /// the field ([`super::profiles::check`]).
    ProfileSetting,
}

/// Checks `value` against `kind` alone (for checks that combine kinds).
pub fn validate_kind(kind: Kind, value: &str) -> Result<(), String> {
    check_kind(kind, value)
}

pub(super) fn check_kind(kind: Kind, value: &str) -> Result<(), String> {
    match kind {
        Kind::Duration { min, max } => {
            let d = parse_duration(value)?;
            if d < min || d > max {
                return Err(format!(
                    "`{value}` is out of range {}..{}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ));
            }
        }
        Kind::Bytes => {
            parse_bytes(value)?;
        }
        Kind::Float { min, max } => {
            let f: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{value}` is not a number"))?;
            if !f.is_finite() || f < min || f > max {
                return Err(format!("`{value}` is out of range {min}..{max}"));
            }
        }
        Kind::Int { min, max } => {
            let i: i64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{value}` is not an integer"))?;
            if i < min || i > max {
                return Err(format!("`{value}` is out of range {min}..{max}"));
            }
        }
        Kind::Bool => {
            parse_bool(value)?;
        }
        Kind::Text => {
            if value.chars().count() > 256 || value.chars().any(char::is_control) {
                return Err("expected at most 256 printable characters".into());
            }
        }
        Kind::AbsPath => {
            if !value.starts_with('/') || value.contains('\0') {
                return Err(format!("`{value}` is not an absolute path"));
            }
        }
        Kind::GpuId => {
            normalize_gpu_id(value)?;
        }
        Kind::PortRange => {
            parse_port_range(value)?;
        }
        Kind::PathList => {
            parse_path_list(value)?;
        }
        Kind::Secret => {
            if value.is_empty()
                || value.chars().count() > 256
                || value.chars().any(char::is_control)
            {
                return Err("expected 1 to 256 printable characters (value not shown)".into());
            }
        }
        Kind::Choice(words) => {
            if !words.contains(&value.trim()) {
                return Err(format!("`{value}`: expected one of {}", words.join(", ")));
            }
        }
        Kind::IpList => {
            parse_ip_list(value)?;
        }
        Kind::Glob => {
            glob::Pattern::new(value)
                .map_err(|e| format!("`{value}` is not a shell wildcard: {}", e.msg))?;
        }
        Kind::DockerName => {
            let ok = !value.is_empty()
                && value.len() <= 128
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && value
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric());
            if !ok {
                return Err(format!(
                    "`{value}` is not a Docker name (letters, digits, `_`, `.`, `-`)"
                ));
            }
        }
        Kind::RegistryUrl => {
            registry_host(value)?;
        }
        Kind::ContainerPath => {
            check_container_dest(value)?;
        }
        Kind::HttpUrl => {
            let v = value.trim();
            let rest = v
                .strip_prefix("https://")
                .or_else(|| v.strip_prefix("http://"))
                .ok_or_else(|| format!("`{value}` is not an http:// or https:// URL"))?;
            if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("`{value}` is not an http:// or https:// URL"));
            }
        }
        // Checked with their key, in `validate`.
        Kind::OfferFilter | Kind::ProfileSetting => {}
    }
    Ok(())
}
