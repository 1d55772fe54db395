//! What a Docker kernel has on this host beside its container: the files of its
//! `/home/config`, its process data (a named volume or a host dir shared by the kernels of
//! one process), its output/error files, its input file fed to stdin, and file transfers in
//! its `/home/work`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::client::Docker;
use super::scratch::{self, PathError, Scratch};
use crate::config::schema::show_bytes;
use crate::config::ClusterConfig;
use crate::runtime::Launch;
use crate::runtime::{FileEntry, RuntimeError, MAX_DOWNLOAD, MAX_UPLOAD};
use crate::spec::SpecError;

/// Process data shared by the kernels of one `process_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessData {
    /// A named Docker volume (`docker/shared_process_volume = true`).
    Volume(String),
    /// A host directory under the scratch root.
    Dir(String),
}

impl ProcessData {
    /// The container label value that records it (`volume:NAME`, `dir:/PATH`).
    pub fn label(&self) -> String {
        match self {
            Self::Volume(n) => format!("volume:{n}"),
            Self::Dir(d) => format!("dir:{d}"),
        }
    }

    pub fn from_label(v: &str) -> Option<Self> {
        match v.split_once(':')? {
            ("volume", n) => Some(Self::Volume(n.into())),
            ("dir", d) => Some(Self::Dir(d.into())),
            _ => None,
        }
    }
}

/// `environ.txt`, `resource.txt` and `kernel.json` for `/home/config`. Secret values are
/// left out of all three (the container's environment has them).
pub fn config_files(rec: &Launch, agent_id: &str) -> Vec<(&'static str, String)> {
    let mut environ = String::new();
    for (k, v) in &rec.spec.env {
        if rec.spec.secret_names.contains(k) || rec.shown_spec.secret_env.contains_key(k) {
            continue;
        }
        environ.push_str(&format!("{k}={v}\n"));
    }
    let slots = rec.slots.clone().unwrap_or_default();
    let mut resource = format!(
        "CPU={}\nMEMORY={}\nGPU_COUNT={}\nGPUS={}\n",
        slots.cpu,
        slots.memory,
        slots.gpus.len(),
        slots.gpus.join(",")
    );
    let ports: Vec<String> = rec
        .published_ports()
        .map(|p| format!("{}/{}={}", p.container, p.protocol, p.host))
        .collect();
    resource.push_str(&format!("PORTS={}\nAGENT_ID={agent_id}\n", ports.join(",")));
    let kernel_json = serde_json::to_string_pretty(&rec.shown_spec).unwrap_or_default();
    vec![
        ("environ.txt", environ),
        ("resource.txt", resource),
        ("kernel.json", kernel_json),
    ]
}

/// Makes the kernel's home (`work/`, `config/` with its files).
pub fn prepare_home(
    scratch: &Scratch,
    rec: &Launch,
    agent_id: &str,
    cfg: &ClusterConfig,
) -> Result<(), PathError> {
    let files = config_files(rec, agent_id);
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (*n, c.clone())).collect();
    scratch.prepare(&rec.id, cfg.kernel.uid, cfg.kernel.gid, &files)?;
    Ok(())
}

/// Decides where the kernel's process data lives (when it has a `process_id`) and makes
/// sure it exists: a named volume shared by the process's kernels, or a host directory
/// under the scratch root.
pub async fn prepare_process_data(
    docker: &Docker,
    scratch: &Scratch,
    namespace: &str,
    agent_id: &str,
    rec: &Launch,
    cfg: &ClusterConfig,
) -> Result<Option<ProcessData>, RuntimeError> {
    let pid = &rec.spec.process_id;
    if pid.is_empty() {
        return Ok(None);
    }
    if cfg.docker.shared_process_volume {
        let name = format!("deckhand-{namespace}-process-{pid}");
        let mountpoint = docker
            .create_volume(&name, namespace, agent_id, pid)
            .await?;
        // A new volume belongs to root; the kernels run as the kernel uid.
        let path = Path::new(&mountpoint);
        if std::fs::metadata(path).is_ok_and(|m| m.uid() == 0) {
            if let Err(e) =
                std::os::unix::fs::chown(path, Some(cfg.kernel.uid), Some(cfg.kernel.gid))
            {
                tracing::warn!(volume = %name, "cannot hand the process volume to the kernel uid: {e}");
            }
        }
        Ok(Some(ProcessData::Volume(name)))
    } else {
        let dir = scratch
            .process_dir(pid, cfg.kernel.uid, cfg.kernel.gid)
            .map_err(|e| {
                RuntimeError::Failed(format!("cannot create the process data dir: {e}"))
            })?;
        Ok(Some(ProcessData::Dir(dir.display().to_string())))
    }
}

/// Removes a process's data (its last kernel is gone).
pub async fn release_process_data(docker: &Docker, data: &ProcessData) {
    let result = match data {
        ProcessData::Volume(name) => docker.remove_volume(name).await.map_err(|e| e.to_string()),
        ProcessData::Dir(dir) => std::fs::remove_dir_all(dir).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => tracing::info!(process_data = ?data, "process data removed with its last kernel"),
        Err(e) => tracing::warn!(process_data = ?data, "cannot remove process data: {e}"),
    }
}

/// The host file a kernel's stdin comes from (DRMAA2 `inputPath`), if it has one: an
/// absolute path (checked by spec validation) or a file in its work dir, which must exist
/// by now (INVALID_ARGUMENT naming `input_path` otherwise).
pub fn input_file(scratch: &Scratch, rec: &Launch) -> Result<Option<PathBuf>, RuntimeError> {
    let p = &rec.spec.input_path;
    if p.is_empty() {
        return Ok(None);
    }
    if Path::new(p).is_absolute() {
        return Ok(Some(PathBuf::from(p)));
    }
    let work = scratch.work_dir(&rec.id)?;
    match scratch::resolve_inside(&work, p, true) {
        Ok(path) if path.is_file() => Ok(Some(path)),
        _ => Err(RuntimeError::Invalid(
            SpecError::invalid(
                "input_path",
                format!("`{p}` is not a file in the kernel's work dir; upload it with `deckhand files put` first"),
            )
            .to_string(),
        )),
    }
}

/// Copies the input file into the kernel's stdin, then closes it (the command reads EOF).
pub async fn feed_input(
    kernel_id: String,
    path: PathBuf,
    mut stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) {
    let sent = async {
        let mut file = tokio::fs::File::open(&path).await?;
        let n = tokio::io::copy(&mut file, &mut stdin).await?;
        stdin.shutdown().await?;
        Ok::<u64, std::io::Error>(n)
    };
    match sent.await {
        Ok(n) => tracing::debug!(kernel_id = %kernel_id, bytes = n, "input fed to stdin"),
        Err(e) => {
            tracing::warn!(kernel_id = %kernel_id, input = %path.display(), error = %e, "cannot feed the input file to stdin")
        }
    }
}

/// Writes the kernel's stdout/stderr to its output/error files as they come.
pub async fn copy_output(docker: Docker, rec: Launch, container_id: String, uid: u32, gid: u32) {
    let work = PathBuf::from(&rec.scratch_dir).join("work");
    let open = |p: &str| {
        let path = if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            work.join(p)
        };
        async move {
            if let Some(parent) = path.parent() {
                let _ = tokio::fs::create_dir_all(parent).await;
            }
            tokio::fs::File::create(&path).await.ok()
        }
    };
    let same = rec.spec.error_path == rec.spec.output_path;
    let mut out = if rec.spec.output_path.is_empty() {
        None
    } else {
        open(&rec.spec.output_path).await
    };
    let mut err = if rec.spec.error_path.is_empty() || same {
        None
    } else {
        open(&rec.spec.error_path).await
    };
    let mut logs = docker.logs(&container_id, true, 0);
    while let Some(Ok(chunk)) = logs.next().await {
        let target = match (chunk.stderr, same) {
            (false, _) | (true, true) => out.as_mut(),
            (true, false) => err.as_mut(),
        };
        if let Some(f) = target {
            let _ = f.write_all(&chunk.data).await;
        }
    }
    for f in [out.as_mut(), err.as_mut()].into_iter().flatten() {
        let _ = f.flush().await;
    }
    for p in [&rec.spec.output_path, &rec.spec.error_path] {
        if !p.is_empty() && !Path::new(p).is_absolute() {
            let _ = scratch::hand_over(&work.join(p), uid, gid);
        }
    }
}

/// Writes an uploaded file into the kernel's work dir, owned by the kernel uid.
pub async fn upload(
    scratch: &Scratch,
    id: &str,
    path: &str,
    content: &[u8],
    cfg: &ClusterConfig,
) -> Result<u64, RuntimeError> {
    if content.len() > MAX_UPLOAD {
        return Err(RuntimeError::Invalid(
            SpecError::invalid(
                "content",
                format!(
                    "{} bytes; uploads are at most {}",
                    content.len(),
                    show_bytes(MAX_UPLOAD as u64)
                ),
            )
            .to_string(),
        ));
    }
    let work = scratch.work_dir(id)?;
    let target = scratch::resolve_inside(&work, path, false)?;
    if target == std::fs::canonicalize(&work).unwrap_or_default() {
        return Err(PathError::Refused(path.into(), "names the work dir itself").into());
    }
    tokio::fs::write(&target, content)
        .await
        .map_err(|e| PathError::Io(path.into(), e))?;
    scratch::hand_over(&target, cfg.kernel.uid, cfg.kernel.gid)
        .map_err(|e| PathError::Io(path.into(), e))?;
    Ok(content.len() as u64)
}

pub async fn download(scratch: &Scratch, id: &str, path: &str) -> Result<Vec<u8>, RuntimeError> {
    let work = scratch.work_dir(id)?;
    let target = scratch::resolve_inside(&work, path, true)?;
    let meta = std::fs::metadata(&target).map_err(|e| PathError::Io(path.into(), e))?;
    if !meta.is_file() {
        return Err(PathError::Refused(path.into(), "is not a regular file").into());
    }
    if meta.len() > MAX_DOWNLOAD {
        return Err(RuntimeError::Exhausted(format!(
            "path `{path}`: {} is over the {} download limit",
            show_bytes(meta.len()),
            show_bytes(MAX_DOWNLOAD)
        )));
    }
    Ok(tokio::fs::read(&target)
        .await
        .map_err(|e| PathError::Io(path.into(), e))?)
}

pub fn list_files(scratch: &Scratch, id: &str, path: &str) -> Result<Vec<FileEntry>, RuntimeError> {
    let work = scratch.work_dir(id)?;
    let base = std::fs::canonicalize(&work).map_err(|e| PathError::Io(path.into(), e))?;
    let dir = if path.is_empty() || path == "." {
        base.clone()
    } else {
        scratch::resolve_inside(&work, path, true)?
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| PathError::Io(path.into(), e))? {
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        let rel = entry
            .path()
            .strip_prefix(&base)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        out.push(FileEntry {
            path: rel,
            size: meta.len(),
            dir: meta.is_dir(),
            modified_ms: meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
