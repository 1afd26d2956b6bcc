//! Baselines, measured in the same process run as weir:
//! - `channel`: one producer thread sending the same batches weir's generator
//!   makes through one bounded channel to a consumer that drops them;
//! - `json_map`: the generator's rendering and the `json-add-field` step's
//!   work in one plain loop on one thread, no engine;
//! - `jq_map`: the generator's rendering and a plain jaq loop (parse, run,
//!   serialize) on one thread.

use std::time::Instant;

use bytes::BytesMut;
use weir_config::ComponentConfig;
use weir_connectors::template::{Template, Vars, XorShift};
use weir_engine::{Event, StepContext, StepOutput};

use super::scenario::{JQ_EXPR, JSON_PAYLOAD, PASSTHROUGH_PAYLOAD};

const BATCH: usize = 1024;

/// Renders one batch of generator events, as the generator source does.
fn render_batch(
    template: &Template,
    rng: &mut XorShift,
    seq: &mut u64,
    n: usize,
    buf: &mut BytesMut,
) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    buf.reserve(n * template.max_len(0));
    for _ in 0..n {
        let vars = Vars {
            seq: *seq,
            partition: 0,
            key: b"",
            ts_ms: 0,
        };
        template.render(&vars, rng, buf);
        events.push(Event::new(buf.split().freeze()).with_offset(*seq));
        *seq += 1;
    }
    events
}

/// One thread sending batches through one bounded channel.
pub fn channel(events: u64) -> f64 {
    let template = Template::parse(PASSTHROUGH_PAYLOAD).expect("static template");
    let payload = template.fixed().cloned().expect("no placeholder");
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(16);
    let consumer = std::thread::spawn(move || rx.into_iter().map(|b| b.len() as u64).sum::<u64>());
    let started = Instant::now();
    let mut seq = 0u64;
    while seq < events {
        let n = (events - seq).min(BATCH as u64) as usize;
        let mut batch = Vec::with_capacity(n);
        for i in 0..n as u64 {
            batch.push(Event::new(payload.clone()).with_offset(seq + i));
        }
        seq += n as u64;
        if tx.send(batch).is_err() {
            break;
        }
    }
    drop(tx);
    let received = consumer.join().unwrap_or(0);
    received as f64 / started.elapsed().as_secs_f64()
}

/// The json-map work in a plain loop: render, run the step, drop the output.
pub fn json_map(events: u64) -> f64 {
    let registry = crate::registry();
    let config = ComponentConfig::from_toml(
        "json-add-field",
        "json-add-field",
        "field = \"seen\"\nvalue = true\n",
    )
    .expect("static options");
    let factory = registry
        .build_step(&config, &mut StepContext::new(&[]))
        .expect("json-add-field is registered");
    let mut step = factory.build().expect("step builds");
    let template = Template::parse(JSON_PAYLOAD).expect("static template");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut rng = XorShift::new(XorShift::SEED);
        let mut buf = BytesMut::new();
        let mut out = StepOutput::new();
        let mut seq = 0u64;
        let started = Instant::now();
        while seq < events {
            let n = (events - seq).min(BATCH as u64) as usize;
            let mut batch = render_batch(&template, &mut rng, &mut seq, n, &mut buf);
            out.clear();
            step.process(&mut batch, &mut out).await;
            std::hint::black_box(&out.events);
        }
        events as f64 / started.elapsed().as_secs_f64()
    })
}

/// A plain jaq loop: render, parse, run `select(.amount > 100) | .flag = true`, serialize.
pub fn jq_map(events: u64) -> f64 {
    let program = weir_functions::jq::compile(JQ_EXPR).expect("static program");
    let template = Template::parse(JSON_PAYLOAD).expect("static template");
    let mut rng = XorShift::new(XorShift::SEED);
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut seq = 0u64;
    let mut kept = 0u64;
    let started = Instant::now();
    while seq < events {
        let n = (events - seq).min(BATCH as u64) as usize;
        let batch = render_batch(&template, &mut rng, &mut seq, n, &mut buf);
        for e in &batch {
            let Ok(val) = weir_functions::jq::parse_json(&e.value) else {
                continue;
            };
            for v in program.run(val).flatten() {
                weir_functions::jq::write_json(&v, &mut out);
                std::hint::black_box(out.split().freeze());
                kept += 1;
            }
        }
    }
    std::hint::black_box(kept);
    events as f64 / started.elapsed().as_secs_f64()
}
