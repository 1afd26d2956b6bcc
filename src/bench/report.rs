//! The benchmark's result: a table for people, one JSON line for tools.

use serde_json::json;

/// The baseline a figure is compared with.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// What the baseline does.
    pub name: String,
    /// Its throughput, measured in the same run.
    pub events_per_sec: f64,
}

/// One benchmark run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Scenario name.
    pub scenario: String,
    /// Events pushed through weir.
    pub events: u64,
    /// Wall time of the weir run.
    pub seconds: f64,
    /// weir's throughput.
    pub events_per_sec: f64,
    /// The baseline.
    pub baseline: Baseline,
    /// `events_per_sec / baseline.events_per_sec`.
    pub ratio: f64,
    /// Peak resident memory during the weir run.
    pub rss_peak_bytes: u64,
    /// Median end-to-end batch latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile end-to-end batch latency, microseconds.
    pub p99_us: u64,
    /// Shards used.
    pub shards: usize,
    /// Scenario-specific figures, added to the JSON object and the table.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl BenchReport {
    /// The JSON object printed as the last line with `--json`.
    pub fn to_json(&self) -> String {
        let mut object = json!({
            "scenario": self.scenario,
            "events": self.events,
            "seconds": self.seconds,
            "events_per_sec": self.events_per_sec,
            "baseline": { "name": self.baseline.name, "events_per_sec": self.baseline.events_per_sec },
            "ratio": self.ratio,
            "rss_peak_bytes": self.rss_peak_bytes,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "shards": self.shards,
        });
        if let Some(map) = object.as_object_mut() {
            for (k, v) in &self.extra {
                map.insert(k.clone(), v.clone());
            }
        }
        object.to_string()
    }

    /// Prints the table to stderr.
    pub fn print_table(&self) {
        let rows = [
            ("scenario", self.scenario.clone()),
            ("shards", self.shards.to_string()),
            ("events", self.events.to_string()),
            ("seconds", format!("{:.3}", self.seconds)),
            ("events/s", human(self.events_per_sec)),
            (
                "baseline",
                format!(
                    "{} — {} events/s",
                    self.baseline.name,
                    human(self.baseline.events_per_sec)
                ),
            ),
            ("ratio", format!("{:.2}", self.ratio)),
            (
                "rss peak",
                format!("{:.1} MiB", self.rss_peak_bytes as f64 / (1024.0 * 1024.0)),
            ),
            (
                "latency p50 / p99",
                format!("{} µs / {} µs", self.p50_us, self.p99_us),
            ),
        ];
        eprintln!("┌───────────────────┬──────────────────────────────────────────────");
        for (k, v) in rows {
            eprintln!("│ {k:<17} │ {v}");
        }
        for (k, v) in &self.extra {
            eprintln!("│ {k:<17} │ {v}");
        }
        eprintln!("└───────────────────┴──────────────────────────────────────────────");
    }
}

fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Resets the kernel's peak-RSS mark of this process (Linux `clear_refs`).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process since the last reset, in bytes.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds this process used so far (user + system).
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// CPU seconds per event, in nanoseconds.
pub fn ns_per_event(cpu_seconds: f64, events: u64) -> f64 {
    cpu_seconds * 1e9 / events.max(1) as f64
}
