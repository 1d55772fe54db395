//! The persisted kernel registry: one JSON record per kernel under the agent's state dir,
//! written atomically (temp file + rename, readable by the agent's user only) on every
//! lifecycle change, read back after a restart.
//!
//! ```text
//! <root>/.deckhand/kernels/<kernel-id>.json
//! ```

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::record::Record;

#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// The registry under `root` (the scratch root), created 0700 when missing.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let dir = root.join(".deckhand/kernels");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn save(&self, rec: &Record) -> std::io::Result<()> {
        let data = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        write_private(&self.path(&rec.id), &data)
    }

    pub fn forget(&self, id: &str) -> std::io::Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every persisted record (upgraded to the current layout); unreadable ones are
    /// returned as errors beside the rest.
    pub fn load_all(&self) -> (Vec<Record>, Vec<String>) {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return (out, bad);
        };
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_slice::<Record>(&d).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r.upgraded()),
                Err(e) => bad.push(format!("{}: {e}", path.display())),
            }
        }
        (out, bad)
    }
}

pub use crate::util::fs::write_private;
