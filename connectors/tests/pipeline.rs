//! The connectors inside a real pipeline: a file replayed into a file sink
//! resumes from its checkpoint; a generator feeds a blackhole.

use std::path::Path;

use weir_engine::{shutdown_channel, Pipeline, Registry};

fn registry() -> Registry {
    let mut registry = Registry::new();
    weir_connectors::register(&mut registry);
    registry
}

async fn run(toml: &str) {
    let config = weir_config::parse_str(toml, Path::new("test.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let pipeline = Pipeline::build(&config, &registry()).unwrap_or_else(|e| panic!("{e}"));
    let (trigger, _signal) = shutdown_channel();
    let run = tokio::time::timeout(std::time::Duration::from_secs(30), pipeline.run(trigger)).await;
    run.expect("the pipeline ends by itself")
        .expect("the pipeline succeeds");
}

fn config(dir: &Path) -> String {
    let p = |name: &str| dir.join(name).display().to_string().replace('\\', "/");
    format!(
        r#"
[pipeline]
name = "replay"
shards = 2

[checkpoint]
dir = "{cp}"
interval = "10ms"

[sources.input]
type = "file"
path = "{input}"
format = "json"
batch = {{ max_events = 3 }}

[sinks.output]
type = "file"
path = "{output}"
format = "envelope"
"#,
        cp = p("cp"),
        input = p("in.jsonl"),
        output = p("out/out.jsonl"),
    )
}

fn output_ids(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("out/out.jsonl")).unwrap();
    let mut ids: Vec<u64> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["value"]["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_to_file_resumes_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..10).map(|i| format!("{{\"id\":{i}}}\n\n")).collect();
    std::fs::write(dir.path().join("in.jsonl"), lines).unwrap();
    run(&config(dir.path())).await;
    assert_eq!(output_ids(dir.path()), (0..10).collect::<Vec<_>>());

    let more: String = (10..15).map(|i| format!("{{\"id\":{i}}}\r\n")).collect();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("in.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut file, more.as_bytes()).unwrap();
    run(&config(dir.path())).await;
    assert_eq!(
        output_ids(dir.path()),
        (0..15).collect::<Vec<_>>(),
        "only the new lines are read again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_into_blackhole_ends_after_count() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[pipeline]
shards = 2

[checkpoint]
dir = "{}"

[sources.gen]
type = "generator"
count = 100000
key_cardinality = 10

[sinks.null]
type = "blackhole"
"#,
        dir.path().display().to_string().replace('\\', "/")
    );
    run(&toml).await;
}
