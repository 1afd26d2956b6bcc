//! weir's built-in connectors: `kafka` (source and sink); sources for benchmarks, local runs and
//! replays (`generator`, `file`, `stdin`, `cron`) and simple sinks
//! (`stdout`, `file`, `blackhole`).
//!
//! Each connector's module documents its delivery guarantee, ordering,
//! partition mapping, backpressure and what its checkpoint commits.
//! [`register`] adds them all to a [`Registry`], one line per connector.

pub mod blackhole;
mod control;
pub mod cron;
pub mod envelope;
pub mod file_sink;
pub mod file_source;
pub mod generator;
pub mod http;
pub mod kafka;
mod line_source;
mod lines;
pub mod nats;
mod numbers;
mod pending;
pub mod postgres;
pub mod redact;
pub mod stdin;
pub mod stdout;
pub mod template;
#[cfg(test)]
mod testing;

use weir_engine::Registry;

pub use envelope::OutputFormat;
pub use lines::LineFormat;

/// Registers every connector of this crate under its `type` name.
pub fn register(registry: &mut Registry) {
    registry.source("generator", generator::build);
    registry.source("file", file_source::build);
    registry.source("stdin", stdin::build);
    registry.source("cron", cron::build);
    registry.source("kafka", kafka::source::build);
    registry.source("http", http::build_source);
    registry.source("nats", nats::core_source::build);
    registry.source("jetstream", nats::js_source::build);
    registry.source("postgres-cdc", postgres::source::build);
    registry.sink("stdout", stdout::build);
    registry.sink("file", file_sink::build);
    registry.sink("blackhole", blackhole::build);
    registry.sink("http", http::sink::build);
    registry.sink("kafka", kafka::sink::build);
    registry.sink("nats", nats::core_sink::build);
    registry.sink("jetstream", nats::js_sink::build);
    registry.sink("postgres", postgres::sink::build);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_connector() {
        let mut registry = Registry::new();
        register(&mut registry);
        let sources: Vec<_> = registry.source_kinds().collect();
        let sinks: Vec<_> = registry.sink_kinds().collect();
        assert_eq!(
            sources,
            [
                "cron",
                "file",
                "generator",
                "http",
                "jetstream",
                "kafka",
                "nats",
                "postgres-cdc",
                "stdin"
            ]
        );
        assert_eq!(
            sinks,
            [
                "blackhole",
                "file",
                "http",
                "jetstream",
                "kafka",
                "nats",
                "postgres",
                "stdout"
            ]
        );
    }
}
