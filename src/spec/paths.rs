//! Paths a spec names: container paths, host paths (which must lie inside
//! `container/stage_in_dirs`, and pass the runtime's [`FieldRules::host_path`]), output
//! files and the input file.

use std::path::{Component, Path, PathBuf};

use super::{FieldRules, SpecError, Template};
use crate::config::cluster::KernelSettings;

/// An absolute container path without `..`.
pub(crate) fn container_path(field: &str, p: &str) -> Result<(), SpecError> {
    let path = Path::new(p);
    if !path.is_absolute()
        || p.contains('\0')
        || p.contains(':')
        || path.components().any(|c| matches!(c, Component::ParentDir))
    {
        return Err(SpecError::invalid(
            field,
            format!("`{p}` is not an absolute path without `..` or `:`"),
        ));
    }
    Ok(())
}

/// A host path that must lie inside one of `container/stage_in_dirs`, symlinks resolved, and
/// that the runtime's rules allow.
pub(super) fn allowed_host_path(
    field: &str,
    p: &str,
    cfg: &KernelSettings,
    rules: &dyn FieldRules,
) -> Result<PathBuf, SpecError> {
    container_path(field, p)?;
    let real =
        std::fs::canonicalize(p).map_err(|e| SpecError::invalid(field, format!("`{p}`: {e}")))?;
    let allowed = cfg.stage_in_dirs.iter().any(|d| {
        std::fs::canonicalize(d)
            .map(|d| real.starts_with(d))
            .unwrap_or(false)
    });
    if !allowed {
        return Err(SpecError::forbidden(
            field,
            format!(
                "`{p}` is outside the allowed directories; list its directory in config/container/stage_in_dirs to allow it"
            ),
        ));
    }
    rules.host_path(field, p, &real, cfg)?;
    Ok(real)
}

/// Output files: relative (inside the work dir, no `..`) or absolute in an allowed dir.
pub(super) fn output_file(
    field: &str,
    p: &str,
    cfg: &KernelSettings,
    rules: &dyn FieldRules,
) -> Result<(), SpecError> {
    if p.is_empty() {
        return Ok(());
    }
    let path = Path::new(p);
    if p.contains('\0') || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SpecError::invalid(
            field,
            format!("`{p}` may not contain `..`"),
        ));
    }
    if path.is_absolute() {
        let dir = path.parent().unwrap_or(path);
        let dir = dir.to_str().unwrap_or_default();
        allowed_host_path(field, dir, cfg, rules)?;
    }
    Ok(())
}

/// DRMAA2 `inputPath`: a file fed to the command's stdin. Absolute: a regular file inside
/// `container/stage_in_dirs`, which must exist now. Relative: a file in the kernel's work
/// dir, which is empty until the kernel exists — so only a held kernel can have it (upload
/// it, then release); its presence is checked at release.
pub(super) fn input_file(
    spec: &Template,
    cfg: &KernelSettings,
    rules: &dyn FieldRules,
) -> Result<(), SpecError> {
    const FIELD: &str = "input_path";
    let p = spec.input_path.as_str();
    if p.is_empty() {
        return Ok(());
    }
    let path = Path::new(p);
    if p.contains('\0') || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SpecError::invalid(
            FIELD,
            format!("`{p}` may not contain `..`"),
        ));
    }
    if path.is_absolute() {
        let real = allowed_host_path(FIELD, p, cfg, rules)?;
        if !real.is_file() {
            return Err(SpecError::invalid(
                FIELD,
                format!("`{p}` is not a regular file"),
            ));
        }
    } else if !spec.submit_as_hold {
        return Err(SpecError::invalid(
            FIELD,
            format!(
                "`{p}` is relative to the kernel's work dir, which is empty when the kernel starts; \
                 give an absolute path inside config/container/stage_in_dirs, or hold the kernel, \
                 upload the file with `files put` and release it"
            ),
        ));
    }
    Ok(())
}
