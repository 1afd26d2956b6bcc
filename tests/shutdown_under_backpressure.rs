//! SIGTERM while a key-routed source (`jetstream`, `postgres-cdc`) is
//! blocked on a full shard, on a real nats-server and a real PostgreSQL
//! server: the dispatch that shutdown gives up is not
//! a delivery failure, so the run ends drained (`weir run` exits 0), and
//! the given-up messages are redelivered to the next run: nothing is lost.
//! In-process, with a sink stalled until just after the shutdown request.
//! (Messages the pull stream had prefetched but weir had not read yet are
//! neither acked nor nak'ed: the server redelivers them after `ack_wait`,
//! set short here.)

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::stall_sink;

/// A jetstream source into the stall sink, with small queues: the source
/// soon blocks in dispatch.
fn config(url: &str) -> (weir_engine::Registry, weir_config::PipelineConfig) {
    stall_sink::pipeline(
        "sigterm-backpressure",
        "jetstream",
        &format!("url = \"{url}\"\nstream = \"IN\"\nconsumer = \"weir\"\nack_wait = \"5s\""),
        100,
        200,
        200,
    )
}

/// Lets the stalled sink fill the shards until the source blocks, asks
/// for shutdown, lets the sink recover just after (within the drain), and
/// checks the run still ended drained.
fn stop_while_blocked(running: common::in_process::InProcess) {
    std::thread::sleep(Duration::from_millis(2_000));
    let unstall = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        stall_sink::release();
    });
    let report = running.stop();
    unstall.join().unwrap();
    assert!(
        report.drained,
        "a dispatch given up at shutdown made the run end undrained (weir run would exit 1)"
    );
}

/// The tests share the stall sink: one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    stall_sink::reset();
    guard
}

#[test]
fn sigterm_while_a_key_routed_source_is_blocked_ends_drained_and_loses_nothing() {
    let _alone = one_at_a_time();
    let server = common::nats::Server::start();
    server.create_stream("IN", &["in.>"]);
    let n = 5_000usize;
    server.publish((0..n).map(|i| (format!("in.{}", i % 10), format!("{{\"id\":{i}}}"))));
    let (registry, config) = config(&server.url);
    let running = common::in_process::start(&config, &registry);
    stop_while_blocked(running);
    let first_run = stall_sink::written().len();
    eprintln!("first run delivered {first_run}");
    assert!(first_run < n, "the stall did not hold anything back");

    // the next run gets what the first did not deliver
    let running = common::in_process::start(&config, &registry);
    let started = Instant::now();
    loop {
        let unique: HashSet<String> = stall_sink::written().into_iter().collect();
        if unique.len() == n {
            eprintln!("second run complete after {:?}", started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {n} delivered over both runs",
            unique.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(running.stop().drained);
}

/// A postgres-cdc source into the stall sink, with small queues.
fn cdc_config(url: &str) -> (weir_engine::Registry, weir_config::PipelineConfig) {
    stall_sink::pipeline(
        "sigterm-backpressure-cdc",
        "postgres-cdc",
        &format!(
            "url = \"{url}\"\npublication = \"weir_pub\"\nslot = \"weir_slot\"\ntables = [\"t\"]"
        ),
        100,
        200,
        200,
    )
}

/// The row ids of the change events written so far.
fn written_ids() -> HashSet<i64> {
    stall_sink::written()
        .iter()
        .map(|v| {
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            v["after"]["id"].as_i64().expect("an insert with an id")
        })
        .collect()
}

#[test]
fn sigterm_while_the_change_feed_is_blocked_ends_drained_and_loses_nothing() {
    let _alone = one_at_a_time();
    let server = common::postgres::Server::start();
    server.psql("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)");
    let (registry, config) = cdc_config(&server.url);
    let running = common::in_process::start(&config, &registry);
    let started = Instant::now();
    while server.slot_confirmed("weir_slot").is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "no slot");
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = 5_000i64;
    server.psql(&format!(
        "INSERT INTO t SELECT g, 0 FROM generate_series(1, {n}) g"
    ));
    stop_while_blocked(running);
    let first_run = written_ids().len();
    eprintln!("first run delivered {first_run}");
    assert!(
        (first_run as i64) < n,
        "the stall did not hold anything back"
    );

    // the next run resumes from the slot's confirmed position and gets the rest
    let running = common::in_process::start(&config, &registry);
    let started = Instant::now();
    loop {
        if written_ids().len() as i64 == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {n} delivered over both runs",
            written_ids().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(running.stop().drained);
}
