//! Secrets stay out of what weir shows: every connector that takes a
//! credential is given one (a password in a URL, a token in a query, a
//! SASL password, a bearer token) against an endpoint that fails, and the
//! credential must appear nowhere in the log, the errors, the admin API or
//! the dead letters.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::admin::curl;
use common::http::free_port;
use common::{start_weir, stop_weir, write};

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

/// Runs `pipeline` in `dir` for at most `time` (it may exit on its own),
/// reading the admin API while it runs; returns everything weir showed.
fn everything_shown(dir: &Path, name: &str, body: &str, time: Duration) -> String {
    let admin = format!("127.0.0.1:{}", free_port());
    let p = write(
        dir,
        &format!("{name}.toml"),
        &format!("[pipeline]\nname = \"{name}\"\n{body}\n[admin]\nlisten = \"{admin}\"\n"),
    );
    let mut running = start_weir(dir, &p);
    let mut shown = String::new();
    let started = Instant::now();
    let mut read_api = false;
    while started.elapsed() < time {
        if running.child.0.try_wait().unwrap().is_some() {
            break;
        }
        if !read_api {
            let (status, body) = curl(&[&format!("http://{admin}/api/pipeline")]);
            if status == 200 {
                shown += &body;
                shown += &curl(&[&format!("http://{admin}/api/v1/pipeline")]).1;
                shown += &curl(&[&format!("http://{admin}/metrics")]).1;
                read_api = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let exited = running.child.0.try_wait().unwrap().is_some();
    let log = if exited {
        running.log()
    } else {
        stop_weir(running).1
    };
    shown += &log;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".jsonl") {
            shown += &std::fs::read_to_string(entry.path()).unwrap_or_default();
        }
    }
    shown
}

fn assert_hidden(shown: &str, secret: &str, what: &str) {
    assert!(
        !shown.contains(secret),
        "{what}: the secret {secret:?} was shown:\n{shown}"
    );
}

#[test]
fn no_connector_shows_a_credential_in_logs_errors_the_api_or_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = closed_port();
    let generator = "[sources.gen]\ntype = \"generator\"\nrate = 50\n";

    // postgres-cdc and the postgres sink: the password of the URL
    let shown = everything_shown(
        d,
        "pg-source",
        &format!(
            "[sources.pg]\ntype = \"postgres-cdc\"\nurl = \"postgres://weir:pg-SECRET-1@127.0.0.1:{port}/db?connect_timeout=2\"\n\
             publication = \"p\"\nslot = \"s\"\n[sinks.out]\ntype = \"blackhole\"\n"
        ),
        Duration::from_secs(10),
    );
    assert!(
        shown.contains("(postgres://weir@127.0.0.1"),
        "the error names the server and the user:\n{shown}"
    );
    assert_hidden(&shown, "pg-SECRET-1", "postgres-cdc");
    let shown = everything_shown(
        d,
        "pg-sink",
        &format!(
            "{generator}[sinks.out]\ntype = \"postgres\"\nurl = \"postgres://weir:pg-SECRET-2@127.0.0.1:{port}/db?connect_timeout=2\"\n\
             table = \"t\"\n"
        ),
        Duration::from_secs(10),
    );
    assert_hidden(&shown, "pg-SECRET-2", "postgres sink");

    // nats and jetstream: a password and a token in the URL
    for (kind, extra) in [
        ("nats", "subjects = [\"a\"]"),
        ("jetstream", "stream = \"S\"\nconsumer = \"c\""),
    ] {
        let shown = everything_shown(
            d,
            &format!("{kind}-source"),
            &format!(
                "[sources.in]\ntype = \"{kind}\"\nurl = \"nats://weir:nats-SECRET@127.0.0.1:{port}\"\n\
                 connect_timeout = \"1s\"\n{extra}\n[sinks.out]\ntype = \"blackhole\"\n"
            ),
            Duration::from_secs(10),
        );
        assert!(shown.contains("cannot connect"), "{shown}");
        assert_hidden(&shown, "nats-SECRET", kind);
    }

    // the http sink: userinfo, a query token and a bearer token; the
    // failure reason goes into the dead letters
    std::env::set_var("WEIR_TEST_HOOK_TOKEN", "bearer-SECRET");
    let shown = everything_shown(
        d,
        "http-sink",
        &format!(
            "{generator}[sinks.out]\ntype = \"http\"\n\
             url = \"http://weir:http-SECRET@127.0.0.1:{port}/hook?token=query-SECRET\"\n\
             bearer_token_env = \"WEIR_TEST_HOOK_TOKEN\"\nretries = 0\n\
             [sinks.dlq]\ntype = \"file\"\npath = \"dlq.jsonl\"\nformat = \"envelope\"\n\
             [dead_letter]\nsink = \"dlq\"\n[retry]\nmax_attempts = 1\n"
        ),
        Duration::from_secs(4),
    );
    assert!(
        shown.contains("weir.error"),
        "the failures reached the dead letters:\n{shown}"
    );
    for secret in ["http-SECRET", "query-SECRET", "bearer-SECRET"] {
        assert_hidden(&shown, secret, "http sink");
    }

    // kafka source and sink: a SASL password in the librdkafka options
    let sasl =
        "options = { \"security.protocol\" = \"sasl_plaintext\", \"sasl.mechanisms\" = \"PLAIN\", \
                \"sasl.username\" = \"weir\", \"sasl.password\" = \"kafka-SECRET\" }";
    let shown = everything_shown(
        d,
        "kafka",
        &format!(
            "[sources.in]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:{port}\"\ntopics = [\"t\"]\ngroup = \"g\"\n{sasl}\n\
             [sinks.out]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:{port}\"\ntopic = \"o\"\n{sasl}\n"
        ),
        Duration::from_secs(4),
    );
    assert!(
        shown.contains("\"type\":\"kafka\""),
        "the admin API was read:\n{shown}"
    );
    assert_hidden(&shown, "kafka-SECRET", "kafka");

    // configuration errors quote where, not the secret
    let p = write(
        d,
        "bad.toml",
        &format!(
            "[pipeline]\nname = \"bad\"\n[sources.pg]\ntype = \"postgres-cdc\"\n\
             url = \"postgres://weir:cfg-SECRET@127.0.0.1:{port}/db?sslmode=sometimes\"\n\
             publication = \"p\"\nslot = \"s\"\n[sinks.out]\ntype = \"blackhole\"\n"
        ),
    );
    let out = common::run_in(d, &["validate", p.to_str().unwrap()]);
    let text = common::show(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("bad.toml:5"), "{text}");
    assert_hidden(&text, "cfg-SECRET", "weir validate");
}
