//! The typed sections of a pipeline file, each with its documented
//! defaults. Durations are written as strings like `"250ms"` (see
//! [`parse_duration`](crate::parse_duration)).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::diagnostic::Location;

/// `[pipeline]`: the pipeline as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Name used in logs and metrics; default `"weir"`.
    pub name: String,
    /// Number of shards; `None` (the default) lets the engine use one per
    /// core. When given it must be at least 1.
    #[serde(deserialize_with = "crate::fields::shard_count")]
    pub shards: Option<usize>,
    /// Which events must stay in order; default [`Ordering::Partition`].
    pub ordering: Ordering,
    /// Batches in flight per shard (lanes); default 4, at least 1.
    #[serde(deserialize_with = "crate::fields::positive_usize")]
    pub max_inflight: usize,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            name: "weir".to_string(),
            shards: None,
            ordering: Ordering::default(),
            max_inflight: 4,
        }
    }
}

/// The ordering guarantee of a pipeline (`ordering = "partition" | "key"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Events of one source partition are processed in order (default).
    #[default]
    Partition,
    /// Events with the same key are processed in order.
    Key,
}

/// `batch = { ... }` in a source, step or sink: how events are grouped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Most events in one batch; default 1024, at least 1.
    #[serde(deserialize_with = "crate::fields::positive_usize")]
    pub max_events: usize,
    /// Most payload bytes in one batch; default 1 MiB, at least 1.
    #[serde(deserialize_with = "crate::fields::positive_usize")]
    pub max_bytes: usize,
    /// Longest time a partial batch waits for more events; default 5ms.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_wait: Duration,
    /// Sources only: the dispatch-to-acknowledgement latency the batch wait
    /// steers by. When set, the wait of a partial batch shrinks towards
    /// zero while that latency is under a quarter of the target (low load:
    /// small batches leave at once) and grows once it passes half (work
    /// queues: latency is traded for larger batches), up to `max_wait` and
    /// at most half the target; unset, it is always `max_wait`.
    #[serde(deserialize_with = "crate::duration::deserialize_positive_option")]
    pub latency_target: Option<Duration>,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_events: 1024,
            max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(5),
            latency_target: None,
        }
    }
}

/// `[queues]`: capacities of the queues between stages. Every value is at
/// least 1.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Most events waiting in one shard's inbox; default 8192.
    #[serde(deserialize_with = "crate::fields::positive_usize")]
    pub inbox_max_events: usize,
    /// Most payload bytes waiting in one shard's inbox; default 8 MiB.
    #[serde(deserialize_with = "crate::fields::positive_usize")]
    pub inbox_max_bytes: usize,
    /// Most events waiting in one sink's queue; default 8192.
    #[serde(deserialize_with = "crate::fields::positive_usize")]
    pub sink_max_events: usize,
    /// Most payload bytes waiting in one sink's queue; default 8 MiB.
    #[serde(deserialize_with = "crate::fields::positive_usize")]
    pub sink_max_bytes: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            inbox_max_events: 8192,
            inbox_max_bytes: 8 * 1024 * 1024,
            sink_max_events: 8192,
            sink_max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// `[checkpoint]`: how progress is saved.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSettings {
    /// Time between checkpoints; default 1s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub interval: Duration,
    /// Directory for checkpoint files; default `.weir/checkpoints`. Kept as
    /// written: a relative path is relative to the process's working
    /// directory, not to the configuration file.
    pub dir: PathBuf,
    /// What a source does with a partition whose checkpoint cannot move
    /// (a batch failed for good with no dead-letter sink to take it).
    pub on_stuck: OnStuck,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            interval: Duration::from_secs(1),
            dir: PathBuf::from(".weir/checkpoints"),
            on_stuck: OnStuck::default(),
        }
    }
}

/// `on_stuck = "pause" | "fail"` in `[checkpoint]`: what happens to a
/// partition once a batch of it failed for good and nothing took it (no
/// dead-letter sink, or the dead-letter sink failed too). Its checkpoint
/// can never move past that batch, so reading on would only grow what a
/// restart must read again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStuck {
    /// Stop reading the partition (other partitions go on), count it in
    /// `weir_source_partitions_stuck` and answer `/ready` with 503 until a
    /// restart reads the failed batch again (default).
    #[default]
    Pause,
    /// Fail the pipeline: drain what can be drained and exit non-zero, so
    /// a supervisor restarts it and the batch is read again.
    Fail,
}

/// `[dead_letter]`: where events that fail for good are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSettings {
    /// Name of a sink in `[sinks]` that receives failed events.
    pub sink: String,
    /// Where `sink = ...` is in the file, when read from one.
    location: Option<Location>,
}

impl DeadLetterSettings {
    /// Dead-letter settings built in code, sending to the sink `sink`.
    pub fn new(sink: impl Into<String>) -> DeadLetterSettings {
        DeadLetterSettings {
            sink: sink.into(),
            location: None,
        }
    }

    /// Dead-letter settings read from a file, with the location of `sink`.
    pub(crate) fn located(sink: String, location: Location) -> DeadLetterSettings {
        DeadLetterSettings {
            sink,
            location: Some(location),
        }
    }

    /// Where the sink name was written, if it came from a file.
    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }
}

/// The shape of `[dead_letter]` in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadLetterFile {
    /// Name of the dead-letter sink, with its position.
    pub(crate) sink: toml::Spanned<String>,
}

/// `[retry]`: how failed deliveries are retried.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts per delivery, including the first; default 3, at least 1.
    #[serde(deserialize_with = "crate::fields::positive_u32")]
    pub max_attempts: u32,
    /// Wait before the first retry; default 10ms.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub initial_backoff: Duration,
    /// Longest wait between retries; default 1s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_backoff: Duration,
    /// Give up on an event this long after its first attempt; default 30s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_age: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            max_age: Duration::from_secs(30),
        }
    }
}

/// `[shutdown]`: graceful stop.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// Longest time to drain in-flight events before stopping; default 30s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub timeout: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            timeout: Duration::from_secs(30),
        }
    }
}

/// `[admin]`: the admin server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address to listen on, like `"127.0.0.1:9898"`; `None` (the default)
    /// runs no admin server. Always parses as a
    /// [`SocketAddr`](std::net::SocketAddr).
    #[serde(deserialize_with = "crate::fields::socket_addr")]
    pub listen: Option<String>,
    /// `tls = { cert, key }`: serve the admin API over HTTPS only.
    pub tls: Option<TlsFiles>,
}

/// `tls = { cert = "...", key = "..." }`: serve HTTPS (HTTP/1.1 and HTTP/2
/// by ALPN) with this certificate chain and key (the `http` source, the
/// admin server).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file with the certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}
