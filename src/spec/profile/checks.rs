//! The per-feature checks of a profile kernel: command lines (`DOCKER_CMD*`), progress
//! regexes (`DOCKER_PROGRESS1..3`), S3 locations and settings, the resources source and the
//! results dir.

use super::{S3Location, Source};
use crate::config::profiles::S3Settings;
use crate::config::ClusterConfig;
use crate::spec::paths::{allowed_host_path, container_path};
use crate::spec::{FieldRules, SpecError, WORK_DIR};

/// A command line split as a POSIX shell would (quotes, backslashes); empty: none.
pub fn command_line(field: &str, line: &str) -> Result<Vec<String>, SpecError> {
    if line.trim().is_empty() {
        return Ok(Vec::new());
    }
    shlex::split(line).ok_or_else(|| {
        SpecError::invalid(field, "unbalanced quotes: write it as a shell command line")
    })
}

/// Checks a progress regex: it compiles (size-bounded) and has a capture group.
pub fn progress_regex(name: &str, re: &str) -> Result<regex::Regex, SpecError> {
    let field = format!("constants[{name}]");
    let compiled = regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| SpecError::invalid(&field, format!("not a regular expression: {e}")))?;
    if compiled.captures_len() < 2 {
        return Err(SpecError::invalid(
            field,
            "has no capture group: put the progress number in ( ), like `step (\\d+)/100`",
        ));
    }
    Ok(compiled)
}

/// `s3://bucket/prefix`, naming `field` when it is not one.
pub(super) fn s3_location(field: &str, v: &str) -> Result<S3Location, SpecError> {
    let rest = v
        .strip_prefix("s3://")
        .ok_or_else(|| SpecError::invalid(field, format!("`{v}` is not `s3://bucket/prefix`")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let ok_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok_bucket || prefix.contains("..") || prefix.chars().any(char::is_control) {
        return Err(SpecError::invalid(
            field,
            format!("`{v}` is not `s3://bucket/prefix` (a bucket is 3-63 of a-z 0-9 - .)"),
        ));
    }
    Ok(S3Location {
        bucket: bucket.into(),
        prefix: prefix.trim_matches('/').into(),
    })
}

/// The S3 settings, or FAILED_PRECONDITION naming the missing one.
pub fn s3_settings<'a>(field: &str, cfg: &'a ClusterConfig) -> Result<&'a S3Settings, SpecError> {
    cfg.storage.as_ref().ok_or_else(|| {
        SpecError::forbidden(
            field,
            "S3 is not set up on this agent: set config/storage/s3/access_key and secret_key (and endpoint for a non-AWS server)",
        )
    })
}

pub(super) fn resources(
    v: &str,
    cfg: &ClusterConfig,
    rules: &dyn FieldRules,
) -> Result<Option<Source>, SpecError> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.starts_with("s3://") {
        let loc = s3_location("resources", v)?;
        s3_settings("resources", cfg)?;
        return Ok(Some(Source::S3(loc)));
    }
    let dir = allowed_host_path("resources", v, &cfg.kernel, rules)?;
    if !dir.is_dir() {
        return Err(SpecError::invalid(
            "resources",
            format!("`{v}` is not a directory (give a host dir or s3://bucket/prefix)"),
        ));
    }
    Ok(Some(Source::Dir(dir)))
}

/// The results dir: `RESOURCES_PATH` or a dir under it or under the kernel's home.
pub(super) fn results_path(v: &str, resources_path: &str) -> Result<String, SpecError> {
    if v.is_empty() {
        return Ok(resources_path.to_string());
    }
    container_path("results_path", v)?;
    let p = v.trim_end_matches('/');
    let inside = |base: &str| p == base || p.starts_with(&format!("{base}/"));
    if !inside(resources_path) && !inside(WORK_DIR) {
        return Err(SpecError::invalid(
            "results_path",
            format!(
                "`{v}` is neither under RESOURCES_PATH ({resources_path}) nor under {}",
                WORK_DIR
            ),
        ));
    }
    Ok(p.to_string())
}
