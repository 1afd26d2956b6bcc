//! Runs every `fixtures/*.toml` through `parse_str` and compares the
//! diagnostics with the sibling `*.expected` file (`ok` for a valid file).
//! Set `WEIR_BLESS=1` to rewrite the expected files from the current output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use weir_config::{parse_str, Ordering, PipelineConfig};

/// The environment every fixture sees.
fn env(name: &str) -> Option<String> {
    let value = match name {
        "LONG" => "a-replacement-much-longer-than-its-reference",
        "EMPTY" => "",
        "DIR" => "/var/lib/weir",
        "PORT" => "9898",
        _ => return None,
    };
    Some(value.to_string())
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Parses a fixture, using its file name as the path in messages.
fn parse_fixture(name: &str) -> Result<PipelineConfig, weir_config::Diagnostics> {
    let text = std::fs::read_to_string(fixtures_dir().join(name)).expect("fixture is readable");
    parse_str(&text, Path::new(name), &env)
}

#[test]
fn fixtures_match_expected_diagnostics() {
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "fixtures missing: {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let actual = match parse_fixture(name) {
            Ok(_) => "ok".to_string(),
            Err(diagnostics) => diagnostics.to_string(),
        };
        let expected_path = fixtures_dir().join(name.replace(".toml", ".expected"));
        if bless {
            std::fs::write(&expected_path, format!("{actual}\n")).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected.trim_end() != actual {
            failures.push(format!(
                "{name}\n--- expected\n{}\n--- actual\n{actual}\n",
                expected.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct GeneratorOptions {
    count: u64,
    payload: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct JqOptions {
    filter: String,
}

#[test]
fn valid_full_file_is_typed() {
    let config = parse_fixture("valid_full.toml").expect("valid");
    assert_eq!(config.path, Path::new("valid_full.toml"));
    assert_eq!(config.pipeline.name, "quickstart");
    assert_eq!(config.pipeline.shards, Some(2));
    assert_eq!(config.pipeline.ordering, Ordering::Key);
    assert_eq!(config.pipeline.max_inflight, 8);

    let names = |components: &[weir_config::ComponentConfig]| {
        components
            .iter()
            .map(|c| format!("{}:{}", c.name, c.kind))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&config.sources), ["gen:generator", "other:stdin"]);
    assert_eq!(names(&config.steps), ["jq-0:jq", "enrich:jq"]);
    assert_eq!(names(&config.sinks), ["out:stdout", "dlq:file"]);

    let gen = &config.sources[0];
    assert_eq!(gen.batch.max_events, 100);
    assert_eq!(gen.batch.max_bytes, 65536);
    assert_eq!(gen.batch.max_wait, Duration::from_micros(1500));
    assert_eq!(
        gen.options::<GeneratorOptions>().expect("options"),
        GeneratorOptions {
            count: 1000,
            payload: "hello".to_string()
        }
    );
    assert_eq!(gen.location().to_string(), "valid_full.toml:8:1");
    assert_eq!(gen.type_location().to_string(), "valid_full.toml:9:8");
    assert_eq!(
        config.sources[1].batch,
        weir_config::BatchSettings::default()
    );
    assert_eq!(
        config.steps[1]
            .options::<JqOptions>()
            .expect("step options drop name"),
        JqOptions {
            filter: ".b".to_string()
        }
    );
    assert_eq!(
        config.steps[1].location().to_string(),
        "valid_full.toml:21:1"
    );

    assert_eq!(config.queues.inbox_max_events, 100);
    assert_eq!(config.queues.inbox_max_bytes, 200);
    assert_eq!(config.queues.sink_max_events, 300);
    assert_eq!(config.queues.sink_max_bytes, 400);
    assert_eq!(config.checkpoint.interval, Duration::from_millis(250));
    assert_eq!(
        config.checkpoint.dir,
        Path::new("/var/lib/weir/checkpoints")
    );
    let dead_letter = config.dead_letter.as_ref().expect("dead letter");
    assert_eq!(dead_letter.sink, "dlq");
    assert_eq!(
        dead_letter.location().map(ToString::to_string).as_deref(),
        Some("valid_full.toml:44:8")
    );
    assert_eq!(config.retry.max_attempts, 5);
    assert_eq!(config.retry.initial_backoff, Duration::from_millis(1));
    assert_eq!(config.retry.max_backoff, Duration::from_secs(120));
    assert_eq!(config.retry.max_age, Duration::from_secs(3600));
    assert_eq!(config.shutdown.timeout, Duration::from_secs(10));
    assert_eq!(config.admin.listen.as_deref(), Some("127.0.0.1:9898"));
}

#[test]
fn minimal_file_gets_defaults() {
    let config = parse_fixture("minimal.toml").expect("valid");
    let defaults = PipelineConfig::new_in_code(Vec::new(), Vec::new(), Vec::new());
    assert_eq!(config.pipeline, defaults.pipeline);
    assert_eq!(config.pipeline.name, "weir");
    assert_eq!(config.pipeline.shards, None);
    assert_eq!(config.pipeline.ordering, Ordering::Partition);
    assert_eq!(config.pipeline.max_inflight, 4);
    assert_eq!(config.queues, defaults.queues);
    assert_eq!(config.queues.inbox_max_bytes, 8 * 1024 * 1024);
    assert_eq!(config.checkpoint.interval, Duration::from_secs(1));
    assert_eq!(config.checkpoint.dir, Path::new(".weir/checkpoints"));
    assert!(config.dead_letter.is_none());
    assert_eq!(config.retry.max_attempts, 3);
    assert_eq!(config.retry.initial_backoff, Duration::from_millis(10));
    assert_eq!(config.retry.max_backoff, Duration::from_secs(1));
    assert_eq!(config.retry.max_age, Duration::from_secs(30));
    assert_eq!(config.shutdown.timeout, Duration::from_secs(30));
    assert_eq!(config.admin.listen, None);
    let batch = &config.sources[0].batch;
    assert_eq!(
        (batch.max_events, batch.max_bytes, batch.max_wait),
        (1024, 1024 * 1024, Duration::from_millis(5))
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct KafkaOptions {
    topic: String,
    #[serde(default)]
    group: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Wrapped {
    settings: KafkaOptions,
}

/// Parses `components` (sources, sinks) after a fixed preamble.
fn parse_with_sink(components: &str) -> PipelineConfig {
    let text = format!("[sinks.out]\ntype = \"${{LONG}}\"\n\n{components}");
    parse_str(&text, Path::new("opts.toml"), &env).expect("valid")
}

#[test]
fn options_errors_point_at_the_unknown_key() {
    // later line than an expansion that made the text longer
    let config =
        parse_with_sink("[sources.in]\ntype = \"kafka\"\ngroup = \"${LONG}\"\ntopics = \"t\"\n");
    let source = &config.sources[0];
    assert_eq!(source.location().to_string(), "opts.toml:4:1");
    assert_eq!(source.type_location().to_string(), "opts.toml:5:8");
    let err = source.options::<KafkaOptions>().expect_err("unknown key");
    assert_eq!(
        err.to_string(),
        "error: opts.toml:7:1: `sources.in`: unknown field `topics`, expected `topic` or `group`; did you mean `topic`?"
    );
    assert_eq!(
        source.option_error("group", "bad group").to_string(),
        "error: opts.toml:6:9: bad group"
    );
    assert_eq!(config.sinks[0].type_location().to_string(), "opts.toml:2:8");
    assert_eq!(
        config.sinks[0].kind,
        "a-replacement-much-longer-than-its-reference"
    );

    // same line, after the expansion
    let config = parse_with_sink(
        "[sources.in]\ntype = \"kafka\"\nsettings = { group = \"${LONG}\", topics = 1 }\n",
    );
    let err = config.sources[0]
        .options::<Wrapped>()
        .expect_err("unknown key");
    assert_eq!(
        err.to_string(),
        "error: opts.toml:6:33: `sources.in.settings`: unknown field `topics`, expected `topic` or `group`; did you mean `topic`?"
    );

    // a missing option is reported at the component's table
    let config = parse_with_sink("[sources.in]\ntype = \"kafka\"\n");
    let err = config.sources[0]
        .options::<KafkaOptions>()
        .expect_err("missing");
    assert_eq!(
        err.to_string(),
        "error: opts.toml:4:1: `sources.in`: missing field `topic`"
    );

    // a bad value in a step, whose `name` is not an option
    let config = parse_with_sink(
        "[sources.in]\ntype = \"kafka\"\n\n[[steps]]\ntype = \"jq\"\nname = \"x\"\ntopic = 5\n",
    );
    let err = config.steps[0]
        .options::<KafkaOptions>()
        .expect_err("bad type");
    assert_eq!(
        err.to_string(),
        "error: opts.toml:10:9: `steps[0].topic`: invalid type: integer `5`, expected a string"
    );
}
