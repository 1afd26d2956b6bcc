//! A local checkpoint store for sources whose upstream keeps no position of
//! its own (files, stdin replays): one small JSON file per source, replaced
//! atomically (write, fsync, rename) on every commit.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ledger::Checkpoint;

/// The positions of one source, keyed by partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPositions {
    /// Next position to read, per partition.
    pub partitions: BTreeMap<u32, u64>,
}

/// Where one source's checkpoint lives.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    path: PathBuf,
    positions: StoredPositions,
    /// Positions recorded but not yet written (a write failed).
    dirty: bool,
}

impl CheckpointStore {
    /// The store for `source` of `pipeline` under `dir`; reads what is there.
    pub fn open(dir: &Path, pipeline: &str, source: &str) -> Result<Self> {
        let path = dir
            .join(sanitize(pipeline))
            .join(format!("{}.json", sanitize(source)));
        let positions = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::user(format!(
                    "checkpoint file {} is corrupt: {e}",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredPositions::default(),
            Err(e) => {
                return Err(Error::from(e).context(format!("reading checkpoint {}", path.display())))
            }
        };
        Ok(CheckpointStore {
            path,
            positions,
            dirty: false,
        })
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored position of `partition`.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.positions.partitions.get(&partition).copied()
    }

    /// Every stored position.
    pub fn positions(&self) -> &StoredPositions {
        &self.positions
    }

    /// Records checkpoints and writes the file durably. After a failed
    /// write, the next call writes again even with nothing new.
    pub fn save(&mut self, checkpoints: &[Checkpoint]) -> Result<()> {
        if checkpoints.is_empty() && !self.dirty {
            return Ok(());
        }
        for cp in checkpoints {
            self.positions.partitions.insert(cp.partition, cp.position);
        }
        self.dirty = true;
        self.write()
            .map_err(|e| e.context(format!("writing checkpoint {}", self.path.display())))?;
        self.dirty = false;
        Ok(())
    }

    fn write(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        let body =
            serde_json::to_vec(&self.positions).map_err(|e| Error::internal(e.to_string()))?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), "p", "src").unwrap();
        assert_eq!(store.position(0), None);
        store
            .save(&[
                Checkpoint {
                    partition: 0,
                    position: 42,
                },
                Checkpoint {
                    partition: 2,
                    position: 7,
                },
            ])
            .unwrap();
        let again = CheckpointStore::open(dir.path(), "p", "src").unwrap();
        assert_eq!(again.position(0), Some(42));
        assert_eq!(again.position(2), Some(7));
    }

    #[test]
    fn a_failed_write_is_retried_by_the_next_save() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), "p", "src").unwrap();
        let blocker = dir.path().join("p");
        std::fs::write(&blocker, b"a file where the directory should be").unwrap();
        assert!(store
            .save(&[Checkpoint {
                partition: 0,
                position: 9
            }])
            .is_err());
        std::fs::remove_file(&blocker).unwrap();
        store.save(&[]).unwrap();
        assert_eq!(
            CheckpointStore::open(dir.path(), "p", "src")
                .unwrap()
                .position(0),
            Some(9)
        );
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/src.json"), b"{not json").unwrap();
        let err = CheckpointStore::open(dir.path(), "p", "src").unwrap_err();
        assert!(err.message.contains("is corrupt"), "{err}");
    }
}
