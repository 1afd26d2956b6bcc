//! The `kafka` source and sink against a real broker (KRaft, started by
//! scripts/kafka-dev.sh): exact content through a step, kill -9 and
//! restart, a second process joining the group, the broker restarting,
//! dead letters to a topic, and clear errors for unreachable brokers and
//! unknown topics.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::kafka::{Broker, Record};
use common::{start_weir, stop_weir, write};

/// A pipeline reading `in`, applying `expr`, writing to `out`.
fn pipeline(dir: &Path, broker: &Broker, name: &str, expr: &str, extra: &str) -> String {
    let text = format!(
        r#"
[pipeline]
name = "{name}"
[sources.in]
type = "kafka"
brokers = "{b}"
topics = ["in"]
group = "weir-{name}"
batch = {{ max_events = 500 }}
[[steps]]
name = "map"
type = "jq"
expr = '{expr}'
[sinks.out]
type = "kafka"
brokers = "{b}"
topic = "out"
[checkpoint]
interval = "100ms"
[shutdown]
timeout = "20s"
{extra}
"#,
        b = broker.bootstrap
    );
    write(dir, &format!("{name}.toml"), &text)
        .to_string_lossy()
        .into_owned()
}

/// Waits until the group committed `total` offsets on `topic`; returns
/// what it committed.
fn committed_within(
    broker: &Broker,
    group: &str,
    partitions: i32,
    total: i64,
    limit: Duration,
) -> i64 {
    let started = Instant::now();
    loop {
        let sum: i64 = broker.committed(group, "in", partitions).values().sum();
        if sum >= total || started.elapsed() >= limit {
            return sum;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Serialises the fault tests (kill -9, broker outages): each starts its
/// own broker and restarts things, and on two cores two of them at once
/// made a restarted broker take longer than the consumer's session
/// timeout (which has a test of its own).
fn one_fault_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until the group committed `total` offsets on `topic`.
fn await_committed(broker: &Broker, group: &str, partitions: i32, total: i64, limit: Duration) {
    let sum = committed_within(broker, group, partitions, total, limit);
    assert!(
        sum >= total,
        "group {group} committed {sum} of {total} within {limit:?}"
    );
}

fn ids(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.value)
                .unwrap_or_else(|e| panic!("output {:?} is not JSON: {e}", r.value));
            v["id"].as_u64().expect("an id")
        })
        .collect()
}

fn numbered(n: u64, keys: u64) -> impl Iterator<Item = (Option<String>, String)> {
    numbered_from(0..n, keys)
}

/// Events `{"id": i}` for `i` in `ids`, keyed `k{i % keys}`.
fn numbered_from(
    ids: std::ops::Range<u64>,
    keys: u64,
) -> impl Iterator<Item = (Option<String>, String)> {
    ids.map(move |i| (Some(format!("k{}", i % keys)), format!("{{\"id\":{i}}}")))
}

#[test]
fn kafka_to_kafka_through_a_jq_step_keeps_content_keys_and_key_order() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 3);
    let n = 2_000;
    broker.produce("in", numbered(n, 10));
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &broker, "exact", ".seen = true", "");
    let weir = start_weir(dir.path(), &p);
    let out = broker.read("out", n as usize, Duration::from_secs(60));
    await_committed(&broker, "weir-exact", 4, n as i64, Duration::from_secs(30));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    assert_eq!(out.len(), n as usize, "{log}");
    let mut last_per_key: HashMap<String, u64> = HashMap::new();
    let mut seen = HashSet::new();
    let mut by_partition: Vec<&Record> = out.iter().collect();
    by_partition.sort_by_key(|r| (r.partition, r.offset));
    for r in by_partition {
        let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
        let id = v["id"].as_u64().unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": id, "seen": true}),
            "exact content"
        );
        let key = r.key.clone().expect("the key is kept");
        assert_eq!(key, format!("k{}", id % 10));
        if let Some(prev) = last_per_key.insert(key.clone(), id) {
            assert!(id > prev, "key {key}: {id} after {prev}");
        }
        assert!(seen.insert(id), "duplicate {id} in a clean run");
    }
    assert_eq!(seen.len(), n as usize);
    // the final commit covers everything
    let committed: i64 = broker.committed("weir-exact", "in", 4).values().sum();
    assert_eq!(committed, n as i64);
}

#[test]
fn the_kip_848_consumer_group_protocol_delivers_everything() {
    let broker = Broker::start();
    broker.create_topic("in", 3);
    broker.create_topic("out", 3);
    let n = 1_000;
    broker.produce("in", numbered(n, 10));
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &broker, "kip848", ".seen = true", "");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "group = \"weir-kip848\"",
        "group = \"weir-kip848\"\ngroup_protocol = \"consumer\"",
    );
    std::fs::write(&p, text).unwrap();
    let weir = start_weir(dir.path(), &p);
    let out = broker.read("out", n as usize, Duration::from_secs(60));
    await_committed(&broker, "weir-kip848", 3, n as i64, Duration::from_secs(30));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    let distinct: HashSet<u64> = ids(&out).into_iter().collect();
    assert_eq!(distinct.len(), n as usize, "{log}");
    assert!(log.contains("partitions assigned"), "{log}");
}

#[test]
fn kill_9_and_restart_loses_nothing_and_duplicates_only_what_was_uncommitted() {
    let _alone = one_fault_test_at_a_time();
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    let n: u64 = 200_000;
    broker.produce("in", numbered(n, 1000));
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &broker, "crash", ".seen = true", "");
    let mut weir = start_weir(dir.path(), &p);
    await_committed(
        &broker,
        "weir-crash",
        4,
        (n * 3 / 10) as i64,
        Duration::from_secs(120),
    );
    weir.child.0.kill().unwrap(); // SIGKILL: no drain, no final commit
    weir.child.0.wait().unwrap();
    // requests the broker received just before the kill (a produce, an
    // asynchronous offset commit) may still be applied, later on a loaded
    // machine: read both counts once neither has moved for a second
    let counts = || {
        let committed: i64 = broker.committed("weir-crash", "in", 4).values().sum();
        let written: i64 = broker.end_offsets("out", 4).values().sum();
        (committed, written)
    };
    let mut last = counts();
    let settled = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = counts();
        if now == last || settled.elapsed() > Duration::from_secs(30) {
            break;
        }
        last = now;
    }
    let (committed_at_kill, written_at_kill) = last;
    assert!(
        committed_at_kill < n as i64,
        "everything was done before the kill; make the input larger"
    );

    let weir = start_weir(dir.path(), &p);
    await_committed(&broker, "weir-crash", 4, n as i64, Duration::from_secs(120));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    let out = broker.read("out", 2 * n as usize, Duration::from_secs(20));
    let distinct: HashSet<u64> = ids(&out).into_iter().collect();
    assert_eq!(
        distinct.len(),
        n as usize,
        "every input event is in the output"
    );
    let duplicates = out.len() as i64 - n as i64;
    let uncommitted = written_at_kill - committed_at_kill;
    assert!(
        duplicates <= uncommitted.max(0),
        "{duplicates} duplicates, but only {uncommitted} events were written after the last commit"
    );
}

#[test]
fn a_second_process_joining_the_group_takes_partitions_and_nothing_is_lost() {
    let broker = Broker::start();
    broker.create_topic("in", 6);
    broker.create_topic("out", 6);
    let n: u64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &broker, "join", ".seen = true", "");
    // produce while the group changes, so both members have work
    let producer = {
        let bootstrap = broker.bootstrap.clone();
        std::thread::spawn(move || {
            let b = common::kafka::Client { bootstrap };
            for chunk in 0..20 {
                b.produce(
                    "in",
                    (chunk * 3000..(chunk + 1) * 3000)
                        .map(|i| (Some(format!("k{}", i % 100)), format!("{{\"id\":{i}}}"))),
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let first = start_weir(dir.path(), &p);
    // the first group of a fresh broker also waits for __consumer_offsets
    let sum = committed_within(&broker, "weir-join", 6, 3000, Duration::from_secs(90));
    assert!(
        sum >= 3000,
        "group weir-join committed {sum} of 3000 within 90s; weir's log:\n{}",
        first.log()
    );
    let second = start_weir(dir.path(), &p);
    producer.join().unwrap();
    await_committed(&broker, "weir-join", 6, n as i64, Duration::from_secs(120));
    let (s1, log1) = stop_weir(first);
    let (s2, log2) = stop_weir(second);
    assert!(s1.success() && s2.success(), "{log1}\n---\n{log2}");
    assert!(
        log1.contains("partitions revoked"),
        "the first member gave partitions up:\n{log1}"
    );
    assert!(
        log2.contains("partitions assigned"),
        "the second member got partitions:\n{log2}"
    );
    let out = broker.read("out", 2 * n as usize, Duration::from_secs(20));
    let distinct: HashSet<u64> = ids(&out).into_iter().collect();
    assert_eq!(
        distinct.len(),
        n as usize,
        "nothing lost across the rebalance"
    );
}

#[test]
fn the_broker_stopping_for_ten_seconds_loses_nothing() {
    let _alone = one_fault_test_at_a_time();
    let broker = Broker::start();
    broker.create_topic("in", 2);
    broker.create_topic("out", 2);
    let half: u64 = 20_000;
    broker.produce("in", numbered(half, 50));
    let dir = tempfile::tempdir().unwrap();
    // the outage must stay within the consumer's session: a broker that
    // is back in 10 s can take another 30 s to serve a loaded CI machine,
    // past librdkafka's default 45 s (partitions lost is another test's
    // matter: tests/faults.rs)
    let p = pipeline(
        dir.path(),
        &broker,
        "outage",
        ".seen = true",
        "[sources.in.options]\n\"session.timeout.ms\" = \"120000\"\n",
    );
    let weir = start_weir(dir.path(), &p);
    await_committed(&broker, "weir-outage", 2, 1_000, Duration::from_secs(60));
    broker.stop();
    std::thread::sleep(Duration::from_secs(10));
    broker.restart();
    broker.produce("in", numbered_from(half..2 * half, 50));
    let sum = committed_within(
        &broker,
        "weir-outage",
        2,
        2 * half as i64,
        Duration::from_secs(120),
    );
    let (status, log) = stop_weir(weir);
    assert_eq!(sum, 2 * half as i64, "committed after the outage\n{log}");
    assert!(status.success(), "exit {status:?}\n{log}");
    let out = broker.read("out", 4 * half as usize, Duration::from_secs(20));
    let distinct: HashSet<u64> = ids(&out).into_iter().collect();
    assert_eq!(
        distinct.len(),
        2 * half as usize,
        "weir resumed after the outage"
    );
}

/// The broker away longer than the consumer's session: librdkafka
/// declares the partitions lost (nothing of them is committed), the member
/// rejoins once the broker is back and delivers everything. A second such
/// outage ends with a SIGTERM while the member waits to rejoin — a
/// restarted coordinator holds the new member's JoinGroup until the old
/// member id's session expires, and librdkafka's close waits for that
/// answer: weir must stop within its shutdown timeout all the same,
/// leaving the consumer's close behind.
#[test]
fn the_broker_away_past_the_session_loses_nothing_and_a_sigterm_meanwhile_ends_in_time() {
    let _alone = one_fault_test_at_a_time();
    let broker = Broker::start();
    broker.create_topic("in", 2);
    broker.create_topic("out", 2);
    let half: u64 = 10_000;
    broker.produce("in", numbered(half, 50));
    let dir = tempfile::tempdir().unwrap();
    let session = Duration::from_secs(20);
    let options = format!(
        "[sources.in.options]\n\"session.timeout.ms\" = \"{}\"\n\"heartbeat.interval.ms\" = \"2000\"\n\"reconnect.backoff.max.ms\" = \"1000\"\n",
        session.as_millis()
    );
    let p = pipeline(dir.path(), &broker, "expiry", ".seen = true", &options);
    // a shutdown timeout well inside the session, so that a close waiting
    // for the held JoinGroup would overrun it
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("timeout = \"20s\"", "timeout = \"5s\"")).unwrap();
    let weir = start_weir(dir.path(), &p);
    await_committed(
        &broker,
        "weir-expiry",
        2,
        half as i64,
        Duration::from_secs(60),
    );
    let away = session + Duration::from_secs(5);
    broker.stop();
    std::thread::sleep(away);
    assert!(
        weir.log().contains("partitions lost"),
        "the session did not expire while the broker was away {away:?}\n{}",
        weir.log()
    );
    broker.restart();
    broker.produce("in", numbered_from(half..2 * half, 50));
    let sum = committed_within(
        &broker,
        "weir-expiry",
        2,
        2 * half as i64,
        Duration::from_secs(120),
    );
    assert_eq!(
        sum,
        2 * half as i64,
        "committed after the member rejoined\n{}",
        weir.log()
    );
    // again; this time SIGTERM once the member had time to reconnect and
    // ask to join, well before the old id's session ends
    broker.stop();
    std::thread::sleep(away);
    broker.restart();
    std::thread::sleep(Duration::from_secs(4));
    let stopping = Instant::now();
    let (status, log) = stop_weir(weir);
    let took = stopping.elapsed();
    eprintln!(
        "SIGTERM while rejoining: stopped in {took:?}; consumer close left behind: {}",
        log.contains("left behind")
    );
    // [shutdown] timeout = 5 s; the rest is the process's exit
    assert!(
        took < Duration::from_secs(7),
        "SIGTERM took {took:?}, past the shutdown timeout\n{log}"
    );
    assert!(status.success(), "exit {status:?}\n{log}");
    let out = broker.read("out", 4 * half as usize, Duration::from_secs(20));
    let distinct: HashSet<u64> = ids(&out).into_iter().collect();
    assert_eq!(distinct.len(), 2 * half as usize, "every event was written");
}

#[test]
fn poison_events_reach_the_dead_letter_topic_with_the_error_in_headers() {
    let broker = Broker::start();
    broker.create_topic("in", 2);
    broker.create_topic("out", 2);
    broker.create_topic("dlq", 1);
    let records = (0..500u64).map(|i| {
        let value = match i {
            100 => "{not json".to_string(),
            300 => "{\"id\":300,\"poison\":true}".to_string(),
            _ => format!("{{\"id\":{i}}}"),
        };
        (Some(format!("k{}", i % 7)), value)
    });
    broker.produce("in", records);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[sinks.dlq]
type = "kafka"
brokers = "{}"
topic = "dlq"
[dead_letter]
sink = "dlq"
"#,
        broker.bootstrap
    );
    let text = std::fs::read_to_string(pipeline(dir.path(), &broker, "poison", "", "")).unwrap();
    let text = text
        .replace(
            "[[steps]]\nname = \"map\"\ntype = \"jq\"\nexpr = ''",
            "[[steps]]\nname = \"parse\"\ntype = \"json\"\n[[steps]]\nname = \"check\"\ntype = \"jq\"\nexpr = 'if .poison then error(\"poison pill \\(.id)\") else . end'",
        )
        + &extra;
    let p = write(dir.path(), "poison2.toml", &text);
    let weir = start_weir(dir.path(), p.to_str().unwrap());
    let dead = broker.read("dlq", 2, Duration::from_secs(60));
    let good = broker.read("out", 498, Duration::from_secs(60));
    await_committed(&broker, "weir-poison", 2, 500, Duration::from_secs(30));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    assert_eq!(good.len(), 498, "the rest flow");
    assert_eq!(dead.len(), 2, "{dead:#?}");
    let header = |r: &Record, k: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no header {k} on {r:?}"))
    };
    let invalid = dead
        .iter()
        .find(|r| r.value == "{not json")
        .expect("the invalid JSON");
    assert_eq!(header(invalid, "weir.stage"), "parse");
    assert!(header(invalid, "weir.error")
        .to_lowercase()
        .contains("json"));
    assert_eq!(header(invalid, "weir.source"), "in");
    assert_eq!(invalid.key.as_deref(), Some("k2"), "the key is kept");
    let poison = dead
        .iter()
        .find(|r| r.value.contains("poison"))
        .expect("the poison event");
    assert_eq!(header(poison, "weir.stage"), "check");
    assert!(header(poison, "weir.error").contains("poison pill 300"));
}

#[test]
fn a_record_too_large_for_the_sink_goes_to_the_dead_letter_sink_without_retries() {
    let broker = Broker::start();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    let big = format!("{{\"id\":5,\"pad\":\"{}\"}}", "x".repeat(5_000));
    broker.produce(
        "in",
        (0..10u64).map(|i| {
            let v = if i == 5 {
                big.clone()
            } else {
                format!("{{\"id\":{i}}}")
            };
            (Some(format!("k{i}")), v)
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "big.toml",
        &format!(
            r#"
[pipeline]
name = "big"
[sources.in]
type = "kafka"
brokers = "{b}"
topics = ["in"]
group = "weir-big"
batch = {{ max_events = 1 }}
[sinks.out]
type = "kafka"
brokers = "{b}"
topic = "out"
batch = {{ max_events = 1 }}
options = {{ "message.max.bytes" = "2000" }}
[sinks.dlq]
type = "file"
path = "dlq.jsonl"
format = "envelope"
[dead_letter]
sink = "dlq"
[retry]
max_attempts = 5
initial_backoff = "1s"
"#,
            b = broker.bootstrap
        ),
    );
    let started = Instant::now();
    let weir = start_weir(dir.path(), &p);
    let out = broker.read("out", 9, Duration::from_secs(60));
    await_committed(&broker, "weir-big", 1, 10, Duration::from_secs(30));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    assert_eq!(out.len(), 9, "{log}");
    let dead = common::read_envelopes(&dir.path().join("dlq.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(
        dead[0]["headers"]["weir.attempts"], "1",
        "not retried: {dead:#?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn unreachable_brokers_and_unknown_topics_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // nothing listens on port 1
    let unreachable = write(
        dir.path(),
        "down.toml",
        r#"
[pipeline]
name = "down"
[sources.in]
type = "kafka"
brokers = "127.0.0.1:1"
topics = ["in"]
group = "g"
connect_timeout = "2s"
[sinks.out]
type = "blackhole"
"#,
    );
    let started = Instant::now();
    let out = common::run_in(dir.path(), &["run", unreachable.to_str().unwrap()]);
    common::assert_failed_with(&out, "cannot reach the brokers `127.0.0.1:1`");
    assert!(started.elapsed() < Duration::from_secs(30));

    let broker = Broker::start();
    broker.create_topic("out", 1);
    let unknown = write(
        dir.path(),
        "unknown.toml",
        &format!(
            r#"
[pipeline]
name = "unknown"
[sources.in]
type = "kafka"
brokers = "{b}"
topics = ["no-such-topic"]
group = "g"
[sinks.out]
type = "kafka"
brokers = "{b}"
topic = "out"
"#,
            b = broker.bootstrap
        ),
    );
    let out = common::run_in(dir.path(), &["run", unknown.to_str().unwrap()]);
    common::assert_failed_with(&out, "topic `no-such-topic` does not exist");
    let sink_unknown = write(
        dir.path(),
        "sink.toml",
        &format!(
            r#"
[pipeline]
name = "sink"
[sources.in]
type = "generator"
count = 10
[sinks.out]
type = "kafka"
brokers = "{b}"
topic = "missing-out"
"#,
            b = broker.bootstrap
        ),
    );
    let out = common::run_in(dir.path(), &["run", sink_unknown.to_str().unwrap()]);
    common::assert_failed_with(&out, "topic `missing-out` does not exist");
}

/// Static membership: two processes with their own `instance` share a
/// group; one is stopped and started again within the session timeout. The
/// other sees no rebalance (no partition revoked or assigned), and the
/// restarted one resumes its partitions: everything is committed.
#[test]
fn a_static_member_restarted_within_the_session_timeout_causes_no_rebalance() {
    let broker = Broker::start();
    broker.create_topic("in", 6);
    broker.create_topic("out", 6);
    let dir = tempfile::tempdir().unwrap();
    let file = |instance: &str| {
        let text = format!(
            r#"
[pipeline]
name = "static-{instance}"
[sources.in]
type = "kafka"
brokers = "{b}"
topics = ["in"]
group = "weir-static"
instance = "{instance}"
options = {{ "session.timeout.ms" = "30000" }}
[sinks.out]
type = "kafka"
brokers = "{b}"
topic = "out"
[checkpoint]
interval = "100ms"
"#,
            b = broker.bootstrap
        );
        write(dir.path(), &format!("{instance}.toml"), &text)
    };
    let (file_a, file_b) = (file("a"), file("b"));
    let records = |from: u64, to: u64| {
        (from..to).map(|i| (Some(format!("k{}", i % 50)), format!("{{\"id\":{i}}}")))
    };
    let a = start_weir(dir.path(), &file_a);
    let b = start_weir(dir.path(), &file_b);
    broker.produce("in", records(0, 3000));
    await_committed(&broker, "weir-static", 6, 3000, Duration::from_secs(90));
    // both members hold partitions and the group has settled
    let started = Instant::now();
    while !(a.log().contains("partitions assigned") && b.log().contains("partitions assigned")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a member got no partitions"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let changes = |log: &str| {
        log.matches("partitions assigned").count() + log.matches("partitions revoked").count()
    };
    // a cooperative join settles in rounds: wait until B's assignment has
    // not changed for 4 s before taking the baseline
    let mut before = changes(&b.log());
    loop {
        std::thread::sleep(Duration::from_secs(4));
        let now = changes(&b.log());
        if now == before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the group never settled"
        );
        before = now;
    }

    let (status, log) = stop_weir(a);
    assert!(status.success(), "{log}");
    broker.produce("in", records(3000, 6000));
    let a = start_weir(dir.path(), &file_a);
    await_committed(&broker, "weir-static", 6, 6000, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let b_log = b.log();
    assert_eq!(
        changes(&b_log),
        before,
        "the other member saw a rebalance when a static member restarted:\n{b_log}"
    );
    let (sa, la) = stop_weir(a);
    let (sb, lb) = stop_weir(b);
    assert!(sa.success() && sb.success(), "{la}\n---\n{lb}");
    let out = broker.read("out", 6000, Duration::from_secs(30));
    let ids: std::collections::HashSet<String> = out.iter().map(|r| r.value.clone()).collect();
    assert_eq!(ids.len(), 6000, "every event is in the output");
}
