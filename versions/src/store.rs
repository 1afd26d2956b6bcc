//! The version store: a directory keeping each deployed version's content
//! under its hash (`<hash>.<ext>`), so a rollback or a restart finds the
//! exact bytes that ran, whatever happened to the original file since.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Keeps `bytes` as `<dir>/<hash>.<ext>` unless already there; returns the path.
pub fn keep(dir: &Path, hash: &str, ext: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("{hash}.{ext}"));
    if !path.exists() {
        write_atomically(&path, bytes)?;
    }
    Ok(path)
}

/// The versions kept in `dir` with extension `ext`: hash and size of each.
pub fn kept(dir: &Path, ext: &str) -> Vec<serde_json::Value> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let suffix = format!(".{ext}");
    let mut kept: Vec<serde_json::Value> = read
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let hash = name.strip_suffix(&suffix)?;
            (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
                serde_json::json!({ "hash": hash, "size": e.metadata().map(|m| m.len()).unwrap_or(0) })
            })
        })
        .collect();
    kept.sort_by(|a, b| a["hash"].as_str().cmp(&b["hash"].as_str()));
    kept
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_versions_are_listed_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let hash = sha256_hex(b"v1");
        keep(dir.path(), &hash, "py", b"v1").unwrap();
        std::fs::write(dir.path().join("other.py"), b"x").unwrap();
        let listed = kept(dir.path(), "py");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["hash"], hash.as_str());
        assert_eq!(listed[0]["size"], 2);
    }
}
