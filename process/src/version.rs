//! A version of a Python or Node function: the handler's content (and its
//! lock file's), named by their SHA-256 and kept under that name, so a
//! restarted worker and a rollback run exactly the bytes that were deployed
//! whatever happened to the file since.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_versions::store::{self, sha256_hex};
use weir_versions::VersionStats;

use crate::language::Language;

/// A loaded handler version.
#[derive(Debug)]
pub struct HandlerVersion {
    /// Hex SHA-256 of the handler and its lock file: the version.
    pub hash: String,
    /// Where the handler was written (imports resolve from there).
    pub original: PathBuf,
    /// The kept copy workers run.
    pub kept: PathBuf,
    /// The handler's size in bytes.
    pub size: u64,
    /// The lock file that is part of the version, if any.
    pub lock: Option<PathBuf>,
    /// How long loading (reading, checking, keeping) took.
    pub load_time: Duration,
    /// What this version has done since it was loaded.
    pub stats: VersionStats,
}

impl HandlerVersion {
    /// The first 12 hex digits of the hash.
    pub fn short_hash(&self) -> &str {
        weir_versions::catalog::short(&self.hash)
    }
}

/// How to load versions of one step.
#[derive(Debug, Clone)]
pub struct Loader {
    /// The language.
    pub language: Language,
    /// The interpreter that checks and runs the handler.
    pub interpreter: PathBuf,
    /// The handler's path in the pipeline file (uploads stand in its place).
    pub handler: PathBuf,
    /// The lock file that is part of each version, if any.
    pub lock: Option<PathBuf>,
    /// Where versions are kept.
    pub cache_dir: PathBuf,
}

impl Loader {
    /// Loads the handler at `path`.
    pub fn load_path(&self, path: &Path) -> Result<Arc<HandlerVersion>, String> {
        let started = Instant::now();
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        self.language.check(&self.interpreter, path)?;
        self.keep(bytes, path, started)
    }

    /// Loads an uploaded handler; it stands where the configured one is.
    pub fn load_bytes(&self, bytes: Vec<u8>) -> Result<Arc<HandlerVersion>, String> {
        let started = Instant::now();
        // checked under a temporary name in the cache, kept only if it passes
        let check = self.cache_dir.join(format!(
            "upload-{}-{}.{}",
            std::process::id(),
            &sha256_hex(&bytes)[..16],
            self.language.extension()
        ));
        store::write_atomically(&check, &bytes)
            .map_err(|e| format!("cannot write `{}`: {e}", check.display()))?;
        let checked = self.language.check(&self.interpreter, &check);
        let _ = std::fs::remove_file(&check);
        checked.map_err(|e| e.replace(&check.display().to_string(), "upload"))?;
        let original = self.handler.clone();
        self.keep(bytes, &original, started)
    }

    fn keep(
        &self,
        bytes: Vec<u8>,
        original: &Path,
        started: Instant,
    ) -> Result<Arc<HandlerVersion>, String> {
        let lock = self.lock_file(original);
        let mut content = bytes.clone();
        if let Some(lock) = &lock {
            let lock_bytes = std::fs::read(lock)
                .map_err(|e| format!("cannot read the lock file `{}`: {e}", lock.display()))?;
            content.extend_from_slice(b"\0weir-lock\0");
            content.extend_from_slice(&lock_bytes);
        }
        let hash = sha256_hex(&content);
        let kept = store::keep(&self.cache_dir, &hash, self.language.extension(), &bytes).map_err(
            |e| {
                format!(
                    "cannot keep the version in `{}`: {e}",
                    self.cache_dir.display()
                )
            },
        )?;
        Ok(Arc::new(HandlerVersion {
            hash,
            original: original.to_path_buf(),
            kept,
            size: bytes.len() as u64,
            lock,
            load_time: started.elapsed(),
            stats: VersionStats::default(),
        }))
    }

    /// The configured lock file; for Node, a `package-lock.json` beside the handler.
    fn lock_file(&self, handler: &Path) -> Option<PathBuf> {
        if let Some(lock) = &self.lock {
            return Some(lock.clone());
        }
        match self.language {
            Language::Node => {
                let beside = handler
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("package-lock.json");
                beside.exists().then_some(beside)
            }
            Language::Python => None,
        }
    }
}

impl weir_versions::Version for HandlerVersion {
    fn hash(&self) -> &str {
        &self.hash
    }

    fn stats(&self) -> &VersionStats {
        &self.stats
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "size": self.size,
            "path": self.original.display().to_string(),
            "kept": self.kept.display().to_string(),
            "lock": self.lock.as_ref().map(|l| l.display().to_string()),
            "load_ms": self.load_time.as_secs_f64() * 1000.0,
        })
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}
