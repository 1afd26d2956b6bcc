//! Exactly-once Kafka → Kafka against a real broker: the `kafka` sink's
//! records and the `kafka` source's offsets committed in one transaction
//! per epoch. Checked by a `read_committed` reader after kill -9 cycles
//! under load, and after a frozen member (a zombie) comes back once the
//! group gave its partitions to another process.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::kafka::{Broker, Client, Isolation};
use common::{start_weir, stop_weir, write};

/// A pipeline reading `in` as group `weir-{name}`, marking each event, and
/// writing `out` in transactions of `transactional_id`.
fn pipeline(
    dir: &Path,
    broker: &Broker,
    name: &str,
    transactional_id: &str,
    extra: &str,
) -> String {
    let text = format!(
        r#"
[pipeline]
name = "{name}"
[sources.in]
type = "kafka"
brokers = "{b}"
topics = ["in"]
group = "weir-{name}"
exactly_once_sink = "out"
batch = {{ max_events = 500 }}
{extra}
[[steps]]
name = "mark"
type = "jq"
expr = '.seen = true'
[sinks.out]
type = "kafka"
brokers = "{b}"
topic = "out"
transactional_id = "{transactional_id}"
[checkpoint]
interval = "200ms"
[shutdown]
timeout = "20s"
"#,
        b = broker.bootstrap
    );
    write(dir, &format!("{name}-{transactional_id}.toml"), &text)
        .to_string_lossy()
        .into_owned()
}

/// Events `ids`, keyed over 97 keys, each `{"id":N}`.
fn numbered(ids: std::ops::Range<u64>) -> impl Iterator<Item = (Option<String>, String)> {
    ids.map(|i| (Some(format!("k{}", i % 97)), format!("{{\"id\":{i}}}")))
}

/// Produces events `ids` to `in` in `chunks`, a pause after each, on a
/// thread (so faults land while input still arrives).
fn produce_over_time(
    broker: &Broker,
    ids: std::ops::Range<u64>,
    chunks: u64,
    pause: Duration,
) -> JoinHandle<()> {
    let client = Client {
        bootstrap: broker.bootstrap.clone(),
    };
    std::thread::spawn(move || {
        let per = (ids.end - ids.start) / chunks;
        for chunk in 0..chunks {
            let start = ids.start + chunk * per;
            let end = if chunk + 1 == chunks {
                ids.end
            } else {
                start + per
            };
            client.produce("in", numbered(start..end));
            std::thread::sleep(pause);
        }
    })
}

/// The group's committed offsets on `in`, summed.
fn committed(broker: &Broker, group: &str, partitions: i32) -> i64 {
    broker.committed(group, "in", partitions).values().sum()
}

/// Waits until the group committed at least `total` offsets.
fn await_committed(
    broker: &Broker,
    group: &str,
    partitions: i32,
    total: i64,
    limit: Duration,
    log: impl Fn() -> String,
) {
    let started = Instant::now();
    loop {
        let sum = committed(broker, group, partitions);
        if sum >= total {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "group {group} committed {sum} of {total} within {limit:?}; weir's log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How often each id of `0..n` is in `topic` for a reader of
/// `isolation`, and the ids it holds that are not input.
fn tally(broker: &Broker, topic: &str, n: u64, isolation: Isolation) -> (HashMap<u64, u32>, usize) {
    let records = broker.read_all(
        topic,
        isolation,
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut foreign = 0;
    for r in &records {
        let v: serde_json::Value = serde_json::from_str(&r.value)
            .unwrap_or_else(|e| panic!("output {:?} is not JSON: {e}", r.value));
        if topic == "out" {
            assert_eq!(
                v["seen"], true,
                "every output went through the step: {}",
                r.value
            );
        }
        match v["id"].as_u64() {
            Some(id) if id < n => *seen.entry(id).or_default() += 1,
            _ => foreign += 1,
        }
    }
    (seen, foreign)
}

/// Asserts that a `read_committed` reader sees each of `0..n` exactly
/// once; returns how many records a `read_uncommitted` reader sees beyond
/// that (what aborted transactions wrote).
fn assert_exactly_once(broker: &Broker, n: u64) -> usize {
    let (seen, foreign) = tally(broker, "out", n, Isolation::ReadCommitted);
    let missing: Vec<u64> = (0..n)
        .filter(|id| !seen.contains_key(id))
        .take(10)
        .collect();
    let twice: Vec<(u64, u32)> = seen
        .iter()
        .filter(|(_, &count)| count > 1)
        .map(|(&id, &count)| (id, count))
        .take(10)
        .collect();
    let duplicated: u32 = seen.values().map(|c| c - 1).sum();
    if !twice.is_empty() {
        // the input's own count of those ids and where the copies are
        let (input, _) = tally(broker, "in", n, Isolation::ReadCommitted);
        let records = broker.read_all(
            "out",
            Isolation::ReadCommitted,
            Duration::from_secs(3),
            Duration::from_secs(60),
        );
        for (id, count) in &twice {
            let needle = format!("\"id\":{id},");
            let at: Vec<(i32, i64)> = records
                .iter()
                .filter(|r| r.value.contains(&needle))
                .map(|r| (r.partition, r.offset))
                .collect();
            eprintln!(
                "id {id}: {count} times in out at {at:?}; {} times in in",
                input.get(id).copied().unwrap_or(0)
            );
            // what surrounds each copy, for a committed and an uncommitted reader
            let uncommitted = broker.read_all(
                "out",
                Isolation::ReadUncommitted,
                Duration::from_secs(3),
                Duration::from_secs(60),
            );
            for &(p, o) in &at {
                let near = |records: &[common::kafka::Record]| -> Vec<i64> {
                    records
                        .iter()
                        .filter(|r| r.partition == p && (r.offset - o).abs() <= 4)
                        .map(|r| r.offset)
                        .collect()
                };
                eprintln!(
                    "  copy at {p}/{o}: committed reader has {:?}, uncommitted reader has {:?}",
                    near(&records),
                    near(&uncommitted)
                );
            }
        }
    }
    assert!(
        missing.is_empty() && twice.is_empty() && foreign == 0,
        "read_committed: {} of {n} ids present, {duplicated} duplicates (e.g. {twice:?}), missing e.g. {missing:?}, {foreign} foreign",
        seen.len()
    );
    let (all, _) = tally(broker, "out", n, Isolation::ReadUncommitted);
    let uncommitted: u32 = all.values().sum();
    uncommitted as usize - n as usize
}

#[test]
fn kill_9_cycles_under_load_leave_every_event_exactly_once_for_a_read_committed_reader() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    // kill cycles: 3, or WEIR_FAULT_CYCLES (the recorded long run)
    let cycles: u64 = std::env::var("WEIR_FAULT_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // a backlog the pipeline is busy with, and more arriving meanwhile
    let backlog: u64 = 100_000 * cycles;
    let n: u64 = backlog + 30_000;
    broker.produce("in", numbered(0..backlog));
    let dir = tempfile::tempdir().unwrap();
    // static membership: a restarted process takes its place at once
    let p = pipeline(dir.path(), &broker, "eos", "eos-1", "instance = \"eos-1\"");
    let producing = produce_over_time(&broker, backlog..n, 30, Duration::from_millis(300));
    let mut rng = fastrand::Rng::with_seed(
        std::env::var("WEIR_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7),
    );
    let mut weir = start_weir(dir.path(), &p);
    for cycle in 0..cycles {
        let before = committed(&broker, "weir-eos", 4);
        // the first epoch of a fresh broker also waits for the
        // transaction and offsets topics
        let limit = Duration::from_secs(if cycle == 0 { 90 } else { 60 });
        await_committed(&broker, "weir-eos", 4, before + 1, limit, || weir.log());
        std::thread::sleep(Duration::from_millis(rng.u64(50..800)));
        weir.child.0.kill().unwrap(); // SIGKILL: an epoch is cut anywhere
        weir.child.0.wait().unwrap();
        let at_kill = committed(&broker, "weir-eos", 4);
        eprintln!("cycle {cycle}: killed with {at_kill} offsets committed");
        assert!(
            at_kill < n as i64,
            "everything was done before kill {cycle}; make the input larger"
        );
        weir = start_weir(dir.path(), &p);
    }
    producing.join().unwrap();
    await_committed(
        &broker,
        "weir-eos",
        4,
        n as i64,
        Duration::from_secs(120),
        || weir.log(),
    );
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    eprintln!(
        "messages librdkafka delivered again (dropped) in the last run: {}",
        log.matches("delivered a message again").count()
    );
    let aborted = assert_exactly_once(&broker, n);
    eprintln!("exactly once: {n} events through {cycles} kill -9 cycles; {aborted} records of aborted transactions hidden from the read_committed reader");
}

#[test]
fn a_zombie_member_back_after_a_rebalance_is_fenced_and_nothing_is_duplicated() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    let backlog: u64 = 100_000;
    let n: u64 = backlog + 20_000;
    broker.produce("in", numbered(0..backlog));
    let dir = tempfile::tempdir().unwrap();
    // a short session, so the frozen member is taken out of the group soon
    let session =
        r#"options = { "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000" }"#;
    let first = pipeline(dir.path(), &broker, "zombie", "zombie-a", session);
    let second = pipeline(dir.path(), &broker, "zombie", "zombie-b", session);
    let producing = produce_over_time(&broker, backlog..n, 20, Duration::from_millis(500));
    let mut zombie = start_weir(dir.path(), &first);
    await_committed(
        &broker,
        "weir-zombie",
        4,
        2_000,
        Duration::from_secs(90),
        || zombie.log(),
    );
    // frozen in the middle of an epoch: its transaction stays open
    let pid = zombie.child.0.id() as i32;
    // SAFETY: signalling a child process this test started
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let frozen_at = committed(&broker, "weir-zombie", 4);
    let mut successor = start_weir(dir.path(), &second);
    // the successor commits past the zombie once the group gave it all
    await_committed(
        &broker,
        "weir-zombie",
        4,
        frozen_at + 2_000,
        Duration::from_secs(90),
        || successor.log(),
    );
    // SAFETY: as above
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = zombie.child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the zombie still runs a minute after it was thawed; its log:\n{}",
            zombie.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let zombie_log = zombie.log();
    assert!(
        !status.success(),
        "the zombie must stop with an error, not commit: {status:?}\n{zombie_log}"
    );
    let reason = zombie_log
        .lines()
        .find(|l| l.contains("partitions lost") || l.contains("transaction"))
        .unwrap_or_else(|| panic!("the zombie says why it stopped:\n{zombie_log}"));
    eprintln!("the zombie stopped: {reason}");
    producing.join().unwrap();
    // the zombie's return starts a rebalance: an epoch commit of the
    // successor that meets it is refused (ILLEGAL_GENERATION), aborted, and
    // the successor stops with an error, as documented; like a supervisor,
    // the test starts it again, and exactly-once must still hold
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut restarts = 0;
    while committed(&broker, "weir-zombie", 4) < n as i64 {
        if let Some(status) = successor.child.0.try_wait().unwrap() {
            let log = successor.log();
            let why = log
                .lines()
                .find(|l| l.contains("ERROR"))
                .unwrap_or("(no error logged)")
                .to_string();
            assert!(!status.success(), "the successor stopped early:\n{log}");
            eprintln!("the successor stopped ({status}), started again: {why}");
            restarts += 1;
            assert!(restarts <= 3, "the successor keeps stopping:\n{log}");
            successor = start_weir(dir.path(), &second);
        }
        assert!(
            Instant::now() < deadline,
            "group weir-zombie committed {} of {n} within 120 s; the successor's log:\n{}",
            committed(&broker, "weir-zombie", 4),
            successor.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, log) = stop_weir(successor);
    assert!(status.success(), "exit {status:?}\n{log}");
    let aborted = assert_exactly_once(&broker, n);
    eprintln!(
        "the zombie was fenced; {aborted} records of aborted transactions hidden from the read_committed reader"
    );
}
