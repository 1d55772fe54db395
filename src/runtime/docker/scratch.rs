//! Scratch homes of Docker kernels, under the scratch root:
//!
//! ```text
//! <root>/<kernel-id>/            0700, kernel uid:gid
//! <root>/<kernel-id>/work/       → /home/work (rw)
//! <root>/<kernel-id>/config/     → /home/config (ro): environ.txt resource.txt kernel.json
//! <root>/.deckhand/images.json  when kernels last used each image (image GC)
//! <root>/processes/<process-id>/  process data shared by kernels of one process (0700)
//! ```
//! (The kernel registry, `<root>/.deckhand/kernels/`, belongs to the supervisor.)
//! Every path that comes from a request is resolved here and refused when it would leave
//! its directory (`..`, absolute paths, symlinks leading out).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("path `{0}`: {1}")]
    Refused(String, &'static str),
    #[error("path `{0}`: {1}")]
    Io(String, std::io::Error),
}

impl From<PathError> for crate::runtime::RuntimeError {
    fn from(e: PathError) -> Self {
        let msg = e.to_string();
        match e {
            PathError::Refused(..) => Self::Invalid(msg),
            PathError::Io(_, io) if io.kind() == std::io::ErrorKind::NotFound => {
                Self::NotFound(msg)
            }
            PathError::Io(..) => Self::Failed(msg),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scratch {
    root: PathBuf,
}

impl Scratch {
    pub fn new(root: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(root)?;
        let root = fs::canonicalize(root)?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<id>`; ids are validated UUIDs (or `<uuid>.<n>`), but check anyway.
    pub fn kernel_dir(&self, id: &str) -> Result<PathBuf, PathError> {
        let p = Path::new(id);
        let single = p.components().count() == 1
            && matches!(p.components().next(), Some(Component::Normal(_)))
            && !id.starts_with('.');
        if !single {
            return Err(PathError::Refused(
                id.into(),
                "would leave the scratch root",
            ));
        }
        Ok(self.root.join(id))
    }

    pub fn work_dir(&self, id: &str) -> Result<PathBuf, PathError> {
        Ok(self.kernel_dir(id)?.join("work"))
    }

    /// Creates the kernel's dirs and config files, owned by `uid:gid`.
    pub fn prepare(
        &self,
        id: &str,
        uid: u32,
        gid: u32,
        files: &[(&str, String)],
    ) -> Result<PathBuf, PathError> {
        let dir = self.kernel_dir(id)?;
        let io = |e| PathError::Io(dir.display().to_string(), e);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(io(e))
                }
            })?;
        let work = dir.join("work");
        let config = dir.join("config");
        for d in [&work, &config] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(d)
                .map_err(io)?;
        }
        for (name, content) in files {
            let path = config.join(name);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&path)
                .map_err(io)?;
            f.write_all(content.as_bytes()).map_err(io)?;
            chown(&path, uid, gid).map_err(io)?;
        }
        for d in [&dir, &work, &config] {
            chown(d, uid, gid).map_err(io)?;
        }
        Ok(dir)
    }

    /// `<root>/processes/<process-id>`: the process data of kernels sharing a process id,
    /// created 0700 for the kernel uid:gid.
    pub fn process_dir(&self, process_id: &str, uid: u32, gid: u32) -> std::io::Result<PathBuf> {
        let dir = self.root.join("processes").join(process_id);
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(self.root.join("processes"))?;
            fs::DirBuilder::new().mode(0o700).create(&dir)?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        Ok(dir)
    }

    /// Removes scratch dirs named like kernels that `owned` does not hold (unless `keep`)
    /// and process dirs no kernel of `processes` uses; returns what it removed.
    pub fn remove_orphans(
        &self,
        owned: &std::collections::BTreeSet<&str>,
        processes: &std::collections::BTreeSet<&str>,
        keep: bool,
    ) -> Vec<String> {
        let mut removed = Vec::new();
        let entries = fs::read_dir(&self.root).into_iter().flatten().flatten();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().to_string();
            if crate::spec::validate_kernel_id(&name).is_err() || owned.contains(name.as_str()) {
                continue;
            }
            if keep {
                tracing::info!(dir = %entry.path().display(), "scratch dir without a kernel kept (container/keep_scratch)");
                continue;
            }
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::warn!(dir = %entry.path().display(), "removed a scratch dir that no kernel owns");
                    removed.push(entry.path().display().to_string());
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove an orphan scratch dir")
                }
            }
        }
        let dirs = fs::read_dir(self.root.join("processes"))
            .into_iter()
            .flatten()
            .flatten();
        for entry in dirs {
            let path = entry.path().display().to_string();
            if processes.contains(entry.file_name().to_string_lossy().as_ref()) {
                continue;
            }
            if fs::remove_dir_all(entry.path()).is_ok() {
                tracing::warn!(dir = %path, "removed a process data dir that no kernel uses");
                removed.push(path);
            }
        }
        removed
    }

    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        let Ok(dir) = self.kernel_dir(id) else {
            return Ok(());
        };
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Resolves a request path inside `base` (a kernel's work dir): relative, no `..`, and after
/// following symlinks still inside `base`. The final component need not exist when
/// `must_exist` is false (uploads).
pub fn resolve_inside(base: &Path, rel: &str, must_exist: bool) -> Result<PathBuf, PathError> {
    let refuse = |why| Err(PathError::Refused(rel.into(), why));
    let p = Path::new(rel);
    if rel.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if p.is_absolute() {
        return refuse("must be relative to /home/work");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return refuse("may not contain `..`");
    }
    let base = fs::canonicalize(base).map_err(|e| PathError::Io(rel.into(), e))?;
    let joined = base.join(p);
    let resolved = match fs::canonicalize(&joined) {
        Ok(r) => r,
        Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => {
            // The parent must exist and be inside; the new name must not be a dangling link.
            let parent = joined.parent().unwrap_or(&base);
            let parent = fs::canonicalize(parent).map_err(|e| PathError::Io(rel.into(), e))?;
            if fs::symlink_metadata(&joined).is_ok() {
                return refuse("is a symlink leading out of /home/work");
            }
            match joined.file_name() {
                Some(name) => parent.join(name),
                None => return refuse("names no file"),
            }
        }
        Err(e) => return Err(PathError::Io(rel.into(), e)),
    };
    if !resolved.starts_with(&base) {
        return refuse("leads out of /home/work");
    }
    Ok(resolved)
}

/// Sets the mode of a file written for a kernel and hands it to the kernel's uid.
pub fn hand_over(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    chown(path, uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_cannot_leave_the_work_dir() {
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("work");
        fs::create_dir_all(work.join("sub")).unwrap();
        fs::write(t.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), work.join("link")).unwrap();
        assert!(resolve_inside(&work, "sub/new.txt", false).is_ok());
        for bad in ["../secret", "/etc/passwd", "sub/../../secret", "link"] {
            assert!(resolve_inside(&work, bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_kernel_id_cannot_name_a_dir_outside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let s = Scratch::new(t.path()).unwrap();
        assert!(s.kernel_dir("../x").is_err());
        assert!(s.kernel_dir(".deckhand").is_err());
        assert!(s.kernel_dir("a/b").is_err());
        assert!(s
            .kernel_dir("3f2b7c1e-0c4d-4e8a-9b1a-2d5e6f7a8b9c.1")
            .is_ok());
    }
}
