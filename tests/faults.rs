//! The fault-injection suite: for Kafka, JetStream and the Postgres change
//! feed, processes of one pipeline killed with kill -9 at random moments and
//! restarted (while the group rebalances, during the initial snapshot), a
//! function swapped under load, SIGTERM mid-stream, the server frozen with
//! SIGSTOP (weir's memory sampled) and the server killed and restarted;
//! every input event must be in the output, and duplicates are counted.
//!
//! A short run (3 cycles) is part of `scripts/test.sh`; the recorded long
//! run is
//! `WEIR_FAULT_CYCLES=20 WEIR_FAULT_REPORT=faults.jsonl cargo test --test faults -- --nocapture`
//! (docs/reliability.md). Each scenario prints `fault report: {json}`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::faults::{
    between, process_tree, signal, tally, tally_range, wait_until, Members, Report, Settings,
};
use common::kafka::Broker;
use common::nats::Server as NatsServer;
use common::postgres::Server as PgServer;
use common::wasm::guest;
use common::write;

/// The ids (`{"id":N}`) of JSON values.
fn ids<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<u64> {
    values
        .into_iter()
        .map(|v| {
            let v: serde_json::Value =
                serde_json::from_str(v).unwrap_or_else(|e| panic!("{v:?} is not JSON: {e}"));
            v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
        })
        .collect()
}

/// A thread writing numbered events `{"id":N}` from `next` on, in chunks of
/// `chunk` every `every`, until stopped; `send` writes one chunk and says
/// whether it was accepted (a chunk refused while the server is down is sent
/// again).
struct Feeder {
    stop: Arc<AtomicBool>,
    /// The next id to write (= how many were written, from 0).
    next: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Feeder {
    fn start(
        next: u64,
        chunk: u64,
        every: Duration,
        send: impl Fn(std::ops::Range<u64>) -> bool + Send + 'static,
    ) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicU64::new(next));
        let thread = {
            let (stop, counter) = (stop.clone(), counter.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let from = counter.load(Ordering::Relaxed);
                    if send(from..from + chunk) {
                        counter.store(from + chunk, Ordering::Relaxed);
                    }
                    std::thread::sleep(every);
                }
            })
        };
        Feeder {
            stop,
            next: counter,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns how many events were written in all.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.next.load(Ordering::Relaxed)
    }

    /// How many events were written so far.
    fn written(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Kills a random member at a random moment, keeps it down for a random
/// time up to `max_down`, starts it again, and waits until
/// `caught_up(&mark)` says the work written before the kill is done
/// (`mark()` is taken at the kill); returns each of these times from the
/// kill. `swap` runs once, midway.
fn kill_cycles<M>(
    settings: &Settings,
    rng: &mut fastrand::Rng,
    members: &mut Members,
    max_down: Duration,
    mut mark: impl FnMut() -> M,
    mut caught_up: impl FnMut(&M) -> bool,
    mut swap: impl FnMut(&mut Members),
) -> Vec<u128> {
    let mut resume = Vec::new();
    for cycle in 0..settings.cycles {
        std::thread::sleep(between(
            rng,
            Duration::from_millis(300),
            Duration::from_millis(3000),
        ));
        members.revive();
        if cycle == settings.cycles / 2 {
            swap(members);
        }
        let victim = rng.usize(0..members.len());
        members.kill_9(victim);
        let killed = Instant::now();
        let written = mark();
        std::thread::sleep(between(rng, Duration::ZERO, max_down));
        members.start(victim);
        members.wait_until(
            &format!("cycle {cycle}: the work before the kill done"),
            Duration::from_secs(180),
            || caught_up(&written),
        );
        resume.push(killed.elapsed().as_millis());
        eprintln!(
            "cycle {cycle}: killed member {victim}, caught up {:?} after the kill",
            killed.elapsed()
        );
    }
    resume
}

/// SIGSTOP to a server's processes for `freeze`, sampling weir's memory;
/// returns the largest resident memory (KiB) of a member before and during.
fn freeze(members: &mut Members, server_pid: u32, freeze: Duration) -> (u64, u64) {
    let before = members.sample_memory();
    let tree = process_tree(server_pid);
    for pid in &tree {
        signal(*pid, libc::SIGSTOP);
    }
    let started = Instant::now();
    let mut during = 0;
    while started.elapsed() < freeze {
        members.revive();
        during = during.max(members.sample_memory());
        std::thread::sleep(Duration::from_millis(250));
    }
    for pid in &tree {
        signal(*pid, libc::SIGCONT);
    }
    members.revive();
    eprintln!("frozen {freeze:?}: weir's memory {before} KiB before, at most {during} KiB during");
    (before, during)
}

/// Memory may grow while a server is frozen by what a member holds in its
/// bounded queues, not with the time frozen.
const FREEZE_GROWTH_KIB: u64 = 96 * 1024;

// ------------------------------------------------------------------ Kafka

/// Three static members of one group (`weir-faults`), 10 s sessions, a wasm
/// step (`kit.wasm`, swapped midway), Kafka in and out.
fn kafka_members(dir: &Path, broker: &Broker) -> Members {
    std::fs::copy(guest("testkit"), dir.join("kit.wasm")).unwrap();
    let files = (0..3)
        .map(|i| {
            write(
                dir,
                &format!("m{i}.toml"),
                &format!(
                    r#"
[pipeline]
name = "faults-m{i}"
shards = 2
[sources.in]
type = "kafka"
brokers = "{b}"
topics = ["in"]
group = "weir-faults"
instance = "m{i}"
batch = {{ max_events = 500 }}
options = {{ "session.timeout.ms" = "10000", "heartbeat.interval.ms" = "1000" }}
[[steps]]
type = "wasm"
name = "kit"
module = "kit.wasm"
config = {{ tag = "faults" }}
[sinks.out]
type = "kafka"
brokers = "{b}"
topic = "out"
[checkpoint]
interval = "100ms"
[shutdown]
timeout = "30s"
"#,
                    b = broker.bootstrap
                ),
            )
        })
        .collect();
    Members::new(dir, files)
}

const KAFKA_PARTITIONS: i32 = 6;

/// True when the group committed, on every partition, at least the offsets
/// the partitions had reached when `end` was taken.
fn kafka_caught_up(broker: &Broker, end: &HashMap<i32, i64>) -> bool {
    let committed = broker.committed("weir-faults", "in", KAFKA_PARTITIONS);
    end.iter()
        .all(|(p, e)| committed.get(p).is_some_and(|c| c >= e))
}

fn kafka_feeder(broker: &Broker, from: u64) -> Feeder {
    let client = common::kafka::Client {
        bootstrap: broker.bootstrap.clone(),
    };
    Feeder::start(from, 1000, Duration::from_millis(100), move |range| {
        client.produce(
            "in",
            range.map(|i| (Some(format!("k{}", i % 97)), format!("{{\"id\":{i}}}"))),
        );
        true
    })
}

#[test]
fn kafka_survives_kill_9_cycles_sigterm_a_frozen_and_a_killed_broker() {
    let settings = Settings::from_env();
    let mut rng = settings.rng(1);
    let broker = Broker::start();
    broker.create_topic("in", KAFKA_PARTITIONS);
    broker.create_topic("out", KAFKA_PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let mut members = kafka_members(dir.path(), &broker);

    // three members share the work
    let feeder = kafka_feeder(&broker, 0);
    for i in 0..3 {
        members.start(i);
    }
    wait_until(
        "every member holds partitions",
        Duration::from_secs(120),
        || (0..3).all(|i| members.log(i).contains("partitions assigned")),
    );

    // kill -9 cycles, a function swap midway (SIGHUP: the pipeline file
    // and the changed module read again)
    let resume = kill_cycles(
        &settings,
        &mut rng,
        &mut members,
        Duration::from_secs(12),
        || broker.end_offsets("in", KAFKA_PARTITIONS),
        |end| kafka_caught_up(&broker, end),
        |members| {
            let rebuilt = another_build_of(&guest("testkit"), dir.path());
            std::fs::rename(rebuilt, dir.path().join("kit.wasm")).unwrap();
            for i in 0..members.len() {
                if let Some(pid) = members.pid(i) {
                    signal(pid, libc::SIGHUP);
                }
            }
        },
    );
    let cycled = feeder.finish();
    let end = broker.end_offsets("in", KAFKA_PARTITIONS);
    members.wait_until(
        "the cycles' events committed",
        Duration::from_secs(180),
        || kafka_caught_up(&broker, &end),
    );

    // SIGTERM mid-stream: drained, committed, nothing written twice
    let feeder = kafka_feeder(&broker, cycled);
    for i in [0, 2] {
        std::thread::sleep(Duration::from_secs(2));
        members.terminate(i);
        members.start(i);
    }
    let termed = feeder.finish();
    let end = broker.end_offsets("in", KAFKA_PARTITIONS);
    members.wait_until(
        "the SIGTERM phase committed",
        Duration::from_secs(180),
        || kafka_caught_up(&broker, &end),
    );
    let out = broker.read("out", usize::MAX, Duration::from_secs(15));
    let (_, lost_term, dup_term) =
        tally_range(&ids(out.iter().map(|r| r.value.as_str())), cycled..termed);

    // the broker frozen with a backlog to read, then killed mid-stream
    broker.produce(
        "in",
        (termed..termed + 100_000)
            .map(|i| (Some(format!("k{}", i % 97)), format!("{{\"id\":{i}}}"))),
    );
    let exits_before_server_faults = members.exits;
    let (before, during) = freeze(&mut members, broker.pid(), settings.freeze);
    let end = broker.end_offsets("in", KAFKA_PARTITIONS);
    let thawed = Instant::now();
    members.wait_until(
        "the backlog after the freeze",
        Duration::from_secs(240),
        || kafka_caught_up(&broker, &end),
    );
    let after_freeze = thawed.elapsed();
    let total = termed + 200_000;
    broker.produce(
        "in",
        (termed + 100_000..total)
            .map(|i| (Some(format!("k{}", i % 97)), format!("{{\"id\":{i}}}"))),
    );
    let unacked_at_kill = total as i64
        - broker
            .committed("weir-faults", "in", KAFKA_PARTITIONS)
            .values()
            .sum::<i64>();
    signal(broker.pid(), libc::SIGKILL);
    wait_until("the broker to die", Duration::from_secs(30), || {
        !Path::new(&format!("/proc/{}", broker.pid())).exists()
    });
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    let restarted = Instant::now();
    let end = end_of(&broker, total);
    members.wait_until(
        "the backlog after the broker kill",
        Duration::from_secs(240),
        || kafka_caught_up(&broker, &end),
    );
    let after_kill = restarted.elapsed();
    members.terminate_all();

    let out = broker.read("out", usize::MAX, Duration::from_secs(30));
    let (distinct, lost, duplicated) = tally(ids(out.iter().map(|r| r.value.as_str())), total);
    Report {
        scenario:
            "kafka: 3 static members, kill -9 cycles, swap, SIGTERM, broker SIGSTOP and kill -9"
                .into(),
        kills: members.kills,
        events: distinct,
        lost,
        duplicated,
        peak_rss_mib: members.peak_kib / 1024,
        resume_ms: resume,
        exits: members.exits,
        extra: vec![
            ("sigterm_duplicated".into(), dup_term.to_string()),
            ("freeze_rss_kib".into(), format!("{before} -> {during}")),
            (
                "caught_up_after_freeze_ms".into(),
                after_freeze.as_millis().to_string(),
            ),
            (
                "caught_up_after_broker_kill_ms".into(),
                after_kill.as_millis().to_string(),
            ),
            (
                "uncommitted_at_broker_kill".into(),
                unacked_at_kill.to_string(),
            ),
        ],
    }
    .emit();
    assert_eq!(
        exits_before_server_faults, 0,
        "members exited while only members were killed: {:?}",
        members.exit_reasons
    );
    assert_eq!(lost, 0, "events lost");
    assert_eq!(lost_term, 0, "events lost around SIGTERM");
    assert_eq!(
        dup_term, 0,
        "SIGTERM drains and commits: nothing is written twice"
    );
    assert!(
        during <= before + FREEZE_GROWTH_KIB,
        "memory grew from {before} KiB to {during} KiB while the broker was frozen"
    );
}

/// Committed offsets that cover `total` produced events: the high
/// watermarks once the topic holds them all.
fn end_of(broker: &Broker, total: u64) -> HashMap<i32, i64> {
    let end = broker.end_offsets("in", KAFKA_PARTITIONS);
    assert!(
        end.values().sum::<i64>() >= total as i64,
        "the topic holds {} of {total} events",
        end.values().sum::<i64>()
    );
    end
}

/// `path`'s component with a custom section appended: the same code, another hash.
fn another_build_of(path: &Path, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(path).unwrap();
    let (name, payload) = (b"weir-faults", b"rebuilt");
    bytes.push(0);
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let out = dir.join("rebuilt.wasm");
    std::fs::write(&out, bytes).unwrap();
    out
}

// -------------------------------------------------------------- JetStream

/// Three processes on one durable consumer (`weir`, 5 s `ack_wait`),
/// JetStream in and out.
fn jetstream_members(dir: &Path, server: &NatsServer) -> Members {
    let files = (0..3)
        .map(|i| {
            write(
                dir,
                &format!("js{i}.toml"),
                &format!(
                    r#"
[pipeline]
name = "faults-js{i}"
[sources.in]
type = "jetstream"
url = "{url}"
stream = "IN"
consumer = "weir"
ack_wait = "5s"
batch = {{ max_events = 200 }}
[[steps]]
name = "map"
type = "jq"
expr = '.seen = true'
[sinks.out]
type = "jetstream"
url = "{url}"
subject = "out.{{{{key}}}}"
[checkpoint]
interval = "100ms"
[shutdown]
timeout = "30s"
"#,
                    url = server.url
                ),
            )
        })
        .collect();
    Members::new(dir, files)
}

/// True when the durable consumer acked every message up to stream sequence `seq`.
fn jetstream_caught_up(server: &NatsServer, seq: u64) -> bool {
    server
        .consumer_state("IN", "weir")
        .is_some_and(|(floor, _, _)| floor >= seq)
}

fn jetstream_feeder(server: &Arc<NatsServer>, from: u64) -> Feeder {
    let server = server.clone();
    Feeder::start(from, 500, Duration::from_millis(100), move |range| {
        server.publish(range.map(|i| (format!("in.{}", i % 10), format!("{{\"id\":{i}}}"))));
        true
    })
}

#[test]
fn jetstream_survives_kill_9_cycles_sigterm_a_frozen_and_a_killed_server() {
    let settings = Settings::from_env();
    let mut rng = settings.rng(2);
    let server = Arc::new(NatsServer::start());
    server.create_stream("IN", &["in.>"]);
    server.create_stream("OUT", &["out.>"]);
    let dir = tempfile::tempdir().unwrap();
    let mut members = jetstream_members(dir.path(), &server);

    let feeder = jetstream_feeder(&server, 0);
    for i in 0..3 {
        members.start(i);
    }
    let resume = kill_cycles(
        &settings,
        &mut rng,
        &mut members,
        Duration::from_secs(3),
        || feeder.written(),
        |seq| jetstream_caught_up(&server, *seq),
        |_| {},
    );
    let cycled = feeder.finish();
    members.wait_until("the cycles' events acked", Duration::from_secs(180), || {
        jetstream_caught_up(&server, cycled)
    });

    // SIGTERM mid-stream: what a member holds is acked or nak'ed at once
    let feeder = jetstream_feeder(&server, cycled);
    for i in [0, 2] {
        std::thread::sleep(Duration::from_secs(2));
        members.terminate(i);
        members.start(i);
    }
    let termed = feeder.finish();
    members.wait_until("the SIGTERM phase acked", Duration::from_secs(180), || {
        jetstream_caught_up(&server, termed)
    });

    // the server frozen with a backlog, then killed mid-stream
    let backlog = |from: u64, to: u64| {
        (from..to).map(|i| (format!("in.{}", i % 10), format!("{{\"id\":{i}}}")))
    };
    server.publish(backlog(termed, termed + 50_000));
    let exits_before_server_faults = members.exits;
    let (before, during) = freeze(&mut members, server.pid(), settings.freeze);
    let thawed = Instant::now();
    members.wait_until(
        "the backlog after the freeze",
        Duration::from_secs(240),
        || jetstream_caught_up(&server, termed + 50_000),
    );
    let after_freeze = thawed.elapsed();
    let total = termed + 100_000;
    server.publish(backlog(termed + 50_000, total));
    let acked_at_kill = server.consumer_state("IN", "weir").map_or(0, |s| s.0);
    let pid = server.pid();
    signal(pid, libc::SIGKILL);
    wait_until("the server to die", Duration::from_secs(30), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    std::thread::sleep(Duration::from_secs(3));
    server.restart();
    let restarted = Instant::now();
    members.wait_until(
        "the backlog after the server kill",
        Duration::from_secs(240),
        || jetstream_caught_up(&server, total),
    );
    let after_kill = restarted.elapsed();
    members.terminate_all();

    let out = server.read("OUT", usize::MAX, Duration::from_secs(20));
    let all = ids(out.iter().map(|(_, v)| v.as_str()));
    let (distinct, lost, duplicated) = tally(all.iter().copied(), total);
    let (_, _, dup_term) = tally_range(&all, cycled..termed);
    Report {
        scenario: "jetstream: 3 processes on one durable, kill -9 cycles, SIGTERM, server SIGSTOP and kill -9".into(),
        kills: members.kills,
        events: distinct,
        lost,
        duplicated,
        peak_rss_mib: members.peak_kib / 1024,
        resume_ms: resume,
        exits: members.exits,
        extra: vec![
            ("sigterm_duplicated".into(), dup_term.to_string()),
            ("freeze_rss_kib".into(), format!("{before} -> {during}")),
            ("caught_up_after_freeze_ms".into(), after_freeze.as_millis().to_string()),
            ("caught_up_after_server_kill_ms".into(), after_kill.as_millis().to_string()),
            ("unacked_at_server_kill".into(), (total - acked_at_kill).to_string()),
        ],
    }
    .emit();
    assert_eq!(
        exits_before_server_faults, 0,
        "members exited while only members were killed: {:?}",
        members.exit_reasons
    );
    assert_eq!(lost, 0, "events lost");
    assert!(
        during <= before + FREEZE_GROWTH_KIB,
        "memory grew from {before} KiB to {during} KiB while the server was frozen"
    );
}

// -------------------------------------------------------------- Postgres

/// Two processes on one slot (one streams, the other stands by on the
/// advisory lock), an initial snapshot, each into its own file.
fn postgres_members(dir: &Path, server: &PgServer) -> Members {
    let mut outputs = Vec::new();
    let files = (0..2)
        .map(|i| {
            let out = dir.join(format!("pg{i}.jsonl"));
            outputs.push(out.clone());
            write(
                dir,
                &format!("pg{i}.toml"),
                &format!(
                    r#"
[pipeline]
name = "faults-pg{i}"
[sources.pg]
type = "postgres-cdc"
url = "{url}"
publication = "weir_pub"
slot = "weir_slot"
tables = ["t"]
snapshot = "initial"
snapshot_fetch = 2000
batch = {{ max_events = 500 }}
[sinks.out]
type = "file"
path = "{out}"
[checkpoint]
interval = "100ms"
[shutdown]
timeout = "30s"
"#,
                    url = server.url,
                    out = out.display()
                ),
            )
        })
        .collect();
    let mut members = Members::new(dir, files);
    members.outputs = outputs;
    members
}

/// The ids of inserted and snapshot rows in every output file of `dir`
/// (a last line a kill cut short is left out: it was not acked).
fn postgres_ids(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("pg") && name.contains(".jsonl")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let e: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{name}: {line:?} is not JSON: {err}"));
            assert!(
                e["op"] == "insert" || e["op"] == "read",
                "unexpected change {e}"
            );
            out.push(e["after"]["id"].as_u64().expect("an id"));
        }
    }
    out
}

/// True when the output files hold every id below `n`.
fn postgres_has_all(dir: &Path, n: u64) -> bool {
    let mut seen = vec![false; n as usize];
    for id in postgres_ids(dir) {
        if let Some(s) = seen.get_mut(id as usize) {
            *s = true;
        }
    }
    seen.iter().all(|s| *s)
}

/// The server's current WAL position.
fn wal_lsn(server: &PgServer) -> u64 {
    common::postgres::parse_lsn(&server.psql("SELECT pg_current_wal_lsn()"))
}

fn postgres_feeder(server: &Arc<PgServer>, from: u64) -> Feeder {
    let server = server.clone();
    Feeder::start(from, 200, Duration::from_millis(100), move |range| {
        server
            .psql_output(&format!(
                "INSERT INTO t SELECT g, 'row ' || g FROM generate_series({}, {}) g \
                 ON CONFLICT DO NOTHING",
                range.start,
                range.end - 1
            ))
            .status
            .success()
    })
}

#[test]
fn the_postgres_change_feed_survives_kill_9_cycles_a_frozen_and_a_crashed_server() {
    let settings = Settings::from_env();
    let mut rng = settings.rng(3);
    let server = Arc::new(PgServer::start());
    let snapshot_rows: u64 = 100_000;
    server.psql(&format!(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(0, {}) g",
        snapshot_rows - 1
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut members = postgres_members(dir.path(), &server);

    // the first kill lands in the snapshot: the other starts it over
    let feeder = postgres_feeder(&server, snapshot_rows);
    members.start(0);
    members.wait_until("the first snapshot rows", Duration::from_secs(60), || {
        std::fs::metadata(dir.path().join("pg0.jsonl")).is_ok_and(|m| m.len() > 0)
    });
    members.start(1);
    let in_snapshot = !members.log(0).contains("initial snapshot done");
    members.kill_9(0);
    assert!(
        in_snapshot,
        "the snapshot ended before the kill; make the table larger"
    );
    members.start(0);
    let resume = kill_cycles(
        &settings,
        &mut rng,
        &mut members,
        Duration::from_secs(2),
        || wal_lsn(&server),
        |lsn| {
            server
                .slot_confirmed("weir_slot")
                .is_some_and(|c| c >= *lsn)
        },
        |_| {},
    );
    let cycled = feeder.finish();
    members.wait_until(
        "the cycles' changes written",
        Duration::from_secs(180),
        || postgres_has_all(dir.path(), cycled),
    );

    // SIGTERM of each member in turn mid-stream: the other takes over
    let feeder = postgres_feeder(&server, cycled);
    let mut failover = Vec::new();
    for i in [0, 1] {
        std::thread::sleep(Duration::from_secs(2));
        let lsn = wal_lsn(&server);
        let stopped = Instant::now();
        members.terminate(i);
        members.start(i);
        members.wait_until(
            "the other member to stream",
            Duration::from_secs(60),
            || server.slot_confirmed("weir_slot").is_some_and(|c| c >= lsn),
        );
        failover.push(stopped.elapsed().as_millis());
    }
    let termed = feeder.finish();

    // the server frozen, then crashed (immediate stop) mid-stream
    let exits_before_server_faults = members.exits;
    let (before, during) = freeze(&mut members, server.pid(), settings.freeze);
    let total = termed + 50_000;
    server.psql(&format!(
        "INSERT INTO t SELECT g, 'row ' || g FROM generate_series({termed}, {}) g",
        total - 1
    ));
    std::thread::sleep(Duration::from_millis(300));
    server.stop("immediate");
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    let restarted = Instant::now();
    members.wait_until(
        "the changes after the crash",
        Duration::from_secs(240),
        || postgres_has_all(dir.path(), total),
    );
    let after_crash = restarted.elapsed();
    members.terminate_all();

    let all = postgres_ids(dir.path());
    let (distinct, lost, duplicated) = tally(all.iter().copied(), total);
    let (_, lost_term, dup_term) = tally_range(&all, cycled..termed);
    Report {
        scenario: "postgres-cdc: active and standby, kill -9 cycles from the snapshot on, SIGTERM failover, server SIGSTOP and crash".into(),
        kills: members.kills,
        events: distinct,
        lost,
        duplicated,
        peak_rss_mib: members.peak_kib / 1024,
        resume_ms: resume,
        exits: members.exits,
        extra: vec![
            ("sigterm_duplicated".into(), dup_term.to_string()),
            ("sigterm_failover_ms".into(), format!("{failover:?}")),
            ("freeze_rss_kib".into(), format!("{before} -> {during}")),
            ("caught_up_after_crash_ms".into(), after_crash.as_millis().to_string()),
        ],
    }
    .emit();
    assert_eq!(
        exits_before_server_faults, 0,
        "members exited while only members were killed: {:?}",
        members.exit_reasons
    );
    assert_eq!(lost, 0, "changes lost");
    assert_eq!(lost_term, 0, "changes lost around SIGTERM");
    assert_eq!(
        dup_term, 0,
        "SIGTERM confirms what was written: nothing is sent twice"
    );
    assert!(
        during <= before + FREEZE_GROWTH_KIB,
        "memory grew from {before} KiB to {during} KiB while the server was frozen"
    );
}

// ------------------------------------------------------- NATS queue group

/// The ids in member `i`'s output files (every run of it).
fn queue_member_ids(dir: &Path, i: usize) -> Vec<u64> {
    let prefix = format!("q{i}.jsonl");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let lines = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
            out.extend(ids(lines.map(str::trim_end)));
        }
    }
    out
}

/// Core NATS has no acknowledgements, so a queue group is at-most-once for
/// what a member holds when it dies; what this shows is the sharing, and
/// that the survivors get everything published after a member is gone.
#[test]
fn three_processes_in_a_nats_queue_group_share_the_work_and_survive_a_kill() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    let files = (0..3)
        .map(|i| {
            let out = dir.path().join(format!("q{i}.jsonl"));
            outputs.push(out.clone());
            write(
                dir.path(),
                &format!("q{i}.toml"),
                &format!(
                    "[pipeline]\nname = \"queue-{i}\"\n[sources.in]\ntype = \"nats\"\nurl = \"{}\"\n\
                     subjects = [\"events.>\"]\nqueue_group = \"workers\"\n\
                     [sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
                    server.url,
                    out.display()
                ),
            )
        })
        .collect();
    let mut members = Members::new(dir.path(), files);
    members.outputs = outputs;
    for i in 0..3 {
        members.start(i);
    }
    // subscribed: every member answers a probe published until all saw one
    members.wait_until("every member subscribed", Duration::from_secs(30), || {
        server
            .publish_core((0..30).map(|_| ("events.probe".to_string(), "{\"id\":0}".to_string())));
        std::thread::sleep(Duration::from_millis(200));
        (0..3).all(|i| !queue_member_ids(dir.path(), i).is_empty())
    });
    let base: Vec<usize> = (0..3)
        .map(|i| queue_member_ids(dir.path(), i).len())
        .collect();
    let n = 3_000u64;
    server.publish_core((1..=n).map(|i| (format!("events.{}", i % 7), format!("{{\"id\":{i}}}"))));
    let count = |dir: &Path, range: std::ops::RangeInclusive<u64>| {
        (0..3)
            .flat_map(|i| queue_member_ids(dir, i))
            .filter(|id| range.contains(id))
            .count() as u64
    };
    members.wait_until("the first 3,000", Duration::from_secs(30), || {
        count(dir.path(), 1..=n) == n
    });
    let shares: Vec<usize> = (0..3)
        .map(|i| queue_member_ids(dir.path(), i).len() - base[i])
        .collect();
    for (i, share) in shares.iter().enumerate() {
        assert!(*share > 0, "member {i} got no share: {shares:?}");
    }

    // member 0 dies; everything published after goes to the other two
    members.kill_9(0);
    let before: usize = queue_member_ids(dir.path(), 0).len();
    server.publish_core(
        (n + 1..=2 * n).map(|i| (format!("events.{}", i % 7), format!("{{\"id\":{i}}}"))),
    );
    members.wait_until(
        "the next 3,000 by the survivors",
        Duration::from_secs(30),
        || count(dir.path(), n + 1..=2 * n) == n,
    );
    assert_eq!(
        queue_member_ids(dir.path(), 0).len(),
        before,
        "a dead member got messages"
    );
    members.terminate_all();
    Report {
        scenario: "nats queue group: 3 processes, one killed".into(),
        kills: members.kills,
        events: 2 * n as usize,
        extra: vec![("shares".into(), format!("{shares:?}"))],
        ..Report::default()
    }
    .emit();
}
