//! A `jetstream` source in front of a sink stalled for longer than the
//! consumer's `ack_wait`: the source keeps the waiting messages alive with
//! in-progress acks, so the real nats-server redelivers nothing and no
//! event is written twice. (Before the acker, the same run duplicated
//! thousands of events.) In-process pipeline with a test sink registered the
//! way any connector registers; the server is real.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::stall_sink;
use weir_config::{ComponentConfig, PipelineConfig};

use common::metrics::{metric, recorder as metrics};

#[test]
fn a_sink_stalled_past_ack_wait_causes_no_redelivery_and_no_duplicate() {
    metrics();
    let server = common::nats::Server::start();
    server.create_stream("IN", &["in.>"]);
    let n = 3_000usize;
    server.publish((0..n).map(|i| (format!("in.{}", i % 10), format!("{{\"id\":{i}}}"))));

    let mut registry = weir::registry();
    registry.sink("stall", stall_sink::build);
    let source = ComponentConfig::from_toml(
        "in",
        "jetstream",
        &format!(
            "url = \"{}\"\nstream = \"IN\"\nconsumer = \"weir\"\nack_wait = \"2s\"\nbatch = {{ max_events = 100 }}\n",
            server.url
        ),
    )
    .unwrap();
    let sink = ComponentConfig::from_toml("out", "stall", "batch = { max_events = 100 }").unwrap();
    let mut config = PipelineConfig::new_in_code(vec![source], vec![], vec![sink]);
    config.pipeline.name = "in-progress".into();
    config.pipeline.shards = Some(2);
    // small queues: the source soon blocks in dispatch, with messages held
    config.queues.inbox_max_events = 200;
    config.queues.sink_max_events = 200;
    config.checkpoint.dir = tempfile::tempdir().unwrap().keep();
    let running = common::in_process::start(&config, &registry);

    // stalled for three and a half times ack_wait
    std::thread::sleep(Duration::from_millis(7_000));
    assert!(
        metric("weir_jetstream_in_progress_total{source=\"in\"}") > 0.0,
        "no in-progress ack was sent while the sink stalled"
    );
    stall_sink::release();
    let started = Instant::now();
    while stall_sink::written().len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {n} written",
            stall_sink::written().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // time for a redelivery to show up, if the server made one
    std::thread::sleep(Duration::from_millis(3_000));
    assert!(running.stop().drained);

    let written = stall_sink::written();
    let unique: HashSet<&String> = written.iter().collect();
    assert_eq!(unique.len(), n, "every message was written");
    assert_eq!(
        written.len(),
        n,
        "{} duplicates",
        written.len() - unique.len()
    );
    assert_eq!(
        metric("weir_jetstream_redeliveries_total{source=\"in\"}"),
        0.0,
        "the server redelivered messages that were waiting inside weir"
    );
}
