//! End-to-end delivery through `weir run`: files in, files out, checkpoints
//! on disk, dead letters with their reasons, order per partition and per key,
//! resume after a restart, and a clean stop on SIGTERM.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{read_envelopes, read_lines, run_in, show, stored_position, write};

fn numbered_lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"n\":{i},\"amount\":{}}}\n", (i * 37) % 200))
        .collect()
}

#[test]
fn file_to_file_delivers_everything_and_checkpoints_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let input = numbered_lines(5000);
    write(dir.path(), "in.jsonl", &input);
    let pipeline = write(
        dir.path(),
        "p.toml",
        r#"
[pipeline]
name = "copy"
[sources.in]
type = "file"
path = "in.jsonl"
batch = { max_events = 128 }
[sinks.out]
type = "file"
path = "out.jsonl"
[checkpoint]
dir = "cp"
"#,
    );
    let out = run_in(dir.path(), &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let lines = read_lines(&dir.path().join("out.jsonl"));
    assert_eq!(lines.len(), 5000);
    let mut sorted = lines.clone();
    sorted.sort();
    let mut expected: Vec<String> = input.lines().map(str::to_string).collect();
    expected.sort();
    assert_eq!(sorted, expected, "every input line arrives exactly once");
    assert_eq!(
        stored_position(&dir.path().join("cp"), "copy", "in", 0),
        Some(input.len() as u64)
    );

    // a second run resumes at the checkpoint: nothing is read twice
    let out = run_in(dir.path(), &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(read_lines(&dir.path().join("out.jsonl")).len(), 5000);
}

#[test]
fn poison_and_invalid_json_reach_the_dead_letter_sink_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for i in 0..300 {
        match i {
            50 => input.push_str("{not json\n"),
            120 => input.push_str("{\"n\":120,\"poison\":true}\n"),
            _ => input.push_str(&format!("{{\"n\":{i}}}\n")),
        }
    }
    write(dir.path(), "in.jsonl", &input);
    let pipeline = write(
        dir.path(),
        "p.toml",
        r#"
[pipeline]
name = "dlq"
[sources.in]
type = "file"
path = "in.jsonl"
format = "json"
batch = { max_events = 16 }
[[steps]]
name = "parse"
type = "json"
[[steps]]
name = "check"
type = "jq"
expr = 'if .poison then error("poison pill \(.n)") else .ok = true end'
[sinks.out]
type = "file"
path = "out.jsonl"
[sinks.dlq]
type = "file"
path = "dlq.jsonl"
format = "envelope"
[dead_letter]
sink = "dlq"
[checkpoint]
dir = "cp"
"#,
    );
    let out = run_in(dir.path(), &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let good = read_lines(&dir.path().join("out.jsonl"));
    assert_eq!(good.len(), 298, "the rest flow");
    assert!(good.iter().all(|l| l.contains("\"ok\":true")));
    let dead = read_envelopes(&dir.path().join("dlq.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:#?}");
    let by_stage: HashMap<String, &serde_json::Value> = dead
        .iter()
        .map(|d| (d["headers"]["weir.stage"].as_str().unwrap().to_string(), d))
        .collect();
    let invalid = by_stage["parse"];
    assert_eq!(invalid["value"], "{not json");
    assert!(
        invalid["headers"]["weir.error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("json"),
        "{invalid}"
    );
    assert_eq!(invalid["headers"]["weir.source"], "in");
    let poison = by_stage["check"];
    assert!(
        poison["headers"]["weir.error"]
            .as_str()
            .unwrap()
            .contains("poison pill 120"),
        "{poison}"
    );
    // the offset of a file event is the byte where its line starts
    assert_eq!(
        poison["offset"].as_u64(),
        Some(input.lines().take(120).map(|l| l.len() as u64 + 1).sum())
    );
    // dead-lettered events count as delivered: the whole file is committed
    assert_eq!(
        stored_position(&dir.path().join("cp"), "dlq", "in", 0),
        Some(input.len() as u64)
    );
}

/// Runs a generator → jq → file (envelope) pipeline with the given
/// `[pipeline]` and generator settings and returns what the sink wrote.
fn run_generator_pipeline(
    pipeline_settings: &str,
    generator_options: &str,
) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "p.toml",
        &format!(
            "[pipeline]\n{pipeline_settings}\n[sources.gen]\ntype = \"generator\"\n{generator_options}\n\
             [[steps]]\ntype = \"jq\"\nexpr = '.seen = true'\n\
             [sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\nformat = \"envelope\"\nfsync = false\n"
        ),
    );
    let out = run_in(dir.path(), &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    read_envelopes(&dir.path().join("out.jsonl"))
}

#[test]
fn order_holds_per_partition_across_shards_and_lanes() {
    let events = run_generator_pipeline(
        "name = \"order\"\nshards = 2\nmax_inflight = 4",
        "count = 40000\npartitions = 8\npayload = '{\"seq\":{{seq}},\"p\":{{partition}}}'\nbatch = { max_events = 50 }",
    );
    assert_eq!(events.len(), 40000);
    let mut last: HashMap<u64, i64> = HashMap::new();
    for e in &events {
        let p = e["partition"].as_u64().unwrap();
        let offset = e["offset"].as_i64().unwrap();
        assert_eq!(e["value"]["p"].as_u64(), Some(p));
        let prev = last.insert(p, offset).unwrap_or(-1);
        assert_eq!(
            offset,
            prev + 1,
            "partition {p}: offset {offset} after {prev}"
        );
    }
    assert_eq!(last.len(), 8);
}

#[test]
fn order_holds_per_key_when_batches_of_a_partition_run_concurrently() {
    let events = run_generator_pipeline(
        "name = \"order-key\"\nshards = 2\nordering = \"key\"\nmax_inflight = 4",
        "count = 40000\npartitions = 1\nkey_cardinality = 97\npayload = '{\"seq\":{{seq}},\"key\":\"{{key}}\"}'\nbatch = { max_events = 64 }",
    );
    assert_eq!(events.len(), 40000);
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut out_of_partition_order = 0;
    let mut prev_seq = -1;
    for e in &events {
        let key = e["key"].as_str().unwrap().to_string();
        assert_eq!(e["value"]["key"].as_str(), Some(key.as_str()));
        let seq = e["value"]["seq"].as_i64().unwrap();
        if let Some(prev) = last.insert(key.clone(), seq) {
            assert!(seq > prev, "key {key}: seq {seq} after {prev}");
        }
        if seq < prev_seq {
            out_of_partition_order += 1;
        }
        prev_seq = seq;
    }
    assert_eq!(last.len(), 97);
    // the point of key ordering: batches of one partition did run side by side
    assert!(
        out_of_partition_order > 0,
        "lanes never overlapped; the test proves nothing"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_drains_commits_and_a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 400_000;
    let input = numbered_lines(n);
    write(dir.path(), "in.jsonl", &input);
    let pipeline = write(
        dir.path(),
        "p.toml",
        r#"
[pipeline]
name = "stop"
[sources.in]
type = "file"
path = "in.jsonl"
batch = { max_events = 100 }
[[steps]]
type = "jq"
expr = '.x = 1'
[sinks.out]
type = "file"
path = "out.jsonl"
batch = { max_events = 100 }
[checkpoint]
dir = "cp"
interval = "50ms"
[shutdown]
timeout = "10s"
"#,
    );
    let mut child = common::KillOnDrop(
        common::weir()
            .args(["run", pipeline.to_str().unwrap()])
            .current_dir(dir.path())
            .env("WEIR_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    // wait until some output exists, then stop it mid-file
    let started = Instant::now();
    while read_lines(&dir.path().join("out.jsonl")).len() < 1000 {
        assert!(started.elapsed() < Duration::from_secs(60), "no output");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let stop = Instant::now();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
    assert!(
        stop.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        stop.elapsed()
    );
    let committed =
        stored_position(&dir.path().join("cp"), "stop", "in", 0).expect("a final checkpoint");
    let written = read_lines(&dir.path().join("out.jsonl")).len();
    assert!(
        written < n,
        "the file was done before the signal; make it larger"
    );
    // the checkpoint covers exactly what was written: a line boundary, all before it delivered
    let lines_before: usize = input[..committed as usize].lines().count();
    assert!(input.as_bytes()[committed as usize - 1] == b'\n');
    assert_eq!(
        lines_before, written,
        "final checkpoint covers exactly the delivered events"
    );

    let out = run_in(dir.path(), &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let lines = read_lines(&dir.path().join("out.jsonl"));
    assert_eq!(
        lines.len(),
        n,
        "after the restart every event is there once"
    );
    let distinct: std::collections::HashSet<&String> = lines.iter().collect();
    assert_eq!(distinct.len(), n);
}

#[test]
fn a_sink_that_cannot_open_stops_the_pipeline_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "blocker", "a file where a directory should be");
    let pipeline = write(
        dir.path(),
        "p.toml",
        "[sources.gen]\ntype = \"generator\"\n[sinks.out]\ntype = \"file\"\npath = \"blocker/out.jsonl\"\n[checkpoint]\ndir = \"cp\"\n",
    );
    // an unbounded generator: only the sink's failure can end this run
    let started = Instant::now();
    let out = run_in(dir.path(), &["run", pipeline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sink `out`") && stderr.contains("blocker"),
        "{stderr}"
    );
}

#[test]
fn a_pipeline_whose_every_sink_is_routed_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "p.toml",
        "[sources.gen]\ntype = \"generator\"\n[[steps]]\ntype = \"route\"\nrules = [{ when = \".amount > 100\", sink = \"big\" }]\n[sinks.big]\ntype = \"stdout\"\n",
    );
    let out = run_in(dir.path(), &["validate", pipeline.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no sink receives the pipeline's output"),
        "{}",
        show(&out)
    );
}

#[cfg(unix)]
#[test]
fn a_sink_stuck_in_io_cannot_keep_the_process_alive_past_the_shutdown_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // opening a FIFO for writing blocks until a reader comes: none ever does
    let pipeline = write(
        dir.path(),
        "p.toml",
        "[sources.gen]\ntype = \"generator\"\n[sinks.out]\ntype = \"file\"\npath = \"fifo\"\n[shutdown]\ntimeout = \"2s\"\n[checkpoint]\ndir = \"cp\"\n",
    );
    let mut child = common::KillOnDrop(
        common::weir()
            .args(["run", pipeline.to_str().unwrap()])
            .current_dir(dir.path())
            .env("WEIR_LOG", "warn")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let stop = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert_eq!(status.code(), Some(1), "a timed-out shutdown is a failure");
            break;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(8),
            "still running {:?} after SIGTERM",
            stop.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("shutdown did not finish within"),
        "{stderr}"
    );
}

/// Dead letters replayed through a fixed pipeline: every failed event is
/// delivered once with its key and its own headers; replaying into the
/// dead-letter file itself is refused.
#[test]
fn weir_replay_runs_dead_letters_through_the_fixed_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let input: String = (0..200)
        .map(|i| format!("{{\"n\":{i},\"bad\":{}}}\n", i % 10 == 3))
        .collect();
    common::write(dir.path(), "in.jsonl", &input);
    let pipeline = |steps: &str| {
        format!(
            "[pipeline]\nname = \"replayed\"\n[sources.in]\ntype = \"file\"\npath = \"in.jsonl\"\nformat = \"json\"\n[[steps]]\ntype = \"key-by\"\nfield = \"n\"\n{steps}\n[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\nformat = \"envelope\"\n[sinks.dlq]\ntype = \"file\"\npath = \"dlq.jsonl\"\nformat = \"envelope\"\n[dead_letter]\nsink = \"dlq\"\n[retry]\nmax_attempts = 1\n[checkpoint]\ndir = \"cp\"\n"
        )
    };
    let broken = common::write(
        dir.path(),
        "broken.toml",
        &pipeline("[[steps]]\ntype = \"jq\"\nname = \"check\"\nexpr = 'if .bad then error(\"bad input\") else . end'"),
    );
    let out = common::run_in(dir.path(), &["run", broken.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::show(&out));
    let dead = common::read_envelopes(&dir.path().join("dlq.jsonl"));
    assert_eq!(dead.len(), 20);
    assert!(dead[0]["headers"]["weir.error"]
        .as_str()
        .unwrap()
        .contains("bad input"));

    let fixed = common::write(
        dir.path(),
        "fixed.toml",
        &pipeline("[[steps]]\ntype = \"jq\"\nname = \"check\"\nexpr = '.fixed = true'"),
    );
    // replaying the dead-letter file itself would append to what it reads
    let refused = common::run_in(
        dir.path(),
        &["replay", "dlq.jsonl", fixed.to_str().unwrap()],
    );
    common::assert_failed_with(&refused, "is this pipeline's dead-letter file");
    std::fs::rename(
        dir.path().join("dlq.jsonl"),
        dir.path().join("dlq.replaying.jsonl"),
    )
    .unwrap();
    let replayed = common::run_in(
        dir.path(),
        &["replay", "dlq.replaying.jsonl", fixed.to_str().unwrap()],
    );
    assert!(replayed.status.success(), "{}", common::show(&replayed));
    let out = common::read_envelopes(&dir.path().join("out.jsonl"));
    let fixed_events: Vec<&serde_json::Value> =
        out.iter().filter(|e| e["value"]["fixed"] == true).collect();
    assert_eq!(fixed_events.len(), 20, "every dead letter delivered once");
    for e in fixed_events {
        let n = e["value"]["n"].as_u64().unwrap();
        assert_eq!(n % 10, 3);
        assert_eq!(e["key"], n.to_string(), "the key came back: {e}");
        assert!(
            e["headers"].get("weir.error").is_none(),
            "the failure's headers are gone: {e}"
        );
    }
    assert_eq!(out.len(), 200, "180 first time, 20 replayed");
    assert!(
        !dir.path().join("dlq.jsonl").exists()
            || common::read_envelopes(&dir.path().join("dlq.jsonl")).is_empty()
    );
}
