//! The `postgres-cdc` source and the `postgres` sink against a real
//! PostgreSQL server (started by scripts/pg-dev.sh): 100k changes through
//! a kill -9, the initial snapshot (also killed midway), failover to a
//! standby, type mapping, tables without a primary key, a server restart,
//! replication into a table, and clear errors.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::postgres::{parse_lsn, Server};
use common::{assert_failed_with, read_lines, start_weir, stop_weir, weir, write};
use serde_json::Value;

/// Writes `NAME.toml`: a `postgres-cdc` source at `url` (publication
/// `weir_pub`, `slot`, then `source_extra`) into `sinks` (`[sinks.*]`
/// tables), committing every 100 ms. The URL is on line 6, column 7.
fn cdc_toml(
    dir: &Path,
    name: &str,
    url: &str,
    slot: &str,
    source_extra: &str,
    sinks: &str,
) -> PathBuf {
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            r#"
[pipeline]
name = "{name}"
[sources.pg]
type = "postgres-cdc"
url = "{url}"
publication = "weir_pub"
slot = "{slot}"
{source_extra}
{sinks}
[checkpoint]
interval = "100ms"
"#
        ),
    )
}

/// A `file` sink called `out` writing to `path`.
fn file_sink(path: &Path) -> String {
    format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        path.display()
    )
}

/// A `blackhole` sink.
const BLACKHOLE: &str = "[sinks.out]\ntype = \"blackhole\"\n";

/// The usual test pipeline: slot `weir_slot`, batches of 500, into a file.
fn cdc_pipeline(dir: &Path, server: &Server, name: &str, source_extra: &str, out: &str) -> PathBuf {
    cdc_toml(
        dir,
        name,
        &server.url,
        "weir_slot",
        &format!("batch = {{ max_events = 500 }}\n{source_extra}"),
        &file_sink(Path::new(out)),
    )
}

/// Every complete JSON line of the files. A last line without its newline
/// is left out: a kill -9 can stop the file sink in the middle of a write,
/// and that event was not acked (it comes again after the restart).
fn events_of(files: &[PathBuf]) -> Vec<Vec<Value>> {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .map(|l| serde_json::from_str(l).expect("each line is a JSON event"))
                .collect()
        })
        .collect()
}

/// Every JSON line of one file.
fn events_in(file: &Path) -> Vec<Value> {
    events_of(&[file.to_path_buf()]).remove(0)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// One change as the workload made it: row id and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Change {
    Insert(i64),
    Update(i64, i64),
    Delete(i64),
}

impl Change {
    fn of(e: &Value) -> Change {
        let id = |row: &Value| row["id"].as_i64().expect("an id");
        match e["op"].as_str().unwrap() {
            "insert" => Change::Insert(id(&e["after"])),
            "update" => Change::Update(id(&e["after"]), e["after"]["v"].as_i64().unwrap()),
            "delete" => Change::Delete(id(&e["key"])),
            other => panic!("unexpected op {other}"),
        }
    }

    fn id(&self) -> i64 {
        match self {
            Change::Insert(i) | Change::Update(i, _) | Change::Delete(i) => *i,
        }
    }

    /// Where the change falls in its row's history.
    fn rank(&self) -> i64 {
        match self {
            Change::Insert(_) => 0,
            Change::Update(_, v) => *v,
            Change::Delete(_) => i64::MAX,
        }
    }
}

#[test]
fn a_hundred_thousand_changes_arrive_once_in_row_order_across_a_kill_and_restart() {
    let server = Server::start();
    server.psql("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)");
    let dir = tempfile::tempdir().unwrap();
    let out1 = dir.path().join("run1.jsonl");
    let out2 = dir.path().join("run2.jsonl");
    let extra = r#"tables = ["t"]"#;
    let p1 = cdc_pipeline(dir.path(), &server, "cdc1", extra, out1.to_str().unwrap());
    let p2 = cdc_pipeline(dir.path(), &server, "cdc2", extra, out2.to_str().unwrap());
    let run1 = start_weir(dir.path(), &p1);
    wait_for("the slot", Duration::from_secs(30), || {
        server.slot_confirmed("weir_slot").is_some()
    });

    // 100,000 row changes: batches of inserts, one large transaction, updates,
    // a multi-statement transaction, deletes; each statement commits alone
    let mut script = String::new();
    for b in 0..30 {
        script += &format!(
            "INSERT INTO t SELECT g, 0 FROM generate_series({}, {}) g;\n",
            b * 1000 + 1,
            b * 1000 + 1000
        );
    }
    script += "BEGIN;\nINSERT INTO t SELECT g, 0 FROM generate_series(30001, 40000) g;\n\
               INSERT INTO t SELECT g, 0 FROM generate_series(40001, 50000) g;\nCOMMIT;\n";
    for _ in 0..3 {
        script += "UPDATE t SET v = v + 1 WHERE id <= 10000;\n";
    }
    script += "BEGIN;\nUPDATE t SET v = v + 1 WHERE id BETWEEN 10001 AND 15000;\n\
               DELETE FROM t WHERE id BETWEEN 15001 AND 20000;\nCOMMIT;\n";
    script += "DELETE FROM t WHERE id BETWEEN 40001 AND 50000;\n";
    let mut expected: HashSet<Change> = HashSet::new();
    for id in 1..=50000 {
        expected.insert(Change::Insert(id));
    }
    for id in 1..=10000 {
        for v in 1..=3 {
            expected.insert(Change::Update(id, v));
        }
    }
    for id in 10001..=15000 {
        expected.insert(Change::Update(id, 1));
    }
    for id in (15001..=20000).chain(40001..=50000) {
        expected.insert(Change::Delete(id));
    }
    assert_eq!(expected.len(), 100_000);
    let sql = write(dir.path(), "workload.sql", &script);
    let workload = {
        let mut s = server.psql_file_command(&sql);
        std::thread::spawn(move || s.output().unwrap())
    };

    // kill -9 in the middle of the stream
    wait_for("30k events", Duration::from_secs(120), || {
        line_count(&out1) >= 30_000
    });
    let mut run1 = run1;
    run1.child.0.kill().unwrap();
    run1.child.0.wait().unwrap();
    let confirmed_at_kill = server.slot_confirmed("weir_slot").unwrap();
    let run2 = start_weir(dir.path(), &p2);
    let done = workload.join().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    let distinct = |files: &[PathBuf]| -> HashSet<Change> {
        events_of(files).iter().flatten().map(Change::of).collect()
    };
    let files = [out1.clone(), out2.clone()];
    wait_for("every change", Duration::from_secs(180), || {
        distinct(&files).len() >= expected.len()
    });
    let (status, log) = stop_weir(run2);
    assert!(status.success(), "{log}");

    let runs = events_of(&files);
    let seen: HashSet<Change> = runs.iter().flatten().map(Change::of).collect();
    assert_eq!(seen, expected, "every change exactly as made, none extra");
    // within each run, each row's changes are in commit order and not repeated
    for (run, events) in runs.iter().enumerate() {
        let mut last: HashMap<i64, i64> = HashMap::new();
        for e in events {
            let c = Change::of(e);
            if let Some(prev) = last.insert(c.id(), c.rank()) {
                assert!(
                    prev < c.rank(),
                    "run {run}: row {} out of order: {prev} then {c:?}",
                    c.id()
                );
            }
        }
    }
    // a change seen in both runs was past the confirmed position at the kill
    let first: HashSet<Change> = runs[0].iter().map(Change::of).collect();
    let mut repeated = 0;
    for e in &runs[1] {
        if first.contains(&Change::of(e)) {
            repeated += 1;
            let lsn = parse_lsn(e["lsn"].as_str().unwrap());
            assert!(
                lsn >= confirmed_at_kill,
                "{e} was sent again though its transaction was confirmed (confirmed {confirmed_at_kill:X})"
            );
        }
    }
    eprintln!(
        "run 1: {} events, run 2: {} events, {repeated} repeated after the kill",
        runs[0].len(),
        runs[1].len()
    );
    // a clean stop confirmed everything
    let confirmed = server.slot_confirmed("weir_slot").unwrap();
    let current = parse_lsn(&server.psql("SELECT pg_current_wal_lsn()"));
    let last_commit = runs[1]
        .iter()
        .map(|e| parse_lsn(e["lsn"].as_str().unwrap()))
        .max()
        .unwrap();
    assert!(
        confirmed > last_commit && confirmed <= current,
        "confirmed {confirmed:X}"
    );
}

#[test]
fn the_initial_snapshot_has_no_gap_or_duplicate_and_starts_over_when_killed() {
    let server = Server::start();
    server.psql(
        "CREATE TABLE s (id int PRIMARY KEY, v text); \
         INSERT INTO s SELECT g, 'row ' || g FROM generate_series(1, 30000) g",
    );
    let dir = tempfile::tempdir().unwrap();
    let extra = "tables = [\"s\"]\nsnapshot = \"initial\"\nsnapshot_fetch = 1000";
    // killed during the snapshot: no slot is left, the next run starts over.
    // The first run writes into a table whose every insert statement
    // sleeps, so its snapshot takes seconds and the kill lands inside it.
    server.psql(
        "CREATE TABLE slow_sink (op text); \
         CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END $$; \
         CREATE TRIGGER slow AFTER INSERT ON slow_sink FOR EACH STATEMENT EXECUTE FUNCTION slow()",
    );
    let p0 = cdc_toml(
        dir.path(),
        "snap0",
        &server.url,
        "weir_slot",
        extra,
        &format!(
            "[sinks.slow]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"slow_sink\"\n\
             batch = {{ max_events = 500 }}\n",
            server.url
        ),
    );
    let mut run0 = start_weir(dir.path(), &p0);
    wait_for("the first snapshot rows", Duration::from_secs(60), || {
        server.psql("SELECT count(*) FROM slow_sink") != "0"
    });
    assert_eq!(
        server.psql("SELECT slot_name FROM pg_replication_slots"),
        "weir_slot_snap",
        "only the temporary slot exists while the snapshot runs"
    );
    run0.child.0.kill().unwrap();
    run0.child.0.wait().unwrap();
    assert!(
        server
            .psql("SELECT count(*) FROM slow_sink")
            .parse::<u32>()
            .unwrap()
            < 30_000
    );
    wait_for("the temporary slot to go", Duration::from_secs(10), || {
        server.psql("SELECT count(*) FROM pg_replication_slots") == "0"
    });

    let out = dir.path().join("out.jsonl");
    let p = cdc_pipeline(dir.path(), &server, "snap", extra, out.to_str().unwrap());
    let run = start_weir(dir.path(), &p);
    // rows written while the snapshot runs: either in it or streamed after it
    for chunk in 0..10 {
        server.psql(&format!(
            "INSERT INTO s SELECT g, 'late' FROM generate_series({}, {}) g",
            30001 + chunk * 100,
            30100 + chunk * 100
        ));
    }
    server.psql("UPDATE s SET v = 'updated' WHERE id = 1");
    let ids = |events: &[Value]| -> Vec<i64> {
        events
            .iter()
            .map(|e| e["after"]["id"].as_i64().unwrap())
            .collect()
    };
    wait_for("31k rows", Duration::from_secs(120), || {
        line_count(&out) >= 31_001
    });
    let (status, log) = stop_weir(run);
    assert!(status.success(), "{log}");
    assert!(log.contains("initial snapshot done"), "{log}");
    let events = &events_in(&out);
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for id in ids(events) {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), 31_000, "every row, no gap");
    let twice: Vec<_> = counts
        .iter()
        .filter(|(id, n)| **n != 1 && **id != 1)
        .collect();
    assert!(twice.is_empty(), "rows read twice: {twice:?}");
    assert_eq!(counts[&1], 2, "row 1: its snapshot read, then its update");
    assert!(events.iter().any(|e| e["op"] == "read"));
    // order holds per key (row), not across the shards' output
    let row_1 = events.iter().rfind(|e| e["after"]["id"] == 1).unwrap();
    assert_eq!(row_1["after"]["v"], "updated");

    // the next run streams from the slot: no second snapshot
    let out3 = dir.path().join("again.jsonl");
    let p3 = cdc_pipeline(dir.path(), &server, "snap3", extra, out3.to_str().unwrap());
    let run = start_weir(dir.path(), &p3);
    server.psql("INSERT INTO s VALUES (99999, 'after')");
    wait_for("the new row", Duration::from_secs(30), || {
        line_count(&out3) >= 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let (status, log) = stop_weir(run);
    assert!(status.success(), "{log}");
    let again = &events_in(&out3);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["op"], "insert");
}

#[test]
fn column_lists_and_row_filters_of_the_publication_shape_the_snapshot_and_the_stream() {
    let server = Server::start();
    server.psql(
        "CREATE TABLE cl (id int PRIMARY KEY, a text, secret text); \
         INSERT INTO cl SELECT g, 'a' || g, 's' || g FROM generate_series(1, 10) g; \
         CREATE PUBLICATION weir_pub FOR TABLE cl (id, a) WHERE (id > 5)",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let p = cdc_pipeline(
        dir.path(),
        &server,
        "cl",
        "snapshot = \"initial\"",
        out.to_str().unwrap(),
    );
    let run = start_weir(dir.path(), &p);
    wait_for("the snapshot", Duration::from_secs(60), || {
        server.slot_confirmed("weir_slot").is_some()
    });
    server.psql("INSERT INTO cl VALUES (0, 'low', 's'), (30, 'high', 's')");
    wait_for("six events", Duration::from_secs(30), || {
        line_count(&out) >= 6
    });
    std::thread::sleep(Duration::from_millis(500));
    let (status, log) = stop_weir(run);
    assert!(status.success(), "{log}");
    let events = &events_in(&out);
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids.iter().copied().collect::<HashSet<_>>(),
        HashSet::from([6, 7, 8, 9, 10, 30])
    );
    for e in events {
        assert!(
            e["after"].get("secret").is_none(),
            "an unpublished column: {e}"
        );
        assert!(e["after"]["a"].is_string());
    }
}

#[test]
fn a_standby_takes_over_within_ten_seconds_when_the_active_process_dies() {
    let server = Server::start();
    server.psql("CREATE TABLE f (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"tables = ["f"]"#;
    let out_a = dir.path().join("a.jsonl");
    let out_b = dir.path().join("b.jsonl");
    let pa = cdc_pipeline(dir.path(), &server, "a", extra, out_a.to_str().unwrap());
    let pb = cdc_pipeline(dir.path(), &server, "b", extra, out_b.to_str().unwrap());
    let mut a = start_weir(dir.path(), &pa);
    wait_for("a's slot", Duration::from_secs(30), || {
        server.slot_confirmed("weir_slot").is_some()
    });
    let b = start_weir(dir.path(), &pb);
    std::thread::sleep(Duration::from_secs(2));
    server.psql("INSERT INTO f SELECT generate_series(1, 100)");
    wait_for("a to stream", Duration::from_secs(30), || {
        line_count(&out_a) >= 100
    });
    assert_eq!(
        line_count(&out_b),
        0,
        "the standby must not stream while a is alive"
    );

    a.child.0.kill().unwrap();
    a.child.0.wait().unwrap();
    let killed = Instant::now();
    server.psql("INSERT INTO f SELECT generate_series(101, 200)");
    wait_for("b to take over", Duration::from_secs(10), || {
        let ids: HashSet<i64> = events_in(&out_b)
            .iter()
            .map(|e| e["after"]["id"].as_i64().unwrap())
            .collect();
        (101..=200).all(|i| ids.contains(&i))
    });
    let took = killed.elapsed();
    let (status, log) = stop_weir(b);
    assert!(status.success(), "{log}");
    assert!(log.contains("standing by"), "{log}");
    assert!(log.contains("took over"), "{log}");
    eprintln!("the standby delivered the new rows {took:?} after the kill");
}

#[test]
fn column_types_map_faithfully_and_unchanged_toast_differs_from_null() {
    let server = Server::start();
    server.psql(
        "CREATE TABLE ty (id bigint PRIMARY KEY, b bool, i2 smallint, i4 int, f4 real, f8 double precision, \
         n numeric(30,10), t text, vc varchar(10), c char(3), j json, jb jsonb, ia int[], ta text[], \
         by bytea, ts timestamp, tz timestamptz, d date, tm time, iv interval, u uuid, big text, nul text)",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let p = cdc_pipeline(
        dir.path(),
        &server,
        "types",
        r#"tables = ["ty"]"#,
        out.to_str().unwrap(),
    );
    let run = start_weir(dir.path(), &p);
    wait_for("the slot", Duration::from_secs(30), || {
        server.slot_confirmed("weir_slot").is_some()
    });
    server.psql(
        "INSERT INTO ty VALUES (9007199254740993, true, -2, 4, 1.5, 'NaN', 12345678901234567890.0123456789, \
         'quote \" and \\ and é', 'vc', 'ab', '{\"a\": [1, 2]}', '{\"b\": null}', '{1,NULL,3}', '{x,\"y z\",NULL}', \
         '\\x00ff', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56.789+02', '2024-02-29', '12:34:56', '1 day 2 hours', \
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g), NULL)",
    );
    server.psql("UPDATE ty SET i4 = 5");
    wait_for("two events", Duration::from_secs(30), || {
        line_count(&out) >= 2
    });
    let (status, log) = stop_weir(run);
    assert!(status.success(), "{log}");
    let events = &events_in(&out);
    let ins = &events[0];
    assert_eq!(ins["key"], serde_json::json!({"id": 9007199254740993u64}));
    let a = &ins["after"];
    let expect = serde_json::json!({
        "b": true, "i2": -2, "i4": 4, "f4": 1.5, "f8": "NaN",
        "n": "12345678901234567890.0123456789", "t": "quote \" and \\ and é", "vc": "vc", "c": "ab ",
        "j": {"a": [1, 2]}, "jb": {"b": null}, "ia": [1, null, 3], "ta": ["x", "y z", null],
        "by": "AP8=", "ts": "2024-02-29T12:34:56.789", "tz": "2024-02-29T10:34:56.789Z",
        "d": "2024-02-29", "tm": "12:34:56", "iv": "P1DT2H",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "nul": null
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&a[k], v, "column {k} in {a}");
    }
    assert_eq!(
        a["id"].as_u64(),
        Some(9007199254740993),
        "int8 keeps every digit"
    );
    assert_eq!(a["big"].as_str().unwrap().len(), 400 * 32);
    // the update did not touch the TOASTed column: it is absent and listed,
    // while the NULL column is present as null
    let upd = &events[1];
    assert_eq!(upd["op"], "update");
    assert!(upd["after"].get("big").is_none(), "{upd}");
    assert_eq!(upd["unchanged"], serde_json::json!(["big"]));
    assert_eq!(upd["after"]["nul"], Value::Null);
    assert!(upd["after"].get("nul").is_some());
    assert_eq!(upd["after"]["i4"], 5);
    assert!(upd["commit_ts"].as_str().unwrap().ends_with('Z'));
    assert!(upd["xid"].as_u64().is_some());
}

#[test]
fn tables_without_a_primary_key_give_unkeyed_events_and_full_identity_gives_before() {
    let server = Server::start();
    server.psql(
        "CREATE TABLE nk (a int, b text); CREATE TABLE nkf (a int, b text); \
         ALTER TABLE nkf REPLICA IDENTITY FULL",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let p = cdc_pipeline(
        dir.path(),
        &server,
        "nk",
        r#"tables = ["nk", "nkf"]"#,
        out.to_str().unwrap(),
    );
    let run = start_weir(dir.path(), &p);
    wait_for("the slot", Duration::from_secs(30), || {
        server.slot_confirmed("weir_slot").is_some()
    });
    server.psql("INSERT INTO nk VALUES (1, 'x')");
    // with REPLICA IDENTITY DEFAULT and no key, Postgres itself refuses
    // updates and deletes of a table that publishes them
    let refused = server.psql_output("UPDATE nk SET b = 'y'");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("replica identity"));
    server.psql("INSERT INTO nkf VALUES (1, 'x'); UPDATE nkf SET b = 'y'; DELETE FROM nkf");
    wait_for("four events", Duration::from_secs(30), || {
        line_count(&out) >= 4
    });
    let (status, log) = stop_weir(run);
    assert!(status.success(), "{log}");
    let events = &events_in(&out);
    let by_table = |t: &str| -> Vec<&Value> { events.iter().filter(|e| e["table"] == t).collect() };
    let nk = by_table("nk");
    assert_eq!(nk.len(), 1);
    assert_eq!(nk[0]["key"], Value::Null);
    let nkf = by_table("nkf");
    let ops: Vec<&str> = nkf.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        ["insert", "update", "delete"],
        "one shard keeps unkeyed events in order"
    );
    assert_eq!(nkf[1]["before"], serde_json::json!({"a": 1, "b": "x"}));
    assert_eq!(nkf[1]["after"], serde_json::json!({"a": 1, "b": "y"}));
    assert_eq!(nkf[2]["before"], serde_json::json!({"a": 1, "b": "y"}));
    assert!(nkf.iter().all(|e| e["key"].is_null()));
}

#[test]
fn the_stream_resumes_after_postgres_restarts() {
    let server = Server::start();
    server.psql("CREATE TABLE r (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let extra = "tables = [\"r\"]\nmax_reconnect_backoff = \"500ms\"";
    let p = cdc_pipeline(dir.path(), &server, "restart", extra, out.to_str().unwrap());
    let run = start_weir(dir.path(), &p);
    wait_for("the slot", Duration::from_secs(30), || {
        server.slot_confirmed("weir_slot").is_some()
    });
    server.psql("INSERT INTO r SELECT generate_series(1, 1000)");
    wait_for("the first rows", Duration::from_secs(30), || {
        line_count(&out) >= 1000
    });
    server.stop("immediate");
    std::thread::sleep(Duration::from_secs(1));
    server.restart();
    server.psql("INSERT INTO r SELECT generate_series(1001, 2000)");
    let ids = || -> HashSet<i64> {
        events_in(&out)
            .iter()
            .map(|e| e["after"]["id"].as_i64().unwrap())
            .collect()
    };
    wait_for(
        "the rows after the restart",
        Duration::from_secs(60),
        || ids().len() >= 2000,
    );
    let (status, log) = stop_weir(run);
    assert!(status.success(), "{log}");
    assert!(log.contains("reconnecting"), "{log}");
    assert_eq!(ids(), (1..=2000).collect::<HashSet<_>>());
}

#[test]
fn a_change_feed_replicates_into_a_table_exactly_even_after_kill_9() {
    let server = Server::start();
    server.psql(
        "CREATE TABLE src (id int PRIMARY KEY, v int NOT NULL, note text, big text); \
         CREATE TABLE dst (id int PRIMARY KEY, v int NOT NULL, note text, big text); \
         CREATE TABLE hist (lsn pg_lsn, seq bigint, op text, \"table\" text, key jsonb, after jsonb, \
                            PRIMARY KEY (lsn, seq)); \
         CREATE TABLE audit (op text); \
         CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO audit VALUES (lower(TG_OP)); RETURN NULL; END $$; \
         CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON src FOR EACH ROW EXECUTE FUNCTION audit()",
    );
    let dir = tempfile::tempdir().unwrap();
    let pipeline = cdc_toml(
        dir.path(),
        "replicate",
        &server.url,
        "weir_slot",
        "tables = [\"src\"]\nsnapshot = \"initial\"\nbatch = { max_events = 300 }",
        &format!(
            r#"[sinks.copy]
type = "postgres"
url = "{url}"
table = "dst"
mode = "changes"
batch = {{ max_events = 300 }}
# every change once, keyed by (lsn, seq): replays do not add rows
[sinks.history]
type = "postgres"
url = "{url}"
table = "hist"
mode = "upsert"
"#,
            url = server.url
        ),
    );
    // every third row holds a value stored out of line (TOAST): updates
    // that do not touch it do not send it
    server.psql(
        "INSERT INTO src SELECT g, 0, 'before', CASE WHEN g % 3 = 0 THEN \
         (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 200) i) END \
         FROM generate_series(1, 2000) g; TRUNCATE audit",
    );
    let run = start_weir(dir.path(), &pipeline);
    // the slot exists once the snapshot is delivered; changes after it stream
    wait_for("the snapshot", Duration::from_secs(60), || {
        server.slot_confirmed("weir_slot").is_some()
    });
    let mut script = String::new();
    for round in 1..=20 {
        script += &format!(
            "INSERT INTO src SELECT g, 0, 'new' FROM generate_series({}, {}) g;\n\
             UPDATE src SET v = v + 1, note = 'it''s {round}' WHERE id % 7 = {};\n\
             DELETE FROM src WHERE id % 50 = {};\n",
            2000 + round * 500 - 499,
            2000 + round * 500,
            round % 7,
            round % 50
        );
    }
    script += "TRUNCATE src;\nINSERT INTO src SELECT g, 1, 'after truncate', CASE WHEN g % 5 = 0 THEN \
               (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 200) i) END \
               FROM generate_series(1, 3000) g;\n\
               UPDATE src SET id = id + 100000 WHERE id <= 10;\n";
    let sql = write(dir.path(), "workload.sql", &script);
    let workload = {
        let mut cmd = server.psql_file_command(&sql);
        std::thread::spawn(move || cmd.output().unwrap())
    };
    // kill -9 in the middle of the workload, then restart
    std::thread::sleep(Duration::from_millis(700));
    let mut run = run;
    run.child.0.kill().unwrap();
    run.child.0.wait().unwrap();
    let run = start_weir(dir.path(), &pipeline);
    let workload = workload.join().unwrap();
    assert!(
        workload.status.success(),
        "{}",
        String::from_utf8_lossy(&workload.stderr)
    );
    let same = || {
        server.psql(
            "SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) a \
             FULL JOIN (SELECT * FROM dst EXCEPT SELECT * FROM src) b ON true",
        ) == "0"
            && server.psql("SELECT count(*) FROM dst") == server.psql("SELECT count(*) FROM src")
    };
    let started = Instant::now();
    while !same() {
        if started.elapsed() > Duration::from_secs(120) {
            let (_, log) = stop_weir(run);
            panic!(
                "dst never equalled src: src {} rows, dst {} rows\n{log}",
                server.psql("SELECT count(*) FROM src"),
                server.psql("SELECT count(*) FROM dst")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, log) = stop_weir(run);
    assert!(status.success(), "{log}");
    assert_eq!(server.psql("SELECT count(*) FROM dst"), "3000");
    assert_eq!(
        server.psql("SELECT count(*) FROM dst WHERE id > 100000"),
        "10"
    );
    // the history holds each change once: as many as the trigger counted
    let audit = server.psql("SELECT op, count(*) FROM audit GROUP BY op ORDER BY op");
    let history = server.psql(
        "SELECT op, count(*) FROM hist WHERE op IN ('insert', 'update', 'delete') GROUP BY op ORDER BY op",
    );
    assert_eq!(history, audit);
    assert_eq!(
        server.psql("SELECT count(*) FROM hist WHERE op = 'read'"),
        "2000"
    );
    assert_eq!(
        server.psql("SELECT count(*) FROM hist WHERE op = 'truncate'"),
        "1"
    );
}

#[test]
fn the_postgres_sink_upserts_by_key_and_dead_letters_rows_that_do_not_fit() {
    let server = Server::start();
    server.psql("CREATE TABLE kv (k text PRIMARY KEY, n int NOT NULL, tags text[], doc jsonb)");
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.jsonl",
        "{\"k\":\"a\",\"n\":1,\"tags\":[\"x\"],\"doc\":{\"q\":\"it's\"}}\n{\"k\":\"b\",\"n\":2}\n{\"k\":\"a\",\"n\":3}\n",
    );
    let bad = write(dir.path(), "bad.jsonl", "{\"k\":\"c\",\"n\":null}\n");
    let pipeline = |name: &str, path: &Path| {
        write(
            dir.path(),
            &format!("{name}.toml"),
            &format!(
                r#"
[pipeline]
name = "{name}"
[sources.in]
type = "file"
path = "{path}"
format = "json"
[sinks.db]
type = "postgres"
url = "{url}"
table = "kv"
mode = "upsert"
[sinks.dead]
type = "file"
path = "{dead}"
format = "envelope"
[dead_letter]
sink = "dead"
"#,
                path = path.display(),
                url = server.url,
                dead = dir.path().join("dead.jsonl").display(),
            ),
        )
    };
    let out = weir()
        .arg("run")
        .arg(pipeline("ok", &input))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    assert_eq!(
        server.psql("SELECT k, n, tags, doc FROM kv ORDER BY k"),
        "a|3||\nb|2||"
    );
    let out = weir()
        .arg("run")
        .arg(pipeline("bad", &bad))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    let dead = read_lines(&dir.path().join("dead.jsonl")).join("\n");
    assert!(
        dead.contains("not-null") || dead.contains("null value"),
        "{dead}"
    );
    assert_eq!(server.psql("SELECT count(*) FROM kv"), "2");
}

#[test]
fn bad_connections_missing_permissions_and_missing_publications_are_clear_errors() {
    let server = Server::start();
    server.psql(
        "CREATE TABLE e (id int PRIMARY KEY); CREATE ROLE plain LOGIN; \
         GRANT SELECT ON e TO plain; CREATE ROLE repl LOGIN REPLICATION; GRANT CREATE ON DATABASE postgres TO repl",
    );
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, url: &str, extra: &str| {
        let p = cdc_toml(dir.path(), name, url, "weir_slot", extra, BLACKHOLE);
        weir()
            .arg("run")
            .arg(p)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // nothing listens there
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = run(
        "refused",
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        "tables = [\"e\"]",
    );
    assert_failed_with(&out, &format!("connecting to 127.0.0.1:{port}"));
    // a database that does not exist
    let out = run("nodb", &server.url_of("nope"), "tables = [\"e\"]");
    assert_failed_with(&out, "database \"nope\" does not exist");
    // a role without REPLICATION
    let out = run(
        "noperm",
        &format!("postgres://plain@127.0.0.1:{}/postgres", server.port),
        "tables = [\"e\"]",
    );
    assert_failed_with(&out, "REPLICATION attribute");
    // a replication role that may not publish the table
    let out = run(
        "nopub_perm",
        &format!("postgres://repl@127.0.0.1:{}/postgres", server.port),
        "tables = [\"e\"]",
    );
    assert_failed_with(&out, "must be owner of table e");
    // no publication and no tables to create it from
    let out = run("nopub", &server.url, "");
    assert_failed_with(&out, "publication `weir_pub` does not exist");
    // TLS demanded from a server without it
    let out = run(
        "notls",
        &format!("{}?sslmode=require", server.url),
        "tables = [\"e\"]",
    );
    assert_failed_with(&out, "does not offer TLS");
    // a table that does not exist
    let out = run("notable", &server.url, "tables = [\"missing\"]");
    assert_failed_with(&out, "relation \"public.missing\" does not exist");
    // a broken connection string names the file, line and column
    let out = run("badurl", "mysql://x", "tables = [\"e\"]");
    assert_failed_with(&out, "badurl.toml:6:7");
    assert_failed_with(&out, "scheme");
    // a required slot that is missing
    let out = run(
        "noslot",
        &server.url,
        "tables = [\"e\"]\ncreate_slot = false",
    );
    assert_failed_with(&out, "replication slot `weir_slot` does not exist");
    assert_eq!(
        server.psql("SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with
/// the openssl command; the key readable by the server's OS user.
fn make_certs(dir: &Path) {
    common::certs::make(dir);
    // the server (run as postgres when the tests run as root) reads them
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            "if [ \"$(id -u)\" = 0 ]; then chown postgres: server.key server.crt; fi",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_encrypts_and_verifies_the_server_certificate() {
    let certs = tempfile::Builder::new()
        .prefix("weir-pgtls")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        certs.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    make_certs(certs.path());
    let c = |f: &str| certs.path().join(f).display().to_string();
    let server = Server::start_with(&[
        "ssl=on",
        &format!("ssl_cert_file={}", c("server.crt")),
        &format!("ssl_key_file={}", c("server.key")),
    ]);
    server.psql("CREATE TABLE s (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, query: &str, out: &Path| {
        let p = cdc_toml(
            dir.path(),
            name,
            &format!("{}?{query}", server.url),
            &format!("slot_{name}"),
            "tables = [\"s\"]\nsingle_active = false",
            &file_sink(out),
        );
        start_weir(dir.path(), p)
    };
    // encrypted without checks, and with the chain and name checked
    for (name, query) in [
        ("require", "sslmode=require".to_string()),
        (
            "full",
            format!("sslmode=verify-full&sslrootcert={}", c("ca.crt")),
        ),
    ] {
        let out = dir.path().join(format!("{name}.jsonl"));
        let weir_run = run(name, &query, &out);
        wait_for("the slot", Duration::from_secs(30), || {
            server.slot_confirmed(&format!("slot_{name}")).is_some()
        });
        let encrypted = server.psql(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.application_name = 'weir'",
        );
        assert_ne!(encrypted, "0", "{name}: weir's sessions use TLS");
        server.psql(&format!("INSERT INTO s VALUES ({})", name.len()));
        wait_for("the event", Duration::from_secs(30), || {
            line_count(&out) >= 1
        });
        let (status, log) = stop_weir(weir_run);
        assert!(status.success(), "{log}");
    }
    // a certificate from another CA is refused, clearly
    let p = cdc_toml(
        dir.path(),
        "wrong",
        &format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            server.url,
            c("other.crt")
        ),
        "slot_wrong",
        "",
        BLACKHOLE,
    );
    let out = weir()
        .arg("run")
        .arg(p)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_failed_with(&out, "TLS handshake with 127.0.0.1");
    assert_failed_with(&out, "UnknownIssuer");
}
