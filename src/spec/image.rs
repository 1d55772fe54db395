//! Image references: Docker's grammar, `[host[:port]/]path[:tag][@sha256:hex]`.

use super::SpecError;

/// `[host[:port]/]path[:tag][@sha256:hex]`, Docker's reference grammar.
pub fn image_reference(r: &str) -> Result<(), SpecError> {
    let bad = |why: &str| {
        SpecError::invalid(
            "image",
            format!("`{r}` is not an image reference ({why}); write it like `registry:5000/team/name:tag`"),
        )
    };
    if r.is_empty() {
        return Err(bad("empty"));
    }
    if r.len() > 512 {
        return Err(bad("longer than 512 characters"));
    }
    let (rest, digest) = match r.split_once('@') {
        Some((a, d)) => (a, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let ok = d
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return Err(bad("the digest is not sha256:<64 hex>"));
        }
    }
    // A tag is after the last `:` that follows the last `/`.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(bad("bad tag"));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        let is_host = first.contains('.') || first.contains(':') || first == "localhost";
        if is_host {
            let ok = first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
                && !first.starts_with(['-', '.', ':']);
            if !ok {
                return Err(bad("bad registry host"));
            }
            parts.remove(0);
        }
    }
    for p in parts {
        let ok = !p.is_empty()
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .last()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !ok {
            return Err(bad(
                "path components are lower-case letters, digits and . _ -",
            ));
        }
    }
    Ok(())
}
