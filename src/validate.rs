//! `weir validate FILE`: load, check and build a pipeline without running it.

use std::path::Path;
use std::process::ExitCode;

use weir_config::Diagnostics;
use weir_engine::Pipeline;

/// Prints every diagnostic to stderr.
pub fn print_diagnostics(diagnostics: &Diagnostics) {
    for d in diagnostics.iter() {
        eprintln!("{d}");
    }
    let n = diagnostics.len();
    eprintln!("{n} error{}", if n == 1 { "" } else { "s" });
}

/// Loads and builds the pipeline in `file`, printing diagnostics on failure.
pub fn load_and_build(file: &Path) -> Option<(weir_config::PipelineConfig, Pipeline)> {
    let config = match weir_config::load(file) {
        Ok(c) => c,
        Err(d) => {
            print_diagnostics(&d);
            return None;
        }
    };
    match Pipeline::build(&config, &crate::registry()) {
        Ok(p) => Some((config, p)),
        Err(d) => {
            print_diagnostics(&d);
            None
        }
    }
}

/// Runs the command.
pub fn validate(file: &Path) -> ExitCode {
    match load_and_build(file) {
        Some((config, pipeline)) => {
            println!(
                "ok: {}: pipeline `{}`: {} source(s), {} step(s), {} sink(s), output to {}",
                file.display(),
                config.pipeline.name,
                config.sources.len(),
                config.steps.len(),
                config.sinks.len(),
                match pipeline.default_sink_names() {
                    v if v.is_empty() => "no default sink".to_string(),
                    v => v
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}
