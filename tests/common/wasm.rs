//! The WebAssembly guests of `wasm/guests`, built once per test run by
//! `scripts/build-guests.sh` (which adds the wasm32-wasip2 target if needed).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The component `wasm/guests/out/NAME.wasm`, built first if need be.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    BUILT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root.join("scripts/build-guests.sh"))
            .status()
            .expect("bash runs scripts/build-guests.sh");
        assert!(status.success(), "scripts/build-guests.sh failed: {status}");
    });
    let path = root.join("wasm/guests/out").join(format!("{name}.wasm"));
    assert!(path.exists(), "no guest {}", path.display());
    path
}
