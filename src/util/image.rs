//! Image references, read once: Docker's grammar `[host[:port]/]path[:tag][@sha256:hex]`.
//!
//! Every part of deckhand that looks inside a reference (spec validation, which registry's
//! login applies, what a pull asks the engine for, the default tag of a profile image, the
//! columns of `deckhand images`) goes through [`ImageRef`], so they cannot disagree.

/// A reference taken apart; every field borrows from the text it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// The whole reference as given.
    pub raw: &'a str,
    /// Everything before the tag and digest: `registry:5000/team/app`.
    pub name: &'a str,
    /// The registry host when the first path component is one (it has a `.` or `:` or is
    /// `localhost`, as Docker reads it).
    pub host: Option<&'a str>,
    /// After the last `:` that follows the last `/`, before any digest.
    pub tag: Option<&'a str>,
    /// `sha256:<hex>` after the `@`.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// Takes a reference apart without judging it (for references that were checked
    /// before, or that come from the engine).
    pub fn split(raw: &'a str) -> Self {
        let (rest, digest) = match raw.split_once('@') {
            Some((a, d)) => (a, Some(d)),
            None => (raw, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        let host = match name.split_once('/') {
            Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => Some(first),
            _ => None,
        };
        Self {
            raw,
            name,
            host,
            tag,
            digest,
        }
    }

    /// Takes a reference apart and checks it against Docker's grammar; the error says in a
    /// few words what is wrong.
    pub fn parse(raw: &'a str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err("empty");
        }
        if raw.len() > 512 {
            return Err("longer than 512 characters");
        }
        let r = Self::split(raw);
        if let Some(d) = r.digest {
            let ok = d
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                return Err("the digest is not sha256:<64 hex>");
            }
        }
        if let Some(t) = r.tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err("bad tag");
            }
        }
        let path = match r.host {
            Some(host) => {
                let ok = host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
                    && !host.starts_with(['-', '.', ':']);
                if !ok {
                    return Err("bad registry host");
                }
                &r.name[host.len() + 1..]
            }
            None => r.name,
        };
        let component_ok = |p: &str| {
            let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            p.chars().next().is_some_and(edge)
                && p.chars().last().is_some_and(edge)
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        };
        if !path.split('/').all(component_ok) {
            return Err("path components are lower-case letters, digits and . _ -");
        }
        Ok(r)
    }

    /// The registry a pull of this reference talks to: its host, lower-cased, or Docker
    /// Hub (`docker.io`).
    pub fn registry(&self) -> String {
        self.host
            .map_or_else(|| "docker.io".into(), str::to_ascii_lowercase)
    }

    /// What a pull asks the engine for (`fromImage`, `tag`): a digest reference whole and
    /// without a tag, else the name and its tag, `latest` when none is given.
    pub fn pull_parts(&self) -> (&'a str, Option<&'a str>) {
        if self.digest.is_some() {
            return (self.raw, None);
        }
        (self.name, Some(self.tag.unwrap_or("latest")))
    }

    /// `repo` → `repo:latest`, as Docker defaults; a reference with a tag or a digest stays
    /// as it is.
    pub fn with_default_tag(&self) -> String {
        if self.tag.is_some() || self.digest.is_some() {
            self.raw.to_string()
        } else {
            format!("{}:latest", self.raw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag_not_at_a_registry_port() {
        let r = ImageRef::split("127.0.0.1:5000/team/app:1.2");
        assert_eq!(r.name, "127.0.0.1:5000/team/app");
        assert_eq!(r.host, Some("127.0.0.1:5000"));
        assert_eq!(r.tag, Some("1.2"));
        let r = ImageRef::split("127.0.0.1:5000/app");
        assert_eq!((r.name, r.tag), ("127.0.0.1:5000/app", None));
        let d = format!("a/b@sha256:{}", "0".repeat(64));
        let r = ImageRef::parse(&d).unwrap();
        assert_eq!((r.name, r.tag, r.host), ("a/b", None, None));
        assert_eq!(r.pull_parts(), (d.as_str(), None));
        assert_eq!(r.with_default_tag(), d);
        assert_eq!(ImageRef::split("busybox").registry(), "docker.io");
        assert_eq!(ImageRef::split("LocalHost/x").registry(), "docker.io");
        assert_eq!(ImageRef::split("localhost/x").registry(), "localhost");
        assert_eq!(
            ImageRef::split("Reg.Example:5000/x:1").registry(),
            "reg.example:5000"
        );
        assert_eq!(
            ImageRef::split("reg:5000/a/b").pull_parts(),
            ("reg:5000/a/b", Some("latest"))
        );
        assert_eq!(
            ImageRef::split("reg:5000/a/b").with_default_tag(),
            "reg:5000/a/b:latest"
        );
        assert_eq!(ImageRef::split("a/b:v2").with_default_tag(), "a/b:v2");
    }

    #[test]
    fn parse_refuses_what_docker_refuses_and_says_which_part() {
        assert_eq!(ImageRef::parse(""), Err("empty"));
        assert_eq!(
            ImageRef::parse("Busybox"),
            Err("path components are lower-case letters, digits and . _ -")
        );
        assert_eq!(ImageRef::parse("busybox:"), Err("bad tag"));
        assert_eq!(ImageRef::parse("busybox:-x"), Err("bad tag"));
        assert_eq!(ImageRef::parse("-reg.io/x"), Err("bad registry host"));
        assert_eq!(
            ImageRef::parse("x@sha256:00"),
            Err("the digest is not sha256:<64 hex>")
        );
        assert_eq!(
            ImageRef::parse(&"a".repeat(513)),
            Err("longer than 512 characters")
        );
        assert_eq!(
            ImageRef::parse("a//b"),
            Err("path components are lower-case letters, digits and . _ -")
        );
        assert!(ImageRef::parse("localhost:5000/team/app_1.x:v1.2-rc_3").is_ok());
    }
}
