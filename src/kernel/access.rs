//! Reaching into an existing kernel through its runtime: its logs, exec in it, and the
//! files of its home (upload, download, list). A cluster kernel's instance is named
//! `<kernel-id>/<index>` (logs and exec act on that instance; files are the kernel's, which
//! every instance shares). What the kernel's state does not allow is FAILED_PRECONDITION;
//! what its runtime cannot do says so ("exec is not supported by the vastai runtime").

use super::error::KernelError;
use super::record::Record;
use super::state::KernelState;
use super::supervisor::Supervisor;
use crate::runtime::{ChunkStream, Exec, ExecOutput, FileEntry, Handle, Runtime, RuntimeError};
use crate::spec::SpecError;

impl Supervisor {
    /// A kernel id, or one instance of a cluster kernel as `<kernel-id>/<index>`.
    fn split_instance(id: &str) -> Result<(&str, Option<u32>), KernelError> {
        match id.split_once('/') {
            None => Ok((id, None)),
            Some((kid, i)) => match i.parse::<u32>() {
                Ok(i) => Ok((kid, Some(i))),
                Err(_) => Err(SpecError::invalid(
                    "kernel_id",
                    format!("`{id}`: one instance of a cluster kernel is `<kernel-id>/<index>`"),
                )
                .into()),
            },
        }
    }

    /// The handle to act on: the kernel's, or that of one of its instances.
    fn instance_handle(
        rec: &Record,
        rt: &dyn Runtime,
        index: Option<u32>,
        what: &str,
    ) -> Result<Handle, KernelError> {
        let Some(h) = &rec.handle else {
            return Err(Self::wrong(what, rec.state));
        };
        Ok(match index {
            None => h.clone(),
            Some(i) => rt.member(h, i)?,
        })
    }

    /// Files live in the kernel's home, which every instance of a cluster shares: an
    /// instance id names the kernel's files, once its index is checked.
    fn files_target(&self, id: &str) -> Result<String, KernelError> {
        let (kid, index) = Self::split_instance(id)?;
        if let Some(i) = index {
            let n = self
                .with_record(kid, |r| r.spec.instances())
                .ok_or_else(|| KernelError::NotFound(kid.to_string()))?;
            if n < 2 || i >= n {
                return Err(RuntimeError::NotFound(format!(
                    "{id}: {}",
                    if n < 2 {
                        "the kernel is not a cluster kernel (it has no instances)".to_string()
                    } else {
                        format!("the cluster has instances 0 to {}", n - 1)
                    }
                ))
                .into());
            }
        }
        Ok(kid.to_string())
    }

    pub fn logs(&self, id: &str, follow: bool, tail: u32) -> Result<ChunkStream, KernelError> {
        let (kid, index) = Self::split_instance(id)?;
        let (rec, rt) = self.with_runtime(kid)?;
        if rec.handle.is_none() {
            return Err(KernelError::WrongState(format!(
                "kernel `{kid}` has no container yet ({})",
                rec.state
            )));
        }
        let h = Self::instance_handle(&rec, rt.as_ref(), index, "read the logs of")?;
        Ok(rt.logs(&h, follow, tail)?)
    }

    pub async fn exec(&self, id: &str, req: Exec) -> Result<ExecOutput, KernelError> {
        let (id, index) = Self::split_instance(id)?;
        let (rec, rt) = self.capable(id, "exec", |c| c.exec)?;
        if rec.state != KernelState::Running {
            return Err(Self::wrong("exec in", rec.state));
        }
        if req.command.is_empty() {
            return Err(SpecError::invalid("command", "give the command to run").into());
        }
        for k in req.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(SpecError::invalid(format!("env[{k:?}]"), "bad variable name").into());
            }
        }
        let h = Self::instance_handle(&rec, rt.as_ref(), index, "exec in")?;
        Ok(rt.exec(&rec, &h, req).await?)
    }

    /// Resizes the terminal of an exec in kernel `id`.
    pub async fn resize_exec(
        &self,
        id: &str,
        exec_id: &str,
        cols: u16,
        rows: u16,
    ) -> Result<(), KernelError> {
        let (_, rt) = self.with_runtime(id)?;
        Ok(rt.resize_exec(exec_id, cols, rows).await?)
    }

    pub async fn upload(&self, id: &str, path: &str, content: &[u8]) -> Result<u64, KernelError> {
        let id = &self.files_target(id)?;
        let (rec, rt) = self.capable(id, "files", |c| c.files)?;
        Ok(rt.upload(&rec, path, content, &self.config()).await?)
    }

    pub async fn download(&self, id: &str, path: &str) -> Result<Vec<u8>, KernelError> {
        let id = &self.files_target(id)?;
        let (rec, rt) = self.capable(id, "files", |c| c.files)?;
        Ok(rt.download(&rec, path).await?)
    }

    pub fn list_files(&self, id: &str, path: &str) -> Result<Vec<FileEntry>, KernelError> {
        let id = &self.files_target(id)?;
        let (rec, rt) = self.capable(id, "files", |c| c.files)?;
        Ok(rt.list_files(&rec, path)?)
    }
}
