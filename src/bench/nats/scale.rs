//! `weir bench jetstream-scale`: scale-out on one JetStream durable pull
//! consumer. The same preloaded stream is read by 1, then 2, then 3
//! `weir run` processes of one pipeline file (jetstream → json-add-field →
//! blackhole), each time with a fresh durable consumer that the processes
//! share (the server hands each message to one of them). A run is timed by
//! the consumer's ack floor: from its first move to the moment it covers
//! every event; start to end, with process start, is reported beside it.
//! The baseline is the single process.

use async_nats::jetstream;

use crate::bench::processes::{run_processes, scale_report, ProcessRun};
use crate::bench::report::BenchReport;

/// Runs the scenario on `stream`, which holds `events` events from
/// sequence 1.
pub(super) fn run(
    rt: &tokio::runtime::Runtime,
    url: &str,
    stream: &str,
    events: u64,
) -> Result<BenchReport, String> {
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("weir-bench-js-scale-{id}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let client = rt
        .block_on(async_nats::connect(url))
        .map_err(|e| e.to_string())?;
    // the context starts a task: inside the runtime
    let js = {
        let _inside = rt.enter();
        jetstream::new(client)
    };
    let mut runs: Vec<ProcessRun> = Vec::new();
    for processes in 1..=3 {
        eprintln!("jetstream-scale: {processes} process(es)…");
        let consumer = format!("scale-{processes}");
        let file = dir.join(format!("{consumer}.toml"));
        std::fs::write(
            &file,
            format!(
                "[pipeline]\nname = \"js-{consumer}\"\n[sources.in]\ntype = \"jetstream\"\n\
                 url = \"{url}\"\nstream = \"{stream}\"\nconsumer = \"{consumer}\"\n\
                 [[steps]]\ntype = \"json-add-field\"\nname = \"add\"\nfield = \"seen\"\n\
                 value = true\n[sinks.out]\ntype = \"blackhole\"\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        runs.push(run_processes(&dir, &file, processes, events, || {
            ack_floor(rt, &js, stream, &consumer)
        })?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(scale_report(
        "jetstream-scale",
        events,
        &runs,
        "one weir process of the same pipeline file, from the ack floor's first move to the last",
        "events_per_sec: from the consumer's ack floor first moving to it covering every event (3 processes); start_to_end includes startup",
    ))
}

/// The stream sequence below which the consumer acknowledged everything:
/// the events done (the stream starts at 1); 0 while the consumer does not
/// exist yet.
fn ack_floor(
    rt: &tokio::runtime::Runtime,
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> i64 {
    rt.block_on(async {
        let Ok(s) = js.get_stream(stream).await else {
            return 0;
        };
        let Ok(mut c) = s
            .get_consumer::<jetstream::consumer::pull::Config>(consumer)
            .await
        else {
            return 0;
        };
        match c.info().await {
            Ok(info) => info.ack_floor.stream_sequence as i64,
            Err(_) => 0,
        }
    })
}
