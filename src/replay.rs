//! `weir replay DEAD_LETTERS PIPELINE`: runs a dead-letter file (one
//! envelope per line, as a `file` sink with `format = "envelope"` writes
//! them) through a pipeline's steps and sinks once more, typically after
//! fixing what failed them. The pipeline's sources are replaced by one
//! `file` source reading the envelopes (`format = "envelope"`: each line
//! becomes the event it describes, without weir's `weir.*` failure
//! headers). Events that fail again go to the pipeline's dead-letter sink,
//! which must not be the file being replayed.
//!
//! With `--checkpoint DIR` a replay that stops (Ctrl-C, a crash) resumes
//! where it left off; without it every run replays the whole file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use weir_config::ComponentConfig;
use weir_engine::{shutdown_channel, Pipeline};

/// Runs the command.
pub fn replay(dead_letters: &Path, file: &Path, checkpoint: Option<PathBuf>) -> ExitCode {
    crate::observability::init_logging();
    crate::observability::init_metrics();
    let mut config = match weir_config::load(file) {
        Ok(c) => c,
        Err(d) => {
            crate::validate::print_diagnostics(&d);
            return ExitCode::from(2);
        }
    };
    if let Err(e) = check_not_own_dead_letters(&config, dead_letters) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // a JSON string is a valid TOML basic string
    let path = serde_json::to_string(&dead_letters.display().to_string()).unwrap_or_default();
    let source = match ComponentConfig::from_toml(
        "replay",
        "file",
        &format!("path = {path}\nformat = \"envelope\"\n"),
    ) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("error: {d}");
            return ExitCode::FAILURE;
        }
    };
    config.sources = vec![source];
    config.pipeline.name = format!("{}-replay", config.pipeline.name);
    // without a checkpoint directory of its own, nothing is resumed
    let scratch = tempfile_dir();
    config.checkpoint.dir = match checkpoint {
        Some(dir) => dir,
        None => scratch.clone(),
    };
    let pipeline = match Pipeline::build(&config, &crate::registry()) {
        Ok(p) => p,
        Err(d) => {
            crate::validate::print_diagnostics(&d);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-io")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let (trigger, _) = shutdown_channel();
        let on_signal = trigger.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.trigger();
            }
        });
        tracing::info!(file = %dead_letters.display(), pipeline = %file.display(), "replaying dead letters");
        pipeline.run(trigger).await
    });
    let _ = std::fs::remove_dir_all(&scratch);
    match result {
        Ok(report) if report.drained => {
            tracing::info!("replay finished: every event delivered or dead-lettered again");
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("error: some replayed events were not delivered (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses a replay whose new dead letters would be appended to the file
/// being read (it would never end, and could replay its own output).
fn check_not_own_dead_letters(
    config: &weir_config::PipelineConfig,
    dead_letters: &Path,
) -> Result<(), String> {
    let Some(dl) = &config.dead_letter else {
        return Ok(());
    };
    let Some(sink) = config
        .sinks
        .iter()
        .find(|s| s.name == dl.sink && s.kind == "file")
    else {
        return Ok(());
    };
    // only the path matters here; the sink itself validates the rest
    #[derive(serde::Deserialize)]
    struct PathOnly {
        path: PathBuf,
    }
    let Ok(target) = sink.options::<PathOnly>() else {
        return Ok(());
    };
    let same = match (
        std::fs::canonicalize(&target.path),
        std::fs::canonicalize(dead_letters),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => target.path == dead_letters,
    };
    if same {
        return Err(format!(
            "`{}` is this pipeline's dead-letter file (sink `{}`): events failing again would be appended to the file being replayed; move it first (e.g. `mv {0} {0}.replaying`) and replay the moved file",
            dead_letters.display(),
            sink.name
        ));
    }
    Ok(())
}

/// A fresh directory for a replay's checkpoints.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-replay-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let _ = std::fs::create_dir_all(&dir);
    dir
}
