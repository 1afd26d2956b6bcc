//! An in-process Prometheus recorder for tests that run a pipeline in the
//! test process and read its metrics.

use std::sync::OnceLock;

/// The recorder, installed once per test binary (before any pipeline is
/// built: handles resolved earlier stay no-ops).
pub fn recorder() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).unwrap();
        handle
    })
}

/// The value of a counter or gauge with this exact label set, 0 if absent.
pub fn metric(name_and_labels: &str) -> f64 {
    recorder()
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The value of a counter or gauge with this exact label set, if present.
pub fn try_metric(name_and_labels: &str) -> Option<f64> {
    recorder().render().lines().find_map(|l| {
        l.strip_prefix(name_and_labels)
            .and_then(|rest| rest.trim().parse().ok())
    })
}
