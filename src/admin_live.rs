//! `/api/v1/pipeline` and `/api/v1/pipeline/stream`: the running
//! pipeline's live state, made once a second from the engine's live values
//! (`weir_engine::live`): sources and their partitions (committed position,
//! lag), shards (busy share, queue depth, how long sources waited on them),
//! steps (rates, errors, latency percentiles), sinks (rates, errors, dead
//! letters, queue depth, how long shards waited on them), function versions,
//! the pipeline as a graph, and the stage where backpressure starts.
//!
//! Backpressure follows Flink's reading: a stage is backpressured for the
//! share of each second its senders spent waiting for room downstream
//! (OK below 10 %, LOW to 50 %, HIGH above). The stage where it starts is
//! the first one downstream of a backpressured stage that is not itself
//! backpressured: a sink whose queue keeps the shards waiting, else the
//! shards (their steps) when they keep the sources waiting.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::watch;
use weir_engine::live::{self, kind, Snapshot};

/// What the view needs to know of the pipeline besides the live values.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The pipeline's name.
    pub name: String,
    /// Shard count.
    pub shards: usize,
    /// Lanes per shard (batches in flight per shard).
    pub lanes: usize,
    /// Source names, in file order.
    pub sources: Vec<String>,
    /// Step names, in order.
    pub steps: Vec<String>,
    /// Sink names, in file order.
    pub sinks: Vec<String>,
    /// The dead-letter sink, if any.
    pub dead_letter: Option<String>,
}

/// How often the view is remade.
pub const EVERY: Duration = Duration::from_secs(1);

/// Starts the sampler on the current runtime; the receiver always holds the
/// latest view (JSON text).
pub fn start(shape: Shape) -> watch::Receiver<Arc<str>> {
    let first = view(&shape, &live::snapshot(), None, EVERY);
    let (tx, rx) = watch::channel(Arc::<str>::from(first.to_string()));
    tokio::spawn(async move {
        let mut previous = (live::snapshot(), Instant::now());
        let mut tick = tokio::time::interval(EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = (live::snapshot(), Instant::now());
            let elapsed = now.1.duration_since(previous.1);
            let v = view(&shape, &now.0, Some(&previous.0), elapsed);
            if tx.send(Arc::from(v.to_string())).is_err() {
                return;
            }
            previous = now;
        }
    });
    rx
}

/// Backpressure level of a waiting share (0.0–1.0), Flink's thresholds.
pub fn level(share: f64) -> &'static str {
    if share > 0.5 {
        "HIGH"
    } else if share > 0.1 {
        "LOW"
    } else {
        "OK"
    }
}

/// The view from `now`, with rates against `before` over `elapsed`.
pub fn view(shape: &Shape, now: &Snapshot, before: Option<&Snapshot>, elapsed: Duration) -> Value {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = |k: &str, n: &str, f: &str| -> f64 {
        match before {
            Some(b) => now.get(k, n, f).saturating_sub(b.get(k, n, f)) as f64 / secs,
            None => 0.0,
        }
    };
    // sender-seconds spent waiting for room per second (several senders
    // can wait at once, so this may exceed 1); a sender waiting now counts
    // a whole second, since a stage stalled for good never finishes a wait
    let waited = |queue: &str| {
        let finished = rate(kind::QUEUE, queue, "blocked_micros") / 1e6;
        finished.max(now.get(kind::QUEUE, queue, "waiting") as f64)
    };
    let latency = |k: &str, n: &str| {
        now.latencies
            .get(&(k.to_string(), n.to_string()))
            .map(|(count, p50, p99)| json!({"count": count, "p50_us": p50, "p99_us": p99}))
            .unwrap_or(Value::Null)
    };

    // as a share of the senders' time: each source sends to the shards,
    // each lane of each shard to the sinks
    let shard_queues: Vec<String> = (0..shape.shards).map(|i| format!("shard-{i}")).collect();
    let source_wait = (shard_queues.iter().map(|q| waited(q)).sum::<f64>()
        / shape.sources.len().max(1) as f64)
        .min(1.0);
    let lanes = (shape.shards * shape.lanes).max(1) as f64;
    let sink_waits: Vec<(String, f64)> = shape
        .sinks
        .iter()
        .map(|s| (s.clone(), (waited(&format!("sink-{s}")) / lanes).min(1.0)))
        .collect();
    let shard_wait = sink_waits.iter().map(|(_, w)| w).sum::<f64>().min(1.0);

    let sources: Vec<Value> = shape
        .sources
        .iter()
        .map(|s| {
            let partitions: Vec<Value> = now
                .partitions
                .iter()
                .filter(|((src, _), _)| src == s)
                .map(|((_, p), (position, lag))| json!({"partition": p, "committed": position, "lag": lag}))
                .collect();
            json!({
                "name": s,
                "paused": weir_engine::pause::is_paused(s),
                "events": now.get(kind::SOURCE, s, "events"),
                "events_per_s": rate(kind::SOURCE, s, "events"),
                "bytes_per_s": rate(kind::SOURCE, s, "bytes"),
                "batches": now.get(kind::SOURCE, s, "batches"),
                "pauses": now.get(kind::SOURCE, s, "pauses"),
                "commits": now.get(kind::SOURCE, s, "commits"),
                "commit_errors": now.get(kind::SOURCE, s, "commit_errors"),
                "lag": now.partitions.iter().filter(|((src, _), _)| src == s).map(|(_, (_, lag))| lag).sum::<u64>(),
                "partitions": partitions,
                "backpressured": source_wait,
                "backpressure": level(source_wait),
            })
        })
        .collect();
    let shards: Vec<Value> = (0..shape.shards)
        .map(|i| {
            let (name, queue) = (i.to_string(), format!("shard-{i}"));
            let busy = (rate(kind::SHARD, &name, "busy_micros") / 1e6).min(1.0);
            json!({
                "index": i,
                "batches": now.get(kind::SHARD, &name, "batches"),
                "batches_per_s": rate(kind::SHARD, &name, "batches"),
                "busy": busy,
                "backpressured": shard_wait,
                "idle": (1.0 - busy - shard_wait).max(0.0),
                "queue_events": now.get(kind::QUEUE, &queue, "events"),
                "queue_bytes": now.get(kind::QUEUE, &queue, "bytes"),
                "sources_waited": (waited(&queue) / shape.sources.len().max(1) as f64).min(1.0),
            })
        })
        .collect();
    let steps: Vec<Value> = shape
        .steps
        .iter()
        .map(|s| {
            json!({
                "name": s,
                "events_in": now.get(kind::STEP, s, "events_in"),
                "events_out": now.get(kind::STEP, s, "events_out"),
                "in_per_s": rate(kind::STEP, s, "events_in"),
                "out_per_s": rate(kind::STEP, s, "events_out"),
                "dropped": now.get(kind::STEP, s, "dropped"),
                "errors": now.get(kind::STEP, s, "errors"),
                "retries": now.get(kind::STEP, s, "retries"),
                "dead_letters": now.get(kind::STEP, s, "dead_letters"),
                "latency": latency(kind::STEP, s),
                "backpressure": level(shard_wait),
                // instances whose health hook reports a problem, with why
                "degraded": now.degraded.get(s.as_str()).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let sinks: Vec<Value> = sink_waits
        .iter()
        .map(|(s, wait)| {
            let queue = format!("sink-{s}");
            json!({
                "name": s,
                "dead_letter": shape.dead_letter.as_deref() == Some(s.as_str()),
                "events": now.get(kind::SINK, s, "events"),
                "events_per_s": rate(kind::SINK, s, "events"),
                "batches": now.get(kind::SINK, s, "batches"),
                "errors": now.get(kind::SINK, s, "errors"),
                "dead_letters": now.get(kind::SINK, s, "dead_letters"),
                "latency": latency(kind::SINK, s),
                "queue_events": now.get(kind::QUEUE, &queue, "events"),
                "queue_bytes": now.get(kind::QUEUE, &queue, "bytes"),
                "shards_waited": wait,
                "backpressure": "OK",
            })
        })
        .collect();

    let bottleneck = bottleneck(shape, source_wait, &sink_waits);
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for s in &shape.sources {
        nodes.push(json!({"id": format!("source:{s}"), "kind": "source", "name": s, "backpressure": level(source_wait)}));
    }
    for s in &shape.steps {
        nodes.push(json!({"id": format!("step:{s}"), "kind": "step", "name": s, "backpressure": level(shard_wait)}));
    }
    for s in &shape.sinks {
        nodes.push(
            json!({"id": format!("sink:{s}"), "kind": "sink", "name": s, "backpressure": "OK"}),
        );
    }
    let first = shape.steps.first().map(|s| format!("step:{s}"));
    for s in &shape.sources {
        match &first {
            Some(step) => edges.push(json!([format!("source:{s}"), step])),
            None => {
                for k in &shape.sinks {
                    edges.push(json!([format!("source:{s}"), format!("sink:{k}")]));
                }
            }
        }
    }
    for pair in shape.steps.windows(2) {
        edges.push(json!([
            format!("step:{}", pair[0]),
            format!("step:{}", pair[1])
        ]));
    }
    if let Some(last) = shape.steps.last() {
        for k in &shape.sinks {
            edges.push(json!([format!("step:{last}"), format!("sink:{k}")]));
        }
    }
    for node in &mut nodes {
        let id = node["id"].as_str().unwrap_or_default().to_string();
        node["bottleneck"] = Value::Bool(bottleneck.as_ref().is_some_and(|(b, _)| b == &id));
    }

    json!({
        "pipeline": shape.name,
        "at_unix_ms": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "interval_s": secs,
        "sources": sources,
        "shards": shards,
        "steps": steps,
        "sinks": sinks,
        "functions": weir_versions::catalog().list()["functions"],
        "graph": {"nodes": nodes, "edges": edges},
        "bottleneck": bottleneck.map(|(stage, reason)| json!({"stage": stage, "reason": reason})),
    })
}

/// Where backpressure starts: (graph node id, why), or `None` when no stage waits.
fn bottleneck(
    shape: &Shape,
    source_wait: f64,
    sink_waits: &[(String, f64)],
) -> Option<(String, String)> {
    let worst_sink = sink_waits
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, w)| level(*w) != "OK");
    if let Some((sink, wait)) = worst_sink {
        return Some((
            format!("sink:{sink}"),
            format!(
                "the shards' lanes waited {:.0} % of the last second for room in sink `{sink}`'s queue",
                wait * 100.0
            ),
        ));
    }
    if level(source_wait) != "OK" {
        let stage = shape
            .steps
            .last()
            .map(|s| format!("step:{s}"))
            .unwrap_or_else(|| "shards".to_string());
        return Some((
            stage,
            format!(
                "the sources waited {:.0} % of the last second for room in the shards' queues: the steps cannot keep up",
                source_wait * 100.0
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            name: "p".into(),
            shards: 2,
            lanes: 1,
            sources: vec!["in".into()],
            steps: vec!["a".into(), "b".into()],
            sinks: vec!["out".into(), "dlq".into()],
            dead_letter: Some("dlq".into()),
        }
    }

    fn snapshot(values: &[(&str, &str, &str, u64)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (k, n, f, v) in values {
            s.values
                .insert((k.to_string(), n.to_string(), f.to_string()), *v);
        }
        s
    }

    #[test]
    fn a_stalled_sink_is_where_backpressure_starts() {
        let before = snapshot(&[
            ("queue", "sink-out", "blocked_micros", 0),
            ("queue", "shard-0", "blocked_micros", 0),
        ]);
        let now = snapshot(&[
            ("queue", "sink-out", "blocked_micros", 1_800_000),
            ("queue", "shard-0", "blocked_micros", 900_000),
            ("source", "in", "events", 500),
        ]);
        let v = view(&shape(), &now, Some(&before), Duration::from_secs(1));
        assert_eq!(v["bottleneck"]["stage"], "sink:out", "{v}");
        assert_eq!(v["steps"][0]["backpressure"], "HIGH");
        assert_eq!(v["sources"][0]["backpressure"], "HIGH");
        assert_eq!(v["sinks"][0]["backpressure"], "OK");
        let out = v["graph"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "sink:out")
            .unwrap()
            .clone();
        assert_eq!(out["bottleneck"], true);
        assert_eq!(v["graph"]["edges"].as_array().unwrap().len(), 1 + 1 + 2);
    }

    #[test]
    fn slow_steps_are_the_bottleneck_when_no_sink_is_waited_on() {
        let before = snapshot(&[("queue", "shard-1", "blocked_micros", 0)]);
        let now = snapshot(&[("queue", "shard-1", "blocked_micros", 300_000)]);
        let v = view(&shape(), &now, Some(&before), Duration::from_secs(1));
        assert_eq!(v["bottleneck"]["stage"], "step:b");
        assert_eq!(v["sources"][0]["backpressure"], "LOW");
        let calm = view(&shape(), &now, Some(&now), Duration::from_secs(1));
        assert!(calm["bottleneck"].is_null());
        let waiting = snapshot(&[("queue", "sink-dlq", "waiting", 1)]);
        let v = view(&shape(), &waiting, Some(&waiting), Duration::from_secs(1));
        assert_eq!(
            v["bottleneck"]["stage"], "sink:dlq",
            "a wait that has not ended counts"
        );
    }
}
