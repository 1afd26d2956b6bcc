//! Versions of a `wasm` step in a running `weir run`, driven through the
//! admin API and `weir functions` (real processes, real components):
//! a deploy and a rollback under load lose nothing and keep each key's
//! order; a canary gets its share of the keys; a canary that fails 10 % of
//! its events is rolled back automatically; changes need the token.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::admin::{curl, functions, set_token, value_of, wait_ready, TOKEN};
use common::http::free_port;
use common::wasm::guest;
use common::{read_envelopes, start_weir, stop_weir, weir, write};

fn pipeline(dir: &Path, admin: &str, generator: &str, config: &str) -> std::path::PathBuf {
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
{generator}
batch = {{ max_events = 64, max_wait = "5ms" }}
[[steps]]
type = "wasm"
name = "kit"
module = "{}"
config = {config}
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
            guest("testkit").display()
        ),
    )
}

#[test]
fn a_deploy_and_a_rollback_under_load_lose_nothing_and_keep_each_keys_order() {
    set_token();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(
        dir.path(),
        &admin,
        "rate = 10000\npartitions = 1\nkey_cardinality = 40\npayload = '{\"n\":{{seq}}}'",
        r#"{ tag = "v1", field = "stage", value = "2" }"#,
    );
    let running = start_weir(dir.path(), &p);
    wait_ready(&admin);

    // changes need the token
    let url = format!("http://{admin}/api/v1/functions/kit/rollback");
    assert_eq!(curl(&["-X", "POST", &url]).0, 401);
    assert_eq!(
        curl(&["-X", "POST", "-H", "Authorization: Bearer nope", &url]).0,
        401
    );

    std::thread::sleep(Duration::from_millis(800));
    let v2 = guest("json-add-field");
    let deployed = functions(&admin, &["deploy", "kit", v2.to_str().unwrap()]);
    assert!(deployed["previous"]["hash"].is_string(), "{deployed}");
    let v1_hash = deployed["previous"]["hash"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(800));
    let rolled = functions(&admin, &["rollback", "kit"]);
    assert_eq!(rolled["stable"]["hash"], v1_hash.as_str(), "{rolled}");
    let listed = functions(&admin, &["list"]);
    assert_eq!(listed["functions"][0]["name"], "kit");
    assert!(
        listed["functions"][0]["kept"].as_array().unwrap().len() >= 2,
        "{listed}"
    );

    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM drains: everything generated is delivered
    let (status, log) = stop_weir(running);
    assert!(status.success(), "{log}");
    let out = read_envelopes(&dir.path().join("out.jsonl"));
    assert!(read_envelopes(&dir.path().join("dlq.jsonl")).is_empty());
    let count = out.len() as u64;
    let mut seen = HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    let (mut by_v1, mut by_v2) = (0, 0);
    let mut phases = Vec::new();
    for e in &out {
        let v = value_of(e);
        let n = v["n"].as_u64().unwrap_or_else(|| panic!("{e}"));
        assert!(seen.insert(n), "event {n} delivered twice");
        let key = e["key"].as_str().unwrap().to_string();
        if let Some(prev) = last.insert(key.clone(), n) {
            assert!(prev < n, "key {key}: {n} after {prev}");
        }
        let version = if v["stage"] == 2 { 2 } else { 1 };
        if version == 2 {
            by_v2 += 1;
        } else {
            assert_eq!(e["headers"]["version"], "v1", "{e}");
            by_v1 += 1;
        }
        if phases.last() != Some(&version) {
            phases.push(version);
        }
    }
    assert_eq!(seen.len() as u64, count, "every event delivered once");
    assert!(seen.iter().all(|n| *n < count), "no gap in 0..{count}");
    assert!(by_v1 > 0 && by_v2 > 0, "v1 {by_v1}, v2 {by_v2}");
    assert_eq!(phases.first(), Some(&1));
    assert_eq!(phases.last(), Some(&1), "the rollback took effect");
}

#[test]
fn a_canary_gets_its_share_of_the_keys() {
    set_token();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(
        dir.path(),
        &admin,
        "rate = 20000\nkey_cardinality = 1000000\npayload = '{\"n\":{{seq}}}'",
        r#"{ tag = "v1", field = "stage", value = "2" }"#,
    );
    let running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    std::thread::sleep(Duration::from_millis(300));
    let v2 = guest("json-add-field");
    let started = functions(
        &admin,
        &[
            "canary",
            "kit",
            v2.to_str().unwrap(),
            "--share",
            "0.3",
            "--min-events",
            "100000000",
        ],
    );
    assert_eq!(started["canary"]["share"], 0.3, "{started}");
    std::thread::sleep(Duration::from_secs(3));
    let (status, log) = stop_weir(running);
    assert!(status.success(), "{log}");
    let out = read_envelopes(&dir.path().join("out.jsonl"));
    // among the events after the canary's first one (the split started there)
    let mut ordered: Vec<(u64, bool)> = out
        .iter()
        .map(|e| {
            let v = value_of(e);
            (v["n"].as_u64().unwrap(), v["stage"] == 2)
        })
        .collect();
    ordered.sort();
    let first = ordered
        .iter()
        .position(|(_, canary)| *canary)
        .expect("the canary ran");
    // the last half: every lane swaps between two batches, and a lane with
    // a backlog (a loaded machine) swaps after it, so the first moments
    // after the canary's first event under-count it
    let after = &ordered[first + (ordered.len() - first) / 2..];
    let share = after.iter().filter(|(_, c)| *c).count() as f64 / after.len() as f64;
    assert!(
        (share - 0.3).abs() <= 0.02,
        "canary share {share:.4} over {} events",
        after.len()
    );
}

#[test]
fn a_canary_that_fails_ten_percent_of_its_events_is_rolled_back_automatically() {
    set_token();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    // the stable version is `filter` (numbers have no field `kind`: all dropped,
    // no errors); the canary is `testkit` failing every 10th number
    let p = write(
        dir.path(),
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "canary"
shards = 2
[sources.gen]
type = "generator"
rate = 10000
key_cardinality = 1000000
payload = '{{{{seq}}}}'
batch = {{ max_events = 64, max_wait = "5ms" }}
[[steps]]
type = "wasm"
name = "kit"
module = "{}"
config = {{ field = "kind", equals = "a", fail_every = "10" }}
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
"#,
            guest("filter").display()
        ),
    );
    let running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    let canary = guest("testkit");
    let url = format!(
        "http://{admin}/api/v1/functions/kit/canary?share=0.5&min_events=300&check_every=200ms&max_error_rate_increase=0.05"
    );
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-H",
        "Content-Type: application/wasm",
        "--data-binary",
        &format!("@{}", canary.display()),
        &url,
    ]);
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let (_, body) = curl(&[&format!("http://{admin}/api/v1/functions/kit")]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if !v["last_canary"].is_null() {
            break v;
        }
        assert!(Instant::now() < deadline, "no verdict: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(last["last_canary"]["outcome"], "rolled back", "{last}");
    let reason = last["last_canary"]["reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    assert!(last["canary"].is_null());
    std::thread::sleep(Duration::from_millis(500));
    let (status, log) = stop_weir(running);
    assert!(status.success(), "{log}");
    assert!(log.contains("canary rolled back"), "{log}");
    // the stable filter drops every number; what the canary passed on it tagged
    let delivered = read_envelopes(&dir.path().join("out.jsonl"));
    assert!(delivered
        .iter()
        .all(|e| e["headers"]["version"] == "testkit"));
    // the canary's failures were dead-lettered, not lost; after the rollback
    // nothing fails any more
    let dead = read_envelopes(&dir.path().join("dlq.jsonl"));
    assert!(!dead.is_empty());
    assert!(dead.iter().all(|d| d["headers"]["weir.error"]
        .as_str()
        .unwrap()
        .contains("fails every 10th")));
    let after_rollback = dead.iter().filter(|d| {
        d["value"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n % 10 != 0)
    });
    assert_eq!(
        after_rollback.count(),
        0,
        "only every 10th number fails, and only in the canary"
    );
}

/// Waits until the function `kit` runs the component with `hash`.
fn wait_stable(admin: &str, hash: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = curl(&[&format!("http://{admin}/api/v1/functions/kit")]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["stable"]["hash"] == hash {
            return;
        }
        assert!(Instant::now() < deadline, "kit never ran {hash}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Runs `weir run [--watch]` on a generator → `kit` (module `kit.wasm`, a
/// copy of testkit) → blackhole pipeline in `dir`.
fn start_reloadable(dir: &Path, admin: &str, watch: bool) -> common::KillOnDrop {
    std::fs::copy(guest("testkit"), dir.join("kit.wasm")).unwrap();
    let p = write(
        dir,
        "p.toml",
        &format!(
            "[pipeline]\nname = \"reload\"\n[sources.gen]\ntype = \"generator\"\nrate = 1000\n[[steps]]\ntype = \"wasm\"\nname = \"kit\"\nmodule = \"kit.wasm\"\nconfig = {{ field = \"f\", value = \"1\" }}\n[sinks.out]\ntype = \"blackhole\"\n[admin]\nlisten = \"{admin}\"\n"
        ),
    );
    let mut command = weir();
    command.arg("run");
    if watch {
        command.arg("--watch");
    }
    let child = command
        .arg(&p)
        .current_dir(dir)
        .env("WEIR_LOG", "info")
        .stderr(std::fs::File::create(dir.join(format!("weir-{watch}.log"))).unwrap())
        .spawn()
        .unwrap();
    let child = common::KillOnDrop(child);
    wait_ready(admin);
    wait_stable(admin, &sha256(&guest("testkit")));
    child
}

/// Replaces `dir/kit.wasm` with `guest`'s component (by rename, as a deploy tool would).
fn replace_module(dir: &Path, guest_name: &str) {
    std::fs::copy(guest(guest_name), dir.join("next.wasm")).unwrap();
    std::fs::rename(dir.join("next.wasm"), dir.join("kit.wasm")).unwrap();
}

fn terminate(mut child: common::KillOnDrop, log: &Path) {
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("functions: deployed"), "{text}");
}

#[test]
fn sighup_deploys_a_changed_module_and_so_does_watch() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let child = start_reloadable(dir.path(), &admin, false);
    replace_module(dir.path(), "json-add-field");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, body) = curl(&[&format!("http://{admin}/api/v1/functions/kit")]);
    assert!(
        body.contains(&sha256(&guest("testkit"))),
        "no change before SIGHUP: {body}"
    );
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    wait_stable(&admin, &sha256(&guest("json-add-field")));
    terminate(child, &dir.path().join("weir-false.log"));

    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let child = start_reloadable(dir.path(), &admin, true);
    replace_module(dir.path(), "json-add-field");
    wait_stable(&admin, &sha256(&guest("json-add-field")));
    terminate(child, &dir.path().join("weir-true.log"));
}

/// `guest`'s component with a custom section appended: the same code, another hash.
fn another_build_of(guest_name: &str, dir: &Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(guest(guest_name)).unwrap();
    let name = b"weir-test";
    let payload = b"rebuilt";
    bytes.push(0); // custom section
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let path = dir.join(format!("{guest_name}-rebuilt.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A canary that behaves like the stable version is judged against a
/// control group of the same size (not the whole stable version, whose
/// larger sub-batches spread per-call costs thinner), so it is not rolled
/// back for latency, and is promoted when due.
#[test]
fn a_canary_as_good_as_the_stable_version_is_promoted_when_due() {
    set_token();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(
        dir.path(),
        &admin,
        "rate = 10000\nkey_cardinality = 1000000\npayload = '{\"n\":{{seq}}}'",
        r#"{ tag = "v1" }"#,
    );
    let running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    let same = another_build_of("testkit", dir.path());
    let started = functions(
        &admin,
        &[
            "canary",
            "kit",
            same.to_str().unwrap(),
            "--share",
            "0.05",
            "--promote-after",
            "3s",
            "--min-events",
            "300",
        ],
    );
    let canary_hash = started["canary"]["version"]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (_, body) = curl(&[&format!("http://{admin}/api/v1/functions/kit")]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if !v["last_canary"].is_null() {
            break v;
        }
        assert!(Instant::now() < deadline, "no verdict: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(v["last_canary"]["outcome"], "promoted", "{v}");
    assert_eq!(v["stable"]["hash"], canary_hash.as_str());
    assert!(
        v["last_canary"]["stats"]["stable"]["events"]
            .as_u64()
            .unwrap()
            >= 300,
        "{v}"
    );
    let (status, log) = stop_weir(running);
    assert!(status.success(), "{log}");
}
