//! Parsing and validation of single values: durations, sizes, bools, ports, paths, GPU ids.

use super::*;

/// `https://reg.example.com:5000/` → `reg.example.com:5000`: the host part an image
/// reference names its registry by.
pub fn registry_host(value: &str) -> Result<String, String> {
    let v = value.trim();
    let bare = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .unwrap_or(v)
        .trim_end_matches('/');
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !ok {
        return Err(format!(
            "`{value}` is not a registry address; write it like `registry.example.com:5000`"
        ));
    }
    Ok(bare.to_ascii_lowercase())
}

/// A mount destination: absolute, no `..`, and not `/`, `/home`, or anything at or under
/// `/home/work` or `/home/config` (the kernel's home and config).
pub fn check_container_dest(value: &str) -> Result<(), String> {
    let path = std::path::Path::new(value);
    if !path.is_absolute()
        || value.contains('\0')
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("`{value}` is not an absolute path without `..`"));
    }
    for home in ["/home/work", "/home/config"] {
        let home = std::path::Path::new(home);
        if path.starts_with(home) || home.starts_with(path) {
            return Err(format!(
                "`{value}` would cover {} (the kernel's own directory)",
                home.display()
            ));
        }
    }
    Ok(())
}

/// `1.1.1.1, 9.9.9.9` → the addresses.
pub fn parse_ip_list(value: &str) -> Result<Vec<std::net::IpAddr>, String> {
    let mut out = Vec::new();
    for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(
            p.parse()
                .map_err(|_| format!("`{p}` is not an IP address"))?,
        );
    }
    Ok(out)
}

/// Parses `5s`, `500ms`, `1m 30s`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        format!("`{value}` is not a duration ({e}); write it like `500ms`, `5s` or `2m`")
    })
}

/// Parses a size the way Docker does (go-units `RAMInBytes`): a number, optionally followed by
/// one space, then an optional unit `b k m g t p` — case-insensitive, bare or with a trailing
/// `b`, `i` or `ib` — all powers of 1024. `16m`, `16MB`, `16mi` and `16MiB` are each 16 MiB
/// (16777216), as in `docker run -m 16m`; `1.5g` is 1.5 GiB. The `i` form (`2Gi`) is what
/// go-units' pattern `^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$` and deckhand's earlier parser
/// took, so stored values written that way keep their meaning. A number Docker cannot read
/// (`1.2.3`, an exponent, two spaces before the unit) is refused. This is the one size parser:
/// run flags, spec fields and settings all read sizes through it.
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("`{value}` is not a size ({why}); write it like `512m`, `512MiB` or `16g` (powers of 1024, as Docker reads them)")
    };
    let v = value.trim();
    // As go-units splits it: the number ends at the last digit, dot or space; one space
    // between the number and the unit is dropped, and what follows is the unit.
    let Some(sep) = v.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ') else {
        return Err(bad("no number"));
    };
    let (num, unit) = (
        v[..=sep].strip_suffix(' ').unwrap_or(&v[..=sep]),
        &v[sep + 1..],
    );
    if !num.chars().any(|c| c.is_ascii_digit())
        || !num.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return Err(bad("not a number"));
    }
    let n: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let unit = unit.to_ascii_lowercase();
    let shift = match unit.as_bytes() {
        [] | [b'b'] => 0,
        [u] | [u, b'b'] | [u, b'i'] | [u, b'i', b'b'] => match u {
            b'k' => 10,
            b'm' => 20,
            b'g' => 30,
            b't' => 40,
            b'p' => 50,
            _ => return Err(bad(&format!("unknown unit `{unit}`"))),
        },
        _ => return Err(bad(&format!("unknown unit `{unit}`"))),
    };
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes as u64)
}

/// A size for people, in binary units (`16 MiB`, `1.5 GiB`), so what is shown reads back
/// through [`parse_bytes`] as the same amount.
pub fn show_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{value}` is not `true` or `false`")),
    }
}

/// `30000-31000` → (30000, 31000); low ≥ 1, low ≤ high.
pub fn parse_port_range(value: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{value}` is not a port range; write it like `30000-31000`");
    let (lo, hi) = value.trim().split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(format!("`{value}`: the range must satisfy 1 ≤ low ≤ high"));
    }
    Ok((lo, hi))
}

/// `/data,/srv/share` → absolute, `..`-free paths.
pub fn parse_path_list(value: &str) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out = Vec::new();
    for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let path = std::path::Path::new(p);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!("`{p}` is not an absolute path without `..`"));
        }
        out.push(path.to_path_buf());
    }
    Ok(out)
}

/// `GPU-<uuid>` or `<uuid>` → `GPU-<uuid>` (lower-case hex).
pub fn normalize_gpu_id(value: &str) -> Result<String, String> {
    let raw = value.trim();
    let bare = raw.strip_prefix("GPU-").unwrap_or(raw);
    uuid::Uuid::try_parse(bare)
        .map(|u| format!("GPU-{}", u.hyphenated()))
        .map_err(|_| format!("`{value}` is not a GPU id; write `GPU-<uuid>` or `<uuid>`"))
}
