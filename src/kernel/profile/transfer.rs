//! A profile kernel's resources and results. Resources (`--resources`: `s3://bucket/prefix`
//! from `config/storage/s3`, or a host dir inside `container/stage_in_dirs`) are copied into
//! `<scratch>/<kernel>/resources/` before the kernel is created; that dir is bind-mounted at
//! `RESOURCES_PATH`, so they are there when the command starts. Results (`--results
//! s3://bucket/prefix`): after the kernel ended, what it left in its results dir
//! (`RESOURCES_PATH`, or `--results-path`) is uploaded while it reads UPLOADING; a failed
//! upload ends it FAILED with the reason.
//!
//! Files stream through fixed-size buffers (S3 multipart for large ones); symbolic links are
//! never followed (a kernel cannot make the agent read host files). Progress is a kernel
//! event at most once a second, and once at the end. The S3 secret never appears in a
//! message.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

use crate::config::profiles::S3Settings;
use crate::config::schema::show_bytes;
use crate::config::ClusterConfig;
use crate::kernel::error::KernelError;
use crate::kernel::record::Record;
use crate::kernel::state::{KernelState, Transition};
use crate::kernel::supervisor::Supervisor;
use crate::runtime::RuntimeError;
use crate::spec::profile::{S3Location, Source};
use crate::spec::WORK_DIR;

/// The resources dir inside a kernel's scratch dir.
pub const RESOURCES_DIR: &str = "resources";
/// How often transfer progress becomes an event.
const NOTE_EVERY: Duration = Duration::from_secs(1);

/// Files and bytes moved so far, reported at most once a second.
struct Tally<'a> {
    files: u64,
    bytes: u64,
    last: Instant,
    report: Box<dyn FnMut(u64, u64) + Send + 'a>,
}

impl<'a> Tally<'a> {
    fn new(report: impl FnMut(u64, u64) + Send + 'a) -> Self {
        Self {
            files: 0,
            bytes: 0,
            last: Instant::now(),
            report: Box::new(report),
        }
    }

    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
        if self.last.elapsed() >= NOTE_EVERY {
            (self.report)(self.files, self.bytes);
            self.last = Instant::now();
        }
    }
}

fn store(s3: &S3Settings, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
    s3.store(bucket)
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
}

fn prefix_path(loc: &S3Location) -> Option<ObjectPath> {
    (!loc.prefix.is_empty()).then(|| ObjectPath::from(loc.prefix.as_str()))
}

/// `rel` as a relative path of plain components (nothing that leaves its dir).
fn safe_relative(rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

/// Every object under `loc` into `dir`.
async fn download(
    s3: &S3Settings,
    loc: &S3Location,
    dir: &Path,
    uid: u32,
    gid: u32,
    tally: &mut Tally<'_>,
) -> Result<(), String> {
    let store = store(s3, &loc.bucket)?;
    let prefix = prefix_path(loc);
    let objects: Vec<object_store::ObjectMeta> = store
        .list(prefix.as_ref())
        .try_collect()
        .await
        .map_err(|e| s3.scrub(&format!("listing {loc}: {e}")))?;
    for meta in objects {
        let key = meta.location.to_string();
        let rel = match &prefix {
            Some(p) => key
                .strip_prefix(p.as_ref())
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(&key),
            None => key.as_str(),
        };
        let Some(rel) = safe_relative(rel) else {
            continue;
        };
        let target = dir.join(&rel);
        make_dirs(dir, &rel, uid, gid)?;
        let mut file = tokio::fs::File::create(&target)
            .await
            .map_err(|e| format!("{}: {e}", target.display()))?;
        let mut body = store
            .get(&meta.location)
            .await
            .map_err(|e| s3.scrub(&format!("s3://{}/{key}: {e}", loc.bucket)))?
            .into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| s3.scrub(&format!("s3://{}/{key}: {e}", loc.bucket)))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("{}: {e}", target.display()))?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        let _ = std::os::unix::fs::lchown(&target, Some(uid), Some(gid));
        tally.add(meta.size);
    }
    Ok(())
}

/// Creates the dirs of `rel` under `dir`, owned by the kernel.
fn make_dirs(dir: &Path, rel: &Path, uid: u32, gid: u32) -> Result<(), String> {
    let mut at = dir.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            at.push(c);
            if !at.is_dir() {
                std::fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?;
                let _ = std::os::unix::fs::lchown(&at, Some(uid), Some(gid));
            }
        }
    }
    Ok(())
}

/// Regular files under `root` (relative paths), symlinks never followed, never leaving it.
async fn files_under(root: &Path) -> Result<Vec<PathBuf>, String> {
    let base = std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let here = base.join(&rel);
        // A dir swapped for a link while walking would lead out: look where it really is.
        if !std::fs::canonicalize(&here).is_ok_and(|p| p.starts_with(&base)) {
            continue;
        }
        let mut entries = tokio::fs::read_dir(&here)
            .await
            .map_err(|e| format!("{}: {e}", here.display()))?;
        while let Some(entry) = entries.next_entry().await.map_err(|e| e.to_string())? {
            let Ok(kind) = entry.file_type().await else {
                continue;
            };
            let child = rel.join(entry.file_name());
            if kind.is_dir() {
                dirs.push(child);
            } else if kind.is_file() {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Opens a file for reading without following a link in its last component.
async fn open_plain(path: &Path) -> std::io::Result<tokio::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    Ok(tokio::fs::File::from_std(f))
}

/// Every file of a host dir into `dir`.
async fn copy_dir(
    src: &Path,
    dir: &Path,
    uid: u32,
    gid: u32,
    tally: &mut Tally<'_>,
) -> Result<(), String> {
    for rel in files_under(src).await? {
        make_dirs(dir, &rel, uid, gid)?;
        let target = dir.join(&rel);
        let mut from = open_plain(&src.join(&rel))
            .await
            .map_err(|e| format!("{}: {e}", src.join(&rel).display()))?;
        let mut to = tokio::fs::File::create(&target)
            .await
            .map_err(|e| format!("{}: {e}", target.display()))?;
        let n = tokio::io::copy(&mut from, &mut to)
            .await
            .map_err(|e| format!("{}: {e}", target.display()))?;
        let _ = std::os::unix::fs::lchown(&target, Some(uid), Some(gid));
        tally.add(n);
    }
    Ok(())
}

/// Every file under `dir` to `loc`, each through a multipart-capable buffered writer.
async fn upload(
    s3: &S3Settings,
    loc: &S3Location,
    dir: &Path,
    tally: &mut Tally<'_>,
) -> Result<(), String> {
    let store = store(s3, &loc.bucket)?;
    for rel in files_under(dir).await? {
        let rel_text = rel.to_string_lossy();
        let key = if loc.prefix.is_empty() {
            rel_text.to_string()
        } else {
            format!("{}/{rel_text}", loc.prefix)
        };
        let mut from = open_plain(&dir.join(&rel))
            .await
            .map_err(|e| format!("{rel_text}: {e}"))?;
        let mut to =
            object_store::buffered::BufWriter::new(store.clone(), ObjectPath::from(key.as_str()));
        let copied = tokio::io::copy(&mut from, &mut to).await;
        let closed = to.shutdown().await;
        let n = copied
            .and_then(|n| closed.map(|()| n))
            .map_err(|e| s3.scrub(&format!("s3://{}/{key}: {e}", loc.bucket)))?;
        tally.add(n);
    }
    Ok(())
}

impl Supervisor {
    /// Makes the kernel's resources dir (mounted at `RESOURCES_PATH`) and copies its
    /// resources in, with progress events.
    pub(crate) async fn stage_resources(
        &self,
        rec: &Record,
        cfg: &ClusterConfig,
    ) -> Result<(), KernelError> {
        let Some(profile) = &rec.spec.profile else {
            return Ok(());
        };
        if rec.scratch_dir.is_empty() {
            return Ok(());
        }
        let (uid, gid) = (cfg.kernel.uid, cfg.kernel.gid);
        let home = PathBuf::from(&rec.scratch_dir);
        let dir = home.join(RESOURCES_DIR);
        let made = (|| {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&home)?;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)?;
            std::os::unix::fs::lchown(&home, Some(uid), Some(gid))?;
            std::os::unix::fs::lchown(&dir, Some(uid), Some(gid))
        })();
        made.map_err(|e| RuntimeError::Failed(format!("cannot make {}: {e}", dir.display())))?;
        let Some(source) = &profile.resources else {
            return Ok(());
        };
        let (what, result) = {
            let me = self.clone();
            let id = rec.id.clone();
            let what = match source {
                Source::S3(loc) => loc.to_string(),
                Source::Dir(d) => d.display().to_string(),
            };
            let shown = what.clone();
            let mut tally = Tally::new(move |files, bytes| {
                me.note(
                    &id,
                    format!(
                        "resources: {files} files, {} from {shown} so far",
                        show_bytes(bytes)
                    ),
                    None,
                )
            });
            let r = match source {
                Source::S3(loc) => match &cfg.storage {
                    Some(s3) => download(s3, loc, &dir, uid, gid, &mut tally).await,
                    None => Err("config/storage/s3 is no longer set".into()),
                },
                Source::Dir(src) => copy_dir(src, &dir, uid, gid, &mut tally).await,
            };
            (what, r.map(|()| (tally.files, tally.bytes)))
        };
        match result {
            Ok((files, bytes)) => {
                self.note(
                    &rec.id,
                    format!(
                        "resources: {files} files, {} from {what} in {}",
                        show_bytes(bytes),
                        profile.resources_path
                    ),
                    None,
                );
                Ok(())
            }
            Err(e) => Err(RuntimeError::Failed(format!("resources from {what}: {e}")).into()),
        }
    }

    /// After the kernel ended: uploads its results (it reads UPLOADING meanwhile), then
    /// ends it DONE or FAILED.
    pub(crate) async fn upload_results(self, id: String) {
        let Ok(rec) = self.record(&id) else { return };
        let Some(profile) = rec.spec.profile.clone() else {
            return;
        };
        let Some(loc) = profile.results.clone() else {
            return;
        };
        let cfg = self.config();
        let home = PathBuf::from(&rec.scratch_dir);
        let path = profile.results_path.as_str();
        let dir = match path.strip_prefix(profile.resources_path.as_str()) {
            Some(rest) => home.join(RESOURCES_DIR).join(rest.trim_start_matches('/')),
            None => home.join("work").join(
                path.strip_prefix(WORK_DIR)
                    .unwrap_or("")
                    .trim_start_matches('/'),
            ),
        };
        let mut state = match self.lock().kernels.get(&id) {
            Some(e) => e.state.subscribe(),
            None => return,
        };
        let me = self.clone();
        let kid = id.clone();
        let shown = loc.to_string();
        let mut tally = Tally::new(move |files, bytes| {
            me.note(
                &kid,
                format!(
                    "results: {files} files, {} to {shown} so far",
                    show_bytes(bytes)
                ),
                None,
            )
        });
        let result = tokio::select! {
            r = async {
                match &cfg.storage {
                    Some(s3) if dir.is_dir() => upload(s3, &loc, &dir, &mut tally).await,
                    Some(_) => Ok(()),
                    None => Err("config/storage/s3 is not set".to_string()),
                }
            } => r,
            // Removed by force meanwhile: nothing to finish.
            _ = state.wait_for(|s| s.is_final()) => return,
        };
        let (files, bytes) = (tally.files, tally.bytes);
        let mut t = self.lock();
        let Some(e) = t.kernels.get(&id) else { return };
        if e.rec.state != KernelState::Uploading {
            return;
        }
        let exited_ok = e.rec.exit_code == Some(0) && !e.rec.oom_killed;
        let _ = match result {
            Ok(()) => self.transition(
                &mut t,
                &id,
                Transition::Uploaded { success: exited_ok },
                |r| {
                    r.reason = format!(
                        "{}; results: {files} files, {} uploaded to {loc}",
                        r.reason,
                        show_bytes(bytes)
                    );
                },
            ),
            Err(err) => {
                self.transition(&mut t, &id, Transition::Uploaded { success: false }, |r| {
                    r.reason = format!(
                        "results upload to {loc} failed: {err} (the command had {})",
                        r.reason
                    );
                })
            }
        };
    }
}
