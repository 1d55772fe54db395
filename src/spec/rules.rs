//! What the runtime a kernel runs on adds to the rules of single fields ([`FieldRules`]):
//! Docker refuses its own socket as a host path, network modes it cannot give and memory
//! below its minimum. Spec validation asks these at the field's place among the generic
//! checks, so a request's first problem does not depend on who checks it. A runtime's rules
//! over the whole spec are [`Runtime::validate`](crate::runtime::Runtime::validate).

use std::path::Path;

use super::SpecError;
use crate::config::cluster::KernelSettings;

/// A runtime's rules of single fields; each default allows what the generic checks allowed.
pub trait FieldRules: Send + Sync {
    /// A host path a kernel would see (a stage-in mount, an output file's dir, the input
    /// file, a resources dir), asked right after it is found inside
    /// `container/stage_in_dirs`: `path` as given, `real` resolved.
    fn host_path(
        &self,
        field: &str,
        path: &str,
        real: &Path,
        cfg: &KernelSettings,
    ) -> Result<(), SpecError> {
        let _ = (field, path, real, cfg);
        Ok(())
    }

    /// A network mode other than the default (empty), before host namespaces are checked.
    fn network_mode(&self, mode: &str) -> Result<(), SpecError> {
        let _ = mode;
        Ok(())
    }

    /// A memory limit: `shown` as the request wrote it, `bytes` parsed.
    fn memory(&self, shown: &str, bytes: u64) -> Result<(), SpecError> {
        let _ = (shown, bytes);
        Ok(())
    }
}

/// No rules beyond the generic ones (a runtime without field rules; adoption, tests).
pub struct NoFieldRules;

impl FieldRules for NoFieldRules {}
