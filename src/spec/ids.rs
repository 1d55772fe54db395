//! Kernel ids and job-array ranges (DRMAA2 bulk-job rules).

use serde::{Deserialize, Serialize};

use super::{ArrayRequest, SpecError, MAX_ARRAY_TASKS};

/// The array part of a create request, normalised (step ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayRange {
    pub begin: u32,
    pub end: u32,
    pub step: u32,
    pub max_parallel: u32,
}

impl ArrayRange {
    pub fn indices(&self) -> impl Iterator<Item = u32> {
        (self.begin..=self.end).step_by(self.step as usize)
    }
}

/// DRMAA2 bulk-job rules: begin ≥ 1, end ≥ begin, step ≤ 0 means 1, max_parallel 0 = none.
pub fn validate_array(a: &ArrayRequest) -> Result<ArrayRange, SpecError> {
    if a.begin < 1 {
        return Err(SpecError::invalid("array.begin", "must be at least 1"));
    }
    if a.end < a.begin {
        return Err(SpecError::invalid(
            "array.end",
            format!("{} is smaller than begin {}", a.end, a.begin),
        ));
    }
    let step = if a.step <= 0 { 1 } else { a.step as u32 };
    let range = ArrayRange {
        begin: a.begin,
        end: a.end,
        step,
        max_parallel: a.max_parallel,
    };
    let n = range.indices().count() as u64;
    if n > u64::from(MAX_ARRAY_TASKS) {
        return Err(SpecError::invalid(
            "array",
            format!("{n} tasks; at most {MAX_ARRAY_TASKS} per array"),
        ));
    }
    Ok(range)
}

/// Checks a kernel id: a UUID (as the CLI generates), or a task id `<uuid>.<index>`.
pub fn validate_kernel_id(id: &str) -> Result<(), SpecError> {
    let (base, index) = match id.split_once('.') {
        Some((b, i)) => (b, Some(i)),
        None => (id, None),
    };
    if uuid::Uuid::try_parse(base).is_err() || base.len() != 36 {
        return Err(SpecError::invalid(
            "kernel_id",
            format!("`{id}` is not a UUID (like 3f2b7c1e-0c4d-4e8a-9b1a-2d5e6f7a8b9c)"),
        ));
    }
    if let Some(i) = index {
        if i.parse::<u32>().is_err() {
            return Err(SpecError::invalid(
                "kernel_id",
                format!("`{id}`: a task id is `<array-id>.<index>`"),
            ));
        }
    }
    Ok(())
}
