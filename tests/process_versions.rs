//! Versions of `python` and `node` steps in a running `weir run`, through
//! the same admin API and catalog as WebAssembly: a deploy and a rollback
//! of a Python handler under load lose nothing and keep each key's order;
//! a Node canary gets its share of the keys and is promoted; an upload
//! with a syntax error is refused and the running version stays.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use common::admin::{curl, functions, set_token, value_of, wait_ready, TOKEN};
use common::http::free_port;
use common::{read_envelopes, start_weir, stop_weir, write};

fn pipeline(dir: &Path, admin: &str, kind: &str, handler: &Path, rate: u32) -> std::path::PathBuf {
    write(
        dir,
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "versions"
shards = 2
[sources.gen]
type = "generator"
rate = {rate}
partitions = 1
key_cardinality = 40
payload = '{{"n":{{{{seq}}}}}}'
batch = {{ max_events = 64, max_wait = "5ms" }}
[[steps]]
type = "{kind}"
name = "fn"
handler = "{}"
[sinks.out]
type = "file"
path = "out.jsonl"
format = "envelope"
[sinks.dlq]
type = "file"
path = "dlq.jsonl"
format = "envelope"
[dead_letter]
sink = "dlq"
[retry]
max_attempts = 1
[admin]
listen = "{admin}"
[checkpoint]
dir = "cp"
"#,
            handler.display()
        ),
    )
}

const PY_V1: &str = "import json\n\ndef handler(context, event):\n    d = json.loads(event.value)\n    d['v'] = 1\n    return d\n";
const PY_V2: &str = "import json\n\ndef handler(context, events):\n    return [dict(json.loads(e.value), v=2) for e in events]\n";

#[test]
fn a_python_deploy_and_rollback_under_load_lose_nothing_and_keep_each_keys_order() {
    set_token();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let v1 = write(dir.path(), "v1/h.py", PY_V1);
    let v2 = write(dir.path(), "v2/h.py", PY_V2);
    let p = pipeline(dir.path(), &admin, "python", &v1, 8000);
    let running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    std::thread::sleep(Duration::from_millis(800));

    // a broken version is refused with file and line; the running one stays
    let url = format!("http://{admin}/api/v1/functions/fn/deploy");
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-H",
        "Content-Type: text/x-python",
        "--data-binary",
        "def handler(c, e):\n  return (\n",
        &url,
    ]);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("upload:2") || body.contains("SyntaxError"),
        "{body}"
    );

    let deployed = functions(&admin, &["deploy", "fn", v2.to_str().unwrap()]);
    assert_eq!(deployed["type"], "python", "{deployed}");
    let v1_hash = deployed["previous"]["hash"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(800));
    // the v1 file changes on disk: the rollback still runs the bytes deployed
    std::fs::write(
        &v1,
        "def handler(context, event):\n    raise RuntimeError('not this')\n",
    )
    .unwrap();
    let rolled = functions(&admin, &["rollback", "fn"]);
    assert_eq!(rolled["stable"]["hash"], v1_hash.as_str(), "{rolled}");
    std::thread::sleep(Duration::from_millis(600));

    let (status, log) = stop_weir(running);
    assert!(status.success(), "{log}");
    assert!(
        read_envelopes(&dir.path().join("dlq.jsonl")).is_empty(),
        "{log}"
    );
    let out = read_envelopes(&dir.path().join("out.jsonl"));
    let mut seen = HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut phases = Vec::new();
    for e in &out {
        let v = value_of(e);
        let n = v["n"].as_u64().unwrap_or_else(|| panic!("{e}"));
        assert!(seen.insert(n), "event {n} delivered twice");
        let key = e["key"].as_str().unwrap().to_string();
        if let Some(prev) = last.insert(key.clone(), n) {
            assert!(prev < n, "key {key}: {n} after {prev}");
        }
        let version = v["v"].as_u64().unwrap();
        if phases.last() != Some(&version) {
            phases.push(version);
        }
    }
    let count = out.len() as u64;
    assert!(count > 1000, "{count}");
    assert!(seen.iter().all(|n| *n < count), "no gap in 0..{count}");
    assert!(phases.contains(&2), "v2 ran: {phases:?}");
    assert_eq!(phases.first(), Some(&1));
    assert_eq!(phases.last(), Some(&1), "the rollback took effect");
}

#[test]
fn a_node_canary_gets_its_share_of_the_keys_and_is_promoted() {
    set_token();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let v1 = write(
        dir.path(),
        "h.js",
        "exports.handler = (context, event) => ({ ...JSON.parse(event.value), v: 1 });\n",
    );
    let v2 = write(
        dir.path(),
        "h2.js",
        "exports.handler = async (context, events) => events.map((e) => ({ ...JSON.parse(e.value), v: 2 }));\n",
    );
    let p = pipeline(dir.path(), &admin, "node", &v1, 5000);
    let running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    std::thread::sleep(Duration::from_millis(500));
    // judged on errors only: a 16-event sub-batch's per-call cost is not
    // what this test is about
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", v2.display()),
        &format!("http://{admin}/api/v1/functions/fn/canary?share=0.25&max_latency_ratio=1000"),
    ]);
    assert_eq!(status, 200, "{body}");
    let started: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        started["canary"]["version"]["hash"].is_string(),
        "{started}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let during = functions(&admin, &["list"]);
    assert!(
        during["functions"][0]["canary"].is_object(),
        "the canary still runs: {during}"
    );
    // a bigger share while it runs; both sides are counted afresh
    let widened = functions(&admin, &["share", "fn", "0.5"]);
    assert_eq!(widened["canary"]["share"], 0.5, "{widened}");
    std::thread::sleep(Duration::from_millis(800));
    let promoted = functions(&admin, &["promote", "fn"]);
    assert_eq!(
        promoted["stable"]["hash"], started["canary"]["version"]["hash"],
        "{promoted}"
    );
    assert_eq!(promoted["last_canary"]["outcome"], "promoted", "{promoted}");
    std::thread::sleep(Duration::from_millis(500));
    let (status, log) = stop_weir(running);
    assert!(status.success(), "{log}");
    let stats = &promoted["last_canary"]["stats"];
    let (canary, control) = (
        stats["canary"]["events"].as_u64().unwrap(),
        stats["stable"]["events"].as_u64().unwrap(),
    );
    assert!(
        canary > 0 && control > 0,
        "both ran while the canary did: {stats}"
    );
    let out = read_envelopes(&dir.path().join("out.jsonl"));
    let mut seen = HashSet::new();
    let mut by_version: HashMap<u64, u64> = HashMap::new();
    for e in &out {
        let v = value_of(e);
        assert!(seen.insert(v["n"].as_u64().unwrap()), "once: {e}");
        *by_version.entry(v["v"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(seen.iter().all(|n| *n < out.len() as u64), "no gap");
    assert!(by_version.len() == 2, "{by_version:?}");
    assert!(
        out.last().map(|e| value_of(e)["v"] == 2).unwrap_or(false),
        "promoted: the last events ran on v2"
    );
}
