//! `weir run` on SIGHUP (and with `--watch`, when the pipeline file or a
//! function's file changes): reads the pipeline file again and deploys
//! every versioned step (`wasm`, `python`, `node`) whose module or handler
//! changed (by content hash), through the same path as `weir functions
//! deploy`. Other changes need a restart.

use std::path::PathBuf;

use weir_config::{ComponentConfig, Diagnostic};
use weir_process::options::ProcessOptions;
use weir_versions::catalog::{catalog, VersionSource};
use weir_wasm::options::WasmOptions;

/// The file a versioned step's versions come from, if `step` is one.
fn version_file(step: &ComponentConfig) -> Option<Result<PathBuf, Diagnostic>> {
    match step.kind.as_str() {
        "wasm" => Some(step.options::<WasmOptions>().map(|o| o.module)),
        "python" | "node" => Some(step.options::<ProcessOptions>().map(|o| o.handler)),
        _ => None,
    }
}

/// Listens for SIGHUP on the current runtime and reloads `file` on each.
pub fn on_sighup(file: PathBuf) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloads only through the admin API");
            return;
        }
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reload(&file).await;
        }
    });
}

/// How often `--watch` looks at the files' modification times.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Polls the modification times of `file` and of its versioned steps'
/// files, and reloads when one changes. (Polling once a second costs a
/// few `stat` calls; an inotify crate would add a dependency for no gain
/// at this rate.)
pub fn watch(file: PathBuf) {
    tokio::spawn(async move {
        let mut seen = stamps(&file).await;
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let now = stamps(&file).await;
            if now != seen {
                seen = now;
                reload(&file).await;
            }
        }
    });
}

/// The modification times of the pipeline file and its modules.
async fn stamps(file: &std::path::Path) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut paths = vec![file.clone()];
        if let Ok(config) = weir_config::load(&file) {
            for step in &config.steps {
                if let Some(Ok(path)) = version_file(step) {
                    paths.push(path);
                }
            }
        }
        paths
            .into_iter()
            .map(|p| {
                let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                (p, modified)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Deploys the versioned steps of `file` whose files differ from what runs.
pub async fn reload(file: &std::path::Path) {
    tracing::info!(file = %file.display(), "SIGHUP: reloading the functions of the pipeline file");
    let config = match weir_config::load(file) {
        Ok(c) => c,
        Err(d) => {
            tracing::error!(
                "reload refused, the file has errors (the running pipeline is unchanged):\n{d}"
            );
            return;
        }
    };
    for step in &config.steps {
        let path = match version_file(step) {
            None => continue,
            Some(Ok(path)) => path,
            Some(Err(d)) => {
                tracing::error!("reload of `{}` refused: {d}", step.name);
                continue;
            }
        };
        match catalog()
            .deploy(&step.name, VersionSource::Path(path))
            .await
        {
            Ok(v) => {
                tracing::info!(function = %step.name, version = %v["stable"]["hash"], "reload: function up to date")
            }
            Err(e) => {
                tracing::error!(function = %step.name, error = %e, "reload: deploy failed; the running version stays")
            }
        }
    }
}
