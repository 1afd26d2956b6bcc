//! Logs (tracing to stderr) and metrics (a Prometheus recorder whose
//! histograms are folded in by a background upkeep thread).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Sets up logging from `WEIR_LOG` (default `info`), once; colours only
/// when stderr is a terminal, so log files and pipes get plain text.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Installs the Prometheus recorder (once) and returns its handle.
pub fn init_metrics() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe_metrics();
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("weir-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

/// docs/operations.md, whose metrics table is the help text of `/metrics`:
/// one source, so the docs and the exposition cannot drift apart (a test
/// runs promtool, which refuses a metric without help).
const OPERATIONS: &str = include_str!("../docs/operations.md");

/// The metrics documented in docs/operations.md: (name, type, meaning),
/// from the rows `| `name` | counter|gauge|histogram | labels | meaning |`.
pub fn documented_metrics() -> Vec<(&'static str, &'static str, &'static str)> {
    OPERATIONS
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = *cells.get(2)?;
            let help = *cells.get(4)?;
            (name.starts_with("weir_") && matches!(kind, "counter" | "gauge" | "histogram"))
                .then_some((name, kind, help))
        })
        .collect()
}

/// Gives every documented metric its help text.
fn describe_metrics() {
    for (name, kind, help) in documented_metrics() {
        match kind {
            "counter" => metrics::describe_counter!(name, help),
            "gauge" => metrics::describe_gauge!(name, help),
            _ => metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operations_guide_documents_every_metric_the_code_names() {
        let documented: Vec<&str> = documented_metrics().iter().map(|(n, _, _)| *n).collect();
        assert!(documented.len() >= 45, "{documented:?}");
        for name in weir_engine::telemetry::names::ALL {
            assert!(
                documented.contains(name),
                "{name} is not in docs/operations.md"
            );
        }
    }
}
