//! The spec fields that hold sizes — memory, swap, shared memory, tmpfs mounts, storage
//! options — all read with Docker's rule (`16m` = 16 MiB, powers of 1024) through the one
//! parser, [`crate::config::schema::parse_bytes`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{container_path, SpecError, CONFIG_DIR, WORK_DIR};
use crate::config::schema;

/// Largest size any field may ask for (1 PiB).
const ABSURD: u64 = 1 << 50;

/// A size field; empty is `None`.
pub fn bytes_field(field: &str, v: &str) -> Result<Option<u64>, SpecError> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    let b = schema::parse_bytes(v).map_err(|r| SpecError::invalid(field, r))?;
    if b > ABSURD {
        return Err(SpecError::invalid(
            field,
            format!("`{v}` is absurdly large"),
        ));
    }
    Ok(Some(b))
}

/// Docker's `--memory-swap`: memory plus swap, at least `memory`; `-1` is unlimited swap.
/// Empty: no swap beyond the memory limit (`None`).
pub fn memory_swap(v: &str, memory: Option<u64>) -> Result<Option<i64>, SpecError> {
    const FIELD: &str = "memory_swap";
    if v.trim().is_empty() {
        return Ok(None);
    }
    let Some(memory) = memory else {
        return Err(SpecError::invalid(
            FIELD,
            "needs `memory`: swap is counted on top of a memory limit",
        ));
    };
    if v.trim() == "-1" {
        return Ok(Some(-1));
    }
    let total = bytes_field(FIELD, v)?.unwrap_or(0);
    if total < memory {
        return Err(SpecError::invalid(
            FIELD,
            format!(
                "`{v}` ({}) is less than memory ({}); it is memory plus swap",
                schema::show_bytes(total),
                schema::show_bytes(memory)
            ),
        ));
    }
    Ok(Some(total as i64))
}

/// A tmpfs mount: its path in the container and the mount options, `size` in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    pub path: String,
    pub options: String,
}

const TMPFS_FLAGS: &[&str] = &[
    "rw", "ro", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime",
];
const TMPFS_VALUES: &[&str] = &["size", "mode", "uid", "gid", "nr_inodes"];

/// Docker's `--tmpfs PATH[:OPTIONS]`; `size=` is read as Docker reads sizes and passed on
/// in bytes, so the kernel's tmpfs gets exactly what was asked.
pub fn tmpfs(items: &[String]) -> Result<Vec<Tmpfs>, SpecError> {
    let mut out: Vec<Tmpfs> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("tmpfs[{i}]");
        let (path, opts) = item.split_once(':').unwrap_or((item, ""));
        container_path(&field, path)?;
        let path = path.trim_end_matches('/');
        if [WORK_DIR, CONFIG_DIR, ""].contains(&path) {
            return Err(SpecError::invalid(
                &field,
                format!("`{item}` would cover / , {WORK_DIR} or {CONFIG_DIR}"),
            ));
        }
        if out.iter().any(|t| t.path == path) {
            return Err(SpecError::invalid(
                &field,
                format!("`{path}` is given twice"),
            ));
        }
        let mut options = Vec::new();
        for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                Some(("size", v)) => {
                    let b = bytes_field(&format!("{field}.size"), v)?.unwrap_or(0);
                    options.push(format!("size={b}"));
                }
                Some(("mode", v)) if u32::from_str_radix(v, 8).is_ok_and(|m| m <= 0o7777) => {
                    options.push(opt.to_string())
                }
                Some((k, v))
                    if TMPFS_VALUES.contains(&k)
                        && k != "mode"
                        && k != "size"
                        && v.parse::<u64>().is_ok() =>
                {
                    options.push(opt.to_string())
                }
                None if TMPFS_FLAGS.contains(&opt) => options.push(opt.to_string()),
                _ => {
                    return Err(SpecError::invalid(
                        &field,
                        format!(
                            "`{opt}` is not a tmpfs option ({}, or {}=N)",
                            TMPFS_FLAGS.join(", "),
                            TMPFS_VALUES.join("=N, ")
                        ),
                    ))
                }
            }
        }
        out.push(Tmpfs {
            path: path.to_string(),
            options: options.join(","),
        });
    }
    Ok(out)
}

/// Docker's `--storage-opt`: `size` (the container's writable layer, where the storage
/// driver supports a quota), read as Docker reads sizes and passed on in bytes.
pub fn storage_opt(opts: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for (k, v) in opts {
        let field = format!("storage_opt[{k}]");
        match k.as_str() {
            "size" => {
                let b = bytes_field(&field, v)?.unwrap_or(0);
                out.insert(k.clone(), b.to_string());
            }
            _ => {
                return Err(SpecError::invalid(
                    field,
                    "the one storage option is `size`",
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_field_are_powers_of_1024() {
        assert_eq!(bytes_field("memory", "16m"), Ok(Some(16_777_216)));
        assert_eq!(bytes_field("shm_size", "10g"), Ok(Some(10_737_418_240)));
        assert_eq!(memory_swap("32m", Some(16 << 20)), Ok(Some(32 << 20)));
        assert_eq!(memory_swap("-1", Some(16 << 20)), Ok(Some(-1)));
        let t = tmpfs(&["/scratch:rw,size=64m,mode=1777".into()]).unwrap();
        assert_eq!(t[0].options, "rw,size=67108864,mode=1777");
        let s = storage_opt(&BTreeMap::from([("size".into(), "20g".into())])).unwrap();
        assert_eq!(s["size"], (20u64 << 30).to_string());
    }

    #[test]
    fn bad_sizes_and_options_name_the_field() {
        assert_eq!(
            memory_swap("8m", Some(16 << 20)).unwrap_err().field,
            "memory_swap"
        );
        assert_eq!(memory_swap("32m", None).unwrap_err().field, "memory_swap");
        assert_eq!(
            tmpfs(&["/a".into(), "/b:size=lots".into()])
                .unwrap_err()
                .field,
            "tmpfs[1].size"
        );
        assert_eq!(tmpfs(&["/home/work".into()]).unwrap_err().field, "tmpfs[0]");
        assert_eq!(
            tmpfs(&["/x:exec,suid,bogus".into()]).unwrap_err().field,
            "tmpfs[0]"
        );
        assert_eq!(tmpfs(&["rel".into()]).unwrap_err().field, "tmpfs[0]");
        let bad = BTreeMap::from([("dm.basesize".into(), "1g".into())]);
        assert_eq!(
            storage_opt(&bad).unwrap_err().field,
            "storage_opt[dm.basesize]"
        );
    }
}
