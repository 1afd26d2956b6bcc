//! Every metric weir emits, defined in one place so names never drift.
//!
//! Each struct resolves its handles once (at startup, per source, step, sink
//! or queue); the hot path only touches atomics, once per batch.
//! The names are the contract of the dashboard and of docs/operations.md.
//! Install the recorder before building a pipeline: handles resolved while
//! no recorder is installed stay no-ops.

use std::time::Duration;

use metrics::{counter, gauge, histogram, Histogram};

use crate::live::{self, kind, Level, Tally, Timing};

/// Metric names, as exported.
pub mod names {
    /// Events a source read and dispatched, by `source`.
    pub const SOURCE_EVENTS: &str = "weir_source_events_total";
    /// Bytes a source read, by `source`.
    pub const SOURCE_BYTES: &str = "weir_source_bytes_total";
    /// Batches a source dispatched, by `source`.
    pub const SOURCE_BATCHES: &str = "weir_source_batches_total";
    /// Times a source found a shard queue full and paused, by `source`.
    pub const SOURCE_PAUSES: &str = "weir_source_pauses_total";
    /// Partitions a source stopped reading because their checkpoint cannot move (`on_stuck`).
    pub const SOURCE_PARTITIONS_STUCK: &str = "weir_source_partitions_stuck";
    /// Events a source read and holds but has not dispatched yet.
    pub const SOURCE_HELD_EVENTS: &str = "weir_source_held_events";
    /// How long the source currently lets a partial batch wait (adaptive
    /// with `batch.latency_target`), in seconds, by `source`.
    pub const SOURCE_BATCH_WAIT: &str = "weir_source_batch_wait_seconds";
    /// Events per dispatched batch, by `source`.
    pub const SOURCE_BATCH_EVENTS: &str = "weir_source_batch_events";
    /// Committed position per `source` and `partition`.
    pub const CHECKPOINT_POSITION: &str = "weir_checkpoint_position";
    /// Positions dispatched but not yet committed, per `source` and `partition`.
    pub const CHECKPOINT_LAG: &str = "weir_checkpoint_lag";
    /// Checkpoints committed, by `source`.
    pub const CHECKPOINT_COMMITS: &str = "weir_checkpoint_commits_total";
    /// Failed checkpoint commits, by `source`.
    pub const CHECKPOINT_ERRORS: &str = "weir_checkpoint_errors_total";
    /// Events held in a queue (queued or being processed), by `queue`.
    pub const QUEUE_EVENTS: &str = "weir_queue_events";
    /// Bytes held in a queue, by `queue`.
    pub const QUEUE_BYTES: &str = "weir_queue_bytes";
    /// Microseconds senders spent blocked on a full queue, by `queue`.
    pub const QUEUE_BLOCKED_MICROS: &str = "weir_queue_blocked_micros_total";
    /// Times a sender found the queue full, by `queue`.
    pub const QUEUE_FULL: &str = "weir_queue_full_total";
    /// Events into a step, by `step`.
    pub const STEP_EVENTS_IN: &str = "weir_step_events_in_total";
    /// Events out of a step (kept, changed or emitted), by `step`.
    pub const STEP_EVENTS_OUT: &str = "weir_step_events_out_total";
    /// Events a step dropped on purpose (filtered), by `step`.
    pub const STEP_EVENTS_DROPPED: &str = "weir_step_events_dropped_total";
    /// Events a step failed, counted per attempt, by `step`.
    pub const STEP_ERRORS: &str = "weir_step_errors_total";
    /// Retries of failed events, by `step`.
    pub const STEP_RETRIES: &str = "weir_step_retries_total";
    /// Seconds a step took per batch, by `step`.
    pub const STEP_LATENCY: &str = "weir_step_batch_seconds";
    /// Instances of a step that report themselves degraded, by `step`.
    pub const STEP_DEGRADED: &str = "weir_step_degraded_instances";
    /// Batches processed per shard, by `shard`.
    pub const SHARD_BATCHES: &str = "weir_shard_batches_total";
    /// Microseconds a shard spent processing batches, by `shard` (busy time; load = rate of this).
    pub const SHARD_BUSY_MICROS: &str = "weir_shard_busy_micros_total";
    /// Events a sink wrote durably, by `sink`.
    pub const SINK_EVENTS: &str = "weir_sink_events_total";
    /// Batches a sink wrote, by `sink`.
    pub const SINK_BATCHES: &str = "weir_sink_batches_total";
    /// Events per written batch, by `sink`.
    pub const SINK_BATCH_EVENTS: &str = "weir_sink_batch_events";
    /// Failed write attempts, by `sink`.
    pub const SINK_ERRORS: &str = "weir_sink_errors_total";
    /// Events written again to keep per-key order after an earlier batch was retried.
    pub const SINK_REWRITTEN: &str = "weir_sink_rewritten_events_total";
    /// Seconds per write, by `sink`.
    pub const SINK_LATENCY: &str = "weir_sink_write_seconds";
    /// Events sent to the dead-letter sink, by `stage` (step or sink name).
    pub const DEAD_LETTERS: &str = "weir_dead_letters_total";
    /// Events dropped after failing with no dead-letter sink configured, by `stage`.
    pub const DROPPED: &str = "weir_dropped_total";
    /// Seconds from dispatch until every sink confirmed a batch.
    pub const END_TO_END_LATENCY: &str = "weir_end_to_end_seconds";
    /// Messages between a Kafka partition's high watermark and the
    /// consumer's position, by `source`, `topic` and `partition` (from
    /// librdkafka's statistics, every 5s).
    pub const KAFKA_CONSUMER_LAG: &str = "weir_kafka_consumer_lag";
    /// Kafka partitions revoked or assigned, by `source` and `kind`
    /// (`revoke`, `assign`).
    pub const KAFKA_REBALANCES: &str = "weir_kafka_rebalances_total";
    /// Kafka partitions paused in librdkafka too because their shard did
    /// not make room within the source's patience (50 ms): a shard slower
    /// than the others, or stalled; by `source`.
    pub const KAFKA_PARTITION_HOLDS: &str = "weir_kafka_partition_holds_total";
    /// Records a Kafka sink could not deliver (after librdkafka's own
    /// retries), by `sink`.
    pub const KAFKA_DELIVERY_ERRORS: &str = "weir_kafka_delivery_errors_total";
    /// Slow-consumer events of a NATS client (the server dropped messages
    /// for a subscription), by `component`.
    pub const NATS_SLOW_CONSUMER: &str = "weir_nats_slow_consumer_total";
    /// JetStream messages delivered more than once, by `source`.
    pub const JETSTREAM_REDELIVERIES: &str = "weir_jetstream_redeliveries_total";
    /// In-progress acks (`+WPI`) a JetStream source sent for messages still inside weir, by `source`.
    pub const JETSTREAM_IN_PROGRESS: &str = "weir_jetstream_in_progress_total";
    /// The replication slot position a change feed last confirmed (an LSN
    /// as a number), by `source`.
    pub const PG_CDC_CONFIRMED_LSN: &str = "weir_postgres_cdc_confirmed_lsn";
    /// WAL bytes a change feed received but has not confirmed, by `source`.
    pub const PG_CDC_UNCONFIRMED_BYTES: &str = "weir_postgres_cdc_unconfirmed_bytes";
    /// Replication connections a change feed lost and re-opened, by `source`.
    pub const PG_CDC_RECONNECTS: &str = "weir_postgres_cdc_reconnects_total";
    /// Rows a change feed's initial snapshot has read, by `source`.
    pub const PG_CDC_SNAPSHOT_ROWS: &str = "weir_postgres_cdc_snapshot_rows_total";
    /// Every name above (the docs and `/metrics` help text must cover them all).
    pub const ALL: &[&str] = &[
        SOURCE_EVENTS,
        SOURCE_BYTES,
        SOURCE_BATCHES,
        SOURCE_PAUSES,
        SOURCE_PARTITIONS_STUCK,
        SOURCE_HELD_EVENTS,
        SOURCE_BATCH_WAIT,
        SOURCE_BATCH_EVENTS,
        CHECKPOINT_POSITION,
        CHECKPOINT_LAG,
        CHECKPOINT_COMMITS,
        CHECKPOINT_ERRORS,
        QUEUE_EVENTS,
        QUEUE_BYTES,
        QUEUE_BLOCKED_MICROS,
        QUEUE_FULL,
        STEP_EVENTS_IN,
        STEP_EVENTS_OUT,
        STEP_EVENTS_DROPPED,
        STEP_ERRORS,
        STEP_RETRIES,
        STEP_LATENCY,
        STEP_DEGRADED,
        SHARD_BATCHES,
        SHARD_BUSY_MICROS,
        SINK_EVENTS,
        SINK_BATCHES,
        SINK_BATCH_EVENTS,
        SINK_ERRORS,
        SINK_REWRITTEN,
        SINK_LATENCY,
        DEAD_LETTERS,
        DROPPED,
        END_TO_END_LATENCY,
        KAFKA_CONSUMER_LAG,
        KAFKA_REBALANCES,
        KAFKA_PARTITION_HOLDS,
        KAFKA_DELIVERY_ERRORS,
        NATS_SLOW_CONSUMER,
        JETSTREAM_REDELIVERIES,
        JETSTREAM_IN_PROGRESS,
        PG_CDC_CONFIRMED_LSN,
        PG_CDC_UNCONFIRMED_BYTES,
        PG_CDC_RECONNECTS,
        PG_CDC_SNAPSHOT_ROWS,
    ];
}

/// Metrics of one bounded queue.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    events: Level,
    bytes: Level,
    blocked: Tally,
    full: Tally,
    /// Senders waiting for room right now (live only): a stage stalled for
    /// good never finishes a wait, so `blocked` alone would not show it.
    waiting: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl QueueMetrics {
    /// Handles for the queue called `queue` (e.g. `shard-0`, `sink-out`).
    pub fn new(queue: &str) -> Self {
        let q = queue.to_string();
        QueueMetrics {
            events: Level::new(
                gauge!(names::QUEUE_EVENTS, "queue" => q.clone()),
                kind::QUEUE,
                queue,
                "events",
            ),
            bytes: Level::new(
                gauge!(names::QUEUE_BYTES, "queue" => q.clone()),
                kind::QUEUE,
                queue,
                "bytes",
            ),
            blocked: Tally::new(
                counter!(names::QUEUE_BLOCKED_MICROS, "queue" => q.clone()),
                kind::QUEUE,
                queue,
                "blocked_micros",
            ),
            full: Tally::new(
                counter!(names::QUEUE_FULL, "queue" => q),
                kind::QUEUE,
                queue,
                "full",
            ),
            waiting: live::value(kind::QUEUE, queue, "waiting"),
        }
    }

    pub(crate) fn depth(&self, events: usize, bytes: usize) {
        self.events.set(events as u64);
        self.bytes.set(bytes as u64);
    }

    pub(crate) fn blocked(&self, waited: Duration) {
        // counted in microseconds, exported as seconds by the dashboard
        self.blocked.increment(waited.as_micros() as u64);
    }

    pub(crate) fn full(&self) {
        self.full.increment(1);
    }

    /// Counts a sender as waiting until the guard drops (also when the wait
    /// is cancelled).
    pub(crate) fn waiting(&self) -> Waiting {
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(std::sync::Arc::clone(&self.waiting))
    }
}

/// A sender waiting for room in a queue; see [`QueueMetrics::waiting`].
pub(crate) struct Waiting(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Metrics of one source.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    source: String,
    events: Tally,
    bytes: Tally,
    batches: Tally,
    pauses: Tally,
    batch_events: Histogram,
    commits: Tally,
    commit_errors: Tally,
    stuck: Level,
    held: Level,
    /// `weir_source_batch_wait_seconds`.
    batch_wait: metrics::Gauge,
    tap: std::sync::Arc<crate::tap::Tap>,
}

impl SourceMetrics {
    /// Handles for the source called `source`.
    pub fn new(source: &str) -> Self {
        let s = source.to_string();
        let k = kind::SOURCE;
        SourceMetrics {
            events: Tally::new(
                counter!(names::SOURCE_EVENTS, "source" => s.clone()),
                k,
                source,
                "events",
            ),
            bytes: Tally::new(
                counter!(names::SOURCE_BYTES, "source" => s.clone()),
                k,
                source,
                "bytes",
            ),
            batches: Tally::new(
                counter!(names::SOURCE_BATCHES, "source" => s.clone()),
                k,
                source,
                "batches",
            ),
            pauses: Tally::new(
                counter!(names::SOURCE_PAUSES, "source" => s.clone()),
                k,
                source,
                "pauses",
            ),
            batch_events: histogram!(names::SOURCE_BATCH_EVENTS, "source" => s.clone()),
            commits: Tally::new(
                counter!(names::CHECKPOINT_COMMITS, "source" => s.clone()),
                k,
                source,
                "commits",
            ),
            commit_errors: Tally::new(
                counter!(names::CHECKPOINT_ERRORS, "source" => s.clone()),
                k,
                source,
                "commit_errors",
            ),
            stuck: Level::new(
                gauge!(names::SOURCE_PARTITIONS_STUCK, "source" => s.clone()),
                k,
                source,
                "stuck",
            ),
            held: Level::new(
                gauge!(names::SOURCE_HELD_EVENTS, "source" => s.clone()),
                k,
                source,
                "held",
            ),
            batch_wait: gauge!(names::SOURCE_BATCH_WAIT, "source" => s.clone()),
            tap: crate::tap::tap(&format!("source:{source}")),
            source: s,
        }
    }

    /// A batch was dispatched.
    pub fn dispatched(&self, events: usize, bytes: usize) {
        self.events.increment(events as u64);
        self.bytes.increment(bytes as u64);
        self.batches.increment(1);
        self.batch_events.record(events as f64);
    }

    /// Samples of the events the source dispatches (`weir tap`).
    pub fn tap(&self) -> &crate::tap::Tap {
        &self.tap
    }

    /// The source found a shard full.
    pub fn paused(&self) {
        self.pauses.increment(1);
    }

    /// A checkpoint was committed for `partition` at `position`, `lag`
    /// positions behind what was dispatched.
    pub fn committed(&self, partition: u32, position: u64, lag: u64) {
        self.commits.increment(1);
        let p = partition.to_string();
        gauge!(names::CHECKPOINT_POSITION, "source" => self.source.clone(), "partition" => p.clone()).set(position as f64);
        gauge!(names::CHECKPOINT_LAG, "source" => self.source.clone(), "partition" => p)
            .set(lag as f64);
        live::partition(&self.source, partition, position, lag);
    }

    /// How many partitions the source stopped reading (`on_stuck = "pause"`).
    pub fn stuck(&self, partitions: usize) {
        self.stuck.set(partitions as u64);
    }

    /// How many events the source holds that it read and has not
    /// dispatched (batches being built, batches a full shard refused).
    pub fn held(&self, events: usize) {
        self.held.set(events as u64);
    }

    /// The source's current batch wait.
    pub fn batch_wait(&self, wait: std::time::Duration) {
        self.batch_wait.set(wait.as_secs_f64());
    }

    /// A commit failed.
    pub fn commit_failed(&self) {
        self.commit_errors.increment(1);
    }
}

/// Metrics of one step (shared by every lane running it).
#[derive(Debug, Clone)]
pub struct StepMetrics {
    /// Events in.
    pub events_in: Tally,
    /// Events out.
    pub events_out: Tally,
    /// Events filtered.
    pub dropped: Tally,
    /// Failures, counted per attempt.
    pub errors: Tally,
    /// Retries.
    pub retries: Tally,
    /// Batch latency.
    pub latency: Timing,
    /// Events dead-lettered by this step.
    pub dead_letters: Tally,
    /// Events dropped after failing with no dead-letter sink.
    pub lost: Tally,
    /// Samples of the events leaving the step (`weir tap`).
    pub tap: std::sync::Arc<crate::tap::Tap>,
    /// Instances reporting themselves degraded.
    pub degraded: Level,
}

impl StepMetrics {
    /// Handles for the step called `step`.
    pub fn new(step: &str) -> Self {
        let s = step.to_string();
        let k = kind::STEP;
        StepMetrics {
            events_in: Tally::new(
                counter!(names::STEP_EVENTS_IN, "step" => s.clone()),
                k,
                step,
                "events_in",
            ),
            events_out: Tally::new(
                counter!(names::STEP_EVENTS_OUT, "step" => s.clone()),
                k,
                step,
                "events_out",
            ),
            dropped: Tally::new(
                counter!(names::STEP_EVENTS_DROPPED, "step" => s.clone()),
                k,
                step,
                "dropped",
            ),
            errors: Tally::new(
                counter!(names::STEP_ERRORS, "step" => s.clone()),
                k,
                step,
                "errors",
            ),
            retries: Tally::new(
                counter!(names::STEP_RETRIES, "step" => s.clone()),
                k,
                step,
                "retries",
            ),
            latency: Timing::new(
                histogram!(names::STEP_LATENCY, "step" => s.clone()),
                k,
                step,
            ),
            dead_letters: Tally::new(
                counter!(names::DEAD_LETTERS, "stage" => s.clone()),
                k,
                step,
                "dead_letters",
            ),
            lost: Tally::new(
                counter!(names::DROPPED, "stage" => s.clone()),
                k,
                step,
                "lost",
            ),
            degraded: Level::new(
                gauge!(names::STEP_DEGRADED, "step" => s),
                k,
                step,
                "degraded",
            ),
            tap: crate::tap::tap(&format!("step:{step}")),
        }
    }
}

/// Metrics of one shard.
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    /// Batches processed.
    pub batches: Tally,
    /// Busy time in microseconds.
    pub busy_micros: Tally,
}

impl ShardMetrics {
    /// Handles for shard `shard`.
    pub fn new(shard: usize) -> Self {
        let s = shard.to_string();
        ShardMetrics {
            batches: Tally::new(
                counter!(names::SHARD_BATCHES, "shard" => s.clone()),
                kind::SHARD,
                &s,
                "batches",
            ),
            busy_micros: Tally::new(
                counter!(names::SHARD_BUSY_MICROS, "shard" => s.clone()),
                kind::SHARD,
                &s,
                "busy_micros",
            ),
        }
    }
}

/// Metrics of one sink.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    /// Events written.
    pub events: Tally,
    /// Batches written.
    pub batches: Tally,
    /// Events per batch.
    pub batch_events: Histogram,
    /// Failed attempts.
    pub errors: Tally,
    /// Write latency.
    pub latency: Timing,
    /// Events dead-lettered after the sink gave up on them.
    pub dead_letters: Tally,
    /// Events lost to the checkpoint (acks failed).
    pub lost: Tally,
    /// Delivered events written again after an earlier batch's retry (per-key order).
    pub rewritten: metrics::Counter,
    /// Samples of the events the sink writes (`weir tap`).
    pub tap: std::sync::Arc<crate::tap::Tap>,
}

impl SinkMetrics {
    /// Handles for the sink called `sink`.
    pub fn new(sink: &str) -> Self {
        let s = sink.to_string();
        let k = kind::SINK;
        SinkMetrics {
            events: Tally::new(
                counter!(names::SINK_EVENTS, "sink" => s.clone()),
                k,
                sink,
                "events",
            ),
            batches: Tally::new(
                counter!(names::SINK_BATCHES, "sink" => s.clone()),
                k,
                sink,
                "batches",
            ),
            batch_events: histogram!(names::SINK_BATCH_EVENTS, "sink" => s.clone()),
            errors: Tally::new(
                counter!(names::SINK_ERRORS, "sink" => s.clone()),
                k,
                sink,
                "errors",
            ),
            latency: Timing::new(
                histogram!(names::SINK_LATENCY, "sink" => s.clone()),
                k,
                sink,
            ),
            dead_letters: Tally::new(
                counter!(names::DEAD_LETTERS, "stage" => s.clone()),
                k,
                sink,
                "dead_letters",
            ),
            rewritten: counter!(names::SINK_REWRITTEN, "sink" => s.clone()),
            lost: Tally::new(counter!(names::DROPPED, "stage" => s), k, sink, "lost"),
            tap: crate::tap::tap(&format!("sink:{sink}")),
        }
    }
}
