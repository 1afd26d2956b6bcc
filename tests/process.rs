//! The `python` and `node` steps end to end through `weir run`, with the
//! real interpreters: the same output as the native step in both languages;
//! an exception on one event dead-letters it with the exception's last line
//! and delivers the rest; `init` runs once per worker; a worker killed
//! mid-batch loses nothing (the batch runs again); a handler stuck past the
//! timeout is killed and only its event is dead-lettered; printing does not
//! corrupt the protocol; batch handlers route, emit and drop; broken
//! handlers are `weir validate` errors naming the file and line; `weir
//! test` runs them offline.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use common::{read_envelopes, read_lines, run_in, show, write};

/// A sink batch handlers route to.
const AUDIT_SINK: &str = "[sinks.audit]\ntype = \"file\"\npath = \"audit.jsonl\"\n";

/// Runs `file in.jsonl → STEPS → out.jsonl` (dead letters to dlq.jsonl) in `dir`.
fn run_pipeline(dir: &Path, input: &str, steps: &str, batch: usize) -> std::process::Output {
    common::run_file_pipeline(dir, input, steps, batch, AUDIT_SINK)
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/functions")
        .join(name)
        .display()
        .to_string()
}

fn json_input(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"n\":{i},\"name\":\"u\\\"{i} é\",\"env\":\"dev\",\"tags\":[1,2]}}\n"))
        .collect()
}

/// Compares field by field (Python and serde_json order keys alike, but
/// spell non-ASCII and floats their own way).
fn parsed(lines: Vec<String>) -> Vec<serde_json::Value> {
    let mut values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    values.sort_by_key(|v| v["n"].as_u64());
    values
}

#[test]
fn json_add_field_in_python_and_node_writes_what_the_native_step_writes() {
    let input = json_input(3000);
    let native = tempfile::tempdir().unwrap();
    let out = run_pipeline(
        native.path(),
        &input,
        "[[steps]]\ntype = \"json-add-field\"\nfield = \"env\"\nvalue = \"prod\"\n",
        64,
    );
    assert!(out.status.success(), "{}", show(&out));
    let expected = parsed(read_lines(&native.path().join("out.jsonl")));
    assert_eq!(expected.len(), 3000);
    for (kind, file) in [
        ("python", "json_add_field.py"),
        ("node", "json_add_field.js"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = run_pipeline(
            dir.path(),
            &input,
            &format!(
                "[[steps]]\ntype = \"{kind}\"\nname = \"add\"\nhandler = '{}'\nconfig = {{ field = \"env\", value = \"prod\" }}\n",
                example(file)
            ),
            64,
        );
        assert!(out.status.success(), "{kind}: {}", show(&out));
        assert_eq!(
            parsed(read_lines(&dir.path().join("out.jsonl"))),
            expected,
            "{kind}"
        );
        assert!(
            read_envelopes(&dir.path().join("dlq.jsonl")).is_empty(),
            "{kind}"
        );
    }
}

#[test]
fn an_exception_dead_letters_its_event_with_the_last_line_and_the_rest_is_delivered() {
    let cases = [
        (
            "python",
            "h.py",
            "import json\n\ndef handler(context, event):\n    data = json.loads(event.value)\n    if data['n'] % 100 == 7:\n        raise ValueError('bad n %d' % data['n'])\n    return event.value\n",
            "ValueError: bad n",
        ),
        (
            "node",
            "h.js",
            "exports.handler = (context, event) => {\n  const data = JSON.parse(event.value);\n  if (data.n % 100 === 7) throw new RangeError(`bad n ${data.n}`);\n  return event.value;\n};\n",
            "RangeError: bad n",
        ),
    ];
    for (kind, file, source, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let handler = write(dir.path(), file, source);
        let out = run_pipeline(
            dir.path(),
            &json_input(1000),
            &format!(
                "[[steps]]\ntype = \"{kind}\"\nname = \"f\"\nhandler = '{}'\n",
                handler.display()
            ),
            100,
        );
        assert!(out.status.success(), "{kind}: {}", show(&out));
        assert_eq!(
            read_lines(&dir.path().join("out.jsonl")).len(),
            990,
            "{kind}"
        );
        let dead = read_envelopes(&dir.path().join("dlq.jsonl"));
        assert_eq!(dead.len(), 10, "{kind}");
        for e in &dead {
            let reason = e["headers"]["weir.error"].as_str().unwrap();
            assert!(reason.contains(message), "{kind}: {reason}");
            assert!(
                reason.contains(file),
                "{kind}: names where it was raised: {reason}"
            );
            // an exception is the event's fault: dead-lettered at once, not retried
            assert_eq!(e["headers"]["weir.attempts"], "1", "{kind}: {e}");
        }
    }
}

#[test]
fn init_runs_once_per_worker_and_printing_does_not_corrupt_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let handler = write(
        dir.path(),
        "h.py",
        r#"
import json, os, sys
INITS = 0

def init(context):
    global INITS
    INITS += 1
    print("init in", os.getpid())

def handler(context, event):
    print("a line on stdout that is not a frame", event.value)
    sys.stdout.write("\x00\x00\x00\x10garbage")
    print("and one on stderr", file=sys.stderr)
    context.log.warning("logged through the context")
    return json.dumps({"pid": os.getpid(), "inits": INITS, "value": event.value})
"#,
    );
    let out = run_pipeline(
        dir.path(),
        &json_input(2000),
        &format!(
            "[[steps]]\ntype = \"python\"\nname = \"p\"\nhandler = '{}'\nworkers = 2\n",
            handler.display()
        ),
        50,
    );
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("logged through the context") && log.contains("function=\"p\""),
        "{log}"
    );
    let lines = read_lines(&dir.path().join("out.jsonl"));
    assert_eq!(lines.len(), 2000);
    let mut pids = HashSet::new();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["inits"], 1, "init ran once in worker {}", v["pid"]);
        pids.insert(v["pid"].as_u64().unwrap());
    }
    // 2 shards × at most 2 workers each
    assert!(!pids.is_empty() && pids.len() <= 4, "{pids:?}");
}

#[test]
fn a_worker_killed_mid_batch_loses_nothing_and_the_batch_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("killed-once");
    let handler = write(
        dir.path(),
        "h.py",
        &format!(
            r#"
import json, os, signal
MARKER = {marker:?}

def handler(context, events):
    for event in events:
        if json.loads(event.value)["n"] == 1234 and not os.path.exists(MARKER):
            open(MARKER, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        event.value = event.value.replace('"dev"', '"seen"')
"#,
            marker = marker.display().to_string()
        ),
    );
    let out = run_pipeline(
        dir.path(),
        &json_input(3000),
        &format!(
            "[[steps]]\ntype = \"python\"\nname = \"k\"\nhandler = '{}'\n",
            handler.display()
        ),
        100,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(marker.exists(), "the worker was killed");
    let lines = read_lines(&dir.path().join("out.jsonl"));
    let ns: HashSet<u64> = parsed(lines.clone())
        .iter()
        .map(|v| {
            assert_eq!(v["env"], "seen");
            v["n"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(lines.len(), 3000, "nothing lost, nothing twice");
    assert_eq!(ns.len(), 3000);
    assert!(read_envelopes(&dir.path().join("dlq.jsonl")).is_empty());
}

#[test]
fn a_dead_worker_marks_the_step_degraded_until_a_batch_runs_cleanly() {
    // the step's health hook: the lane asks after its first batch, then
    // once a second, and after every batch while degraded; the worker dies
    // in the first batch, the later ones run cleanly
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("killed-once");
    let handler = write(
        dir.path(),
        "h.py",
        &format!(
            r#"
import json, os, signal, time
MARKER = {marker:?}

def handler(context, events):
    if json.loads(events[0].value)["n"] == 0 and not os.path.exists(MARKER):
        open(MARKER, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
"#,
            marker = marker.display().to_string()
        ),
    );
    let out = run_pipeline(
        dir.path(),
        &json_input(4000),
        &format!(
            "[[steps]]\ntype = \"python\"\nname = \"k\"\nhandler = '{}'\n",
            handler.display()
        ),
        100,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(marker.exists(), "the worker was killed");
    assert_eq!(read_lines(&dir.path().join("out.jsonl")).len(), 4000);
    let log = String::from_utf8_lossy(&out.stderr);
    let degraded = log
        .find("step instance degraded")
        .unwrap_or_else(|| panic!("never reported degraded:\n{log}"));
    assert!(
        log[degraded..]
            .lines()
            .next()
            .unwrap()
            .contains("died mid-batch"),
        "{log}"
    );
    let healthy = log
        .find("step instance healthy again")
        .unwrap_or_else(|| panic!("never reported healthy again:\n{log}"));
    assert!(healthy > degraded, "{log}");
}

#[test]
fn a_handler_stuck_past_the_timeout_is_killed_and_only_its_event_is_dead_lettered() {
    for (kind, file, source) in [
        (
            "python",
            "h.py",
            "import json, time\n\ndef handler(context, event):\n    if json.loads(event.value)['n'] == 42:\n        time.sleep(3600)\n",
        ),
        (
            "node",
            "h.js",
            "exports.handler = async (context, event) => {\n  if (JSON.parse(event.value).n === 42) await new Promise(() => {});\n};\n",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let handler = write(dir.path(), file, source);
        let out = run_pipeline(
            dir.path(),
            &json_input(300),
            &format!(
                "[[steps]]\ntype = \"{kind}\"\nname = \"s\"\nhandler = '{}'\ntimeout = \"300ms\"\n",
                handler.display()
            ),
            50,
        );
        assert!(out.status.success(), "{kind}: {}", show(&out));
        assert_eq!(read_lines(&dir.path().join("out.jsonl")).len(), 299, "{kind}");
        let dead = read_envelopes(&dir.path().join("dlq.jsonl"));
        assert_eq!(dead.len(), 1, "{kind}: {dead:?}");
        let reason = dead[0]["headers"]["weir.error"].as_str().unwrap();
        assert!(reason.contains("timeout"), "{kind}: {reason}");
        assert!(dead[0]["value"].to_string().contains("\"n\":42") || dead[0]["value"]["n"] == 42, "{kind}: {}", dead[0]);
    }
}

#[test]
fn batch_handlers_route_emit_drop_and_change_keys_in_both_languages() {
    let cases = [
        (
            "python",
            "h.py",
            r#"
import json

def handler(context, events):
    out = []
    for event in events:
        n = json.loads(event.value)["n"]
        if n % 4 == 0:
            context.drop(event)
        elif n % 4 == 1:
            context.route(event, "audit")
        elif n % 4 == 2:
            context.emit(event, {"copy": n})
            event.key = "k%d" % n
            event.headers["seen"] = "yes"
        out.append(None)
    return out
"#,
        ),
        (
            "node",
            "h.js",
            r#"
exports.handler = async (context, events) => {
  for (const event of events) {
    const n = JSON.parse(event.value).n;
    if (n % 4 === 0) context.drop(event);
    else if (n % 4 === 1) context.route(event, 'audit');
    else if (n % 4 === 2) {
      context.emit(event, { copy: n });
      event.key = `k${n}`;
      event.headers.seen = 'yes';
    }
  }
};
"#,
        ),
    ];
    for (kind, file, source) in cases {
        let dir = tempfile::tempdir().unwrap();
        let handler = write(dir.path(), file, source);
        let out = run_pipeline(
            dir.path(),
            &json_input(400),
            &format!(
                "[[steps]]\ntype = \"{kind}\"\nname = \"b\"\nhandler = '{}'\nroutes = [\"audit\"]\n[[steps]]\ntype = \"jq\"\nexpr = '.'\n",
                handler.display()
            ),
            64,
        );
        assert!(out.status.success(), "{kind}: {}", show(&out));
        let outs = read_lines(&dir.path().join("out.jsonl"));
        let audit = read_lines(&dir.path().join("audit.jsonl"));
        assert_eq!(audit.len(), 100, "{kind}");
        // n%4==2: the event and its copy; n%4==3: the event
        assert_eq!(outs.len(), 300, "{kind}");
        let copies = outs.iter().filter(|l| l.contains("\"copy\"")).count();
        assert_eq!(copies, 100, "{kind}");
        assert!(
            read_envelopes(&dir.path().join("dlq.jsonl")).is_empty(),
            "{kind}"
        );
    }
}

#[test]
fn broken_handlers_are_validate_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "python",
            "syntax.py",
            "def handler(context, event):\n    return (\n\nx = 1\n",
            "syntax.py:2",
        ),
        (
            "python",
            "nohandler.py",
            "def other(context, event):\n    pass\n",
            "no top-level `handler`",
        ),
        (
            "node",
            "syntax.js",
            "exports.handler = (c, e) => {\n  return e.value;\n}}\n",
            "syntax.js:3",
        ),
        ("python", "missing.py", "", "cannot read"),
    ];
    for (kind, file, source, message) in cases {
        if !source.is_empty() {
            write(dir.path(), file, source);
        }
        let pipeline = write(
            dir.path(),
            "p.toml",
            &format!(
                "[sources.in]\ntype = \"generator\"\n[[steps]]\ntype = \"{kind}\"\nhandler = \"{file}\"\n[sinks.out]\ntype = \"blackhole\"\n"
            ),
        );
        let out = run_in(dir.path(), &["validate", pipeline.to_str().unwrap()]);
        common::assert_failed_with(&out, message);
        common::assert_failed_with(&out, "p.toml");
    }
    // a missing interpreter
    write(
        dir.path(),
        "ok.py",
        "def handler(context, event):\n    pass\n",
    );
    let pipeline = write(
        dir.path(),
        "p.toml",
        "[sources.in]\ntype = \"generator\"\n[[steps]]\ntype = \"python\"\nhandler = \"ok.py\"\ninterpreter = \"/nonexistent/python9\"\n[sinks.out]\ntype = \"blackhole\"\n",
    );
    let out = run_in(dir.path(), &["validate", pipeline.to_str().unwrap()]);
    common::assert_failed_with(&out, "cannot run `/nonexistent/python9`");
}

#[test]
fn weir_test_runs_python_and_node_steps_offline() {
    for (kind, file) in [
        ("python", "json_add_field.py"),
        ("node", "json_add_field.js"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = write(
            dir.path(),
            "p.toml",
            &format!(
                "[sources.in]\ntype = \"generator\"\n[[steps]]\ntype = \"{kind}\"\nname = \"add\"\nhandler = '{}'\nconfig = {{ field = \"x\", value = 1 }}\n[sinks.out]\ntype = \"blackhole\"\n",
                example(file)
            ),
        );
        let input = write(dir.path(), "events.jsonl", "{\"a\":1}\n[1]\n");
        let out = run_in(
            dir.path(),
            &[
                "test",
                pipeline.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--allow-failures",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{kind}: {}", show(&out));
        assert!(stdout.contains(r#"out {"a":1,"x":1}"#), "{kind}: {stdout}");
        assert!(stdout.contains("fail line 2 step add"), "{kind}: {stdout}");
        assert!(stdout.contains("not a JSON object"), "{kind}: {stdout}");
    }
}

/// Every key's events keep their order through a python step with several lanes and workers.
#[test]
fn each_keys_order_holds_through_workers() {
    let dir = tempfile::tempdir().unwrap();
    let handler = write(
        dir.path(),
        "h.py",
        "def handler(context, event):\n    return event.value\n",
    );
    let input: String = (0..5000)
        .map(|i| format!("{{\"n\":{i},\"k\":\"{}\"}}\n", i % 37))
        .collect();
    let out = run_pipeline(
        dir.path(),
        &input,
        &format!(
            "[[steps]]\ntype = \"python\"\nhandler = '{}'\nworkers = 2\n",
            handler.display()
        ),
        32,
    );
    assert!(out.status.success(), "{}", show(&out));
    let lines = read_lines(&dir.path().join("out.jsonl"));
    assert_eq!(lines.len(), 5000);
    let mut last: HashMap<String, u64> = HashMap::new();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let (k, n) = (
            v["k"].as_str().unwrap().to_string(),
            v["n"].as_u64().unwrap(),
        );
        if let Some(prev) = last.insert(k.clone(), n) {
            assert!(prev < n, "key {k}: {n} after {prev}");
        }
    }
}

#[test]
fn handlers_import_their_own_modules_and_run_in_their_environment() {
    let dir = tempfile::tempdir().unwrap();
    // python: a sibling module, run by a virtual environment's interpreter
    write(
        dir.path(),
        "fn/helpers.py",
        "def tag():\n    return 'from-helpers'\n",
    );
    let py = write(
        dir.path(),
        "fn/h.py",
        "import json, sys\nimport helpers\n\ndef handler(context, event):\n    return json.dumps({'tag': helpers.tag(), 'prefix': sys.prefix})\n",
    );
    let venv = dir.path().join("venv");
    let made = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", show(&made));
    let out = run_pipeline(
        dir.path(),
        "{}\n",
        &format!(
            "[[steps]]\ntype = \"python\"\nhandler = '{}'\nvenv = '{}'\n",
            py.display(),
            venv.display()
        ),
        10,
    );
    assert!(out.status.success(), "{}", show(&out));
    let line: serde_json::Value =
        serde_json::from_str(&read_lines(&dir.path().join("out.jsonl"))[0]).unwrap();
    assert_eq!(line["tag"], "from-helpers");
    assert_eq!(
        std::fs::canonicalize(line["prefix"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(&venv).unwrap(),
        "the venv's interpreter ran it"
    );

    // node: a relative require and a package in node_modules
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "fn/lib/util.js",
        "exports.tag = () => 'from-util';\n",
    );
    write(
        dir.path(),
        "fn/node_modules/leftpad/index.js",
        "module.exports = (s, n) => String(s).padStart(n, '0');\n",
    );
    let js = write(
        dir.path(),
        "fn/h.js",
        "const util = require('./lib/util');\nconst leftpad = require('leftpad');\nexports.handler = (context, event) => ({ tag: util.tag(), padded: leftpad(7, 3) });\n",
    );
    let out = run_pipeline(
        dir.path(),
        "{}\n",
        &format!("[[steps]]\ntype = \"node\"\nhandler = '{}'\n", js.display()),
        10,
    );
    assert!(out.status.success(), "{}", show(&out));
    let line: serde_json::Value =
        serde_json::from_str(&read_lines(&dir.path().join("out.jsonl"))[0]).unwrap();
    assert_eq!(line["tag"], "from-util");
    assert_eq!(line["padded"], "007");
}

/// A handler slower than the source: the source waits (backpressure starts
/// at the step), nothing piles up in memory.
#[test]
fn a_slow_handler_slows_the_source_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let handler = write(
        dir.path(),
        "slow.py",
        "import time\n\ndef handler(context, events):\n    time.sleep(0.02)\n",
    );
    let admin = format!("127.0.0.1:{}", common::http::free_port());
    let p = write(
        dir.path(),
        "p.toml",
        &format!(
            "[pipeline]\nname = \"slow\"\nshards = 2\n[sources.gen]\ntype = \"generator\"\npayload = '{{\"n\":{{{{seq}}}}}}'\nkey_cardinality = 50\n[[steps]]\ntype = \"python\"\nname = \"slow\"\nhandler = '{}'\n[sinks.out]\ntype = \"blackhole\"\n[admin]\nlisten = \"{admin}\"\n[checkpoint]\ndir = \"cp\"\n",
            handler.display()
        ),
    );
    let running = common::start_weir(dir.path(), &p);
    common::admin::wait_ready(&admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let view = loop {
        let (_, body) = common::admin::curl(&[&format!("http://{admin}/api/v1/pipeline")]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["bottleneck"]["stage"] == "step:slow" {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slow step was never found: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_ne!(view["sources"][0]["backpressure"], "OK", "{view}");
    // what the source read but the step has not taken is bounded by the queues
    let read = view["sources"][0]["events"].as_u64().unwrap();
    let taken = view["steps"][0]["events_in"].as_u64().unwrap();
    assert!(read - taken < 40_000, "{read} read, {taken} taken");
    let status = std::fs::read_to_string(format!("/proc/{}/status", running.child.0.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        rss_kib < 300 * 1024,
        "weir's memory stays bounded: {rss_kib} KiB"
    );
}
