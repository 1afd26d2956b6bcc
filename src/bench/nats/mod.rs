//! The NATS scenarios of `weir bench`:
//!
//! - `jetstream`: a stream preloaded with ~100-byte events, read by weir
//!   (`jetstream` source, durable pull consumer, explicit acks after
//!   delivery) into a counting sink, against a raw async-nats pull consumer
//!   reading the same stream with the same ack policy (explicit, one ack
//!   per message).
//! - `nats`: core NATS: a publisher sends events as fast as it can while
//!   weir (`nats` source) counts them, against a raw async-nats subscriber
//!   counting the same publisher's events.
//!
//! - `jetstream-scale`: the same stream read by 1, 2 and 3 `weir run`
//!   processes sharing one durable consumer (see `scale.rs`).
//!
//! The first two time from the first event to the last.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::json;

use super::count_sink;
use super::dev_server::{DevScript, DevServer};
use super::kafka::{cpu_seconds, ns_per_event, run_until_counted, run_weir};
use super::report::{Baseline, BenchReport};
use super::BenchArgs;

/// Names of the NATS scenarios.
pub const SCENARIOS: &[&str] = &["jetstream", "nats", "jetstream-scale"];

mod scale;

/// The nats-server dev script.
static SCRIPT: DevScript = DevScript {
    what: "a nats-server",
    name: "nats-dev.sh",
    text: include_str!("../../../scripts/nats-dev.sh"),
    key: "NATS_URL",
    stop_args: &[],
};

fn payload(i: u64) -> bytes::Bytes {
    format!(
        r#"{{"id":{i:>10},"user":"user-{:03}","amount":{:>5},"currency":"EUR","ok":true,"pad":"0123456789"}}"#,
        i % 1000,
        i % 200
    )
    .into()
}

/// Runs a NATS scenario.
pub fn run(name: &str, args: &BenchArgs) -> Result<BenchReport, String> {
    let shards = args
        .shards
        .unwrap_or_else(|| weir_engine::shard::available_cores().len())
        .max(1);
    crate::observability::init_metrics();
    let server = DevServer::get(args.url.as_deref(), &SCRIPT)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match name {
        "jetstream" => jetstream(
            &rt,
            &server.address,
            args.events.unwrap_or(1_000_000),
            shards,
        ),
        "jetstream-scale" => {
            let events = args.events.unwrap_or(2_000_000);
            let id = std::process::id();
            let (stream, subject) = (format!("BENCHSCALE{id}"), format!("bench.{id}.scale"));
            eprintln!("jetstream-scale: preloading {events} events into stream {stream}…");
            preload(&rt, &server.address, &stream, &subject, events)?;
            scale::run(&rt, &server.address, &stream, events)
        }
        _ => core(&rt, &server.address, args.events.unwrap_or(500_000), shards),
    }
}

fn jetstream(
    rt: &tokio::runtime::Runtime,
    url: &str,
    events: u64,
    shards: usize,
) -> Result<BenchReport, String> {
    let stream = format!("BENCH{}", std::process::id());
    let subject = format!("bench.{}.in", std::process::id());
    eprintln!("jetstream: preloading {events} events into stream {stream}…");
    preload(rt, url, &stream, &subject, events)?;

    eprintln!("jetstream: baseline (raw async-nats pull consumer, explicit acks)…");
    let cpu = cpu_seconds();
    let baseline = rt.block_on(async {
        let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
        let js = jetstream::new(client.clone());
        let s = js.get_stream(&stream).await.map_err(|e| e.to_string())?;
        let c: jetstream::consumer::PullConsumer = s
            .create_consumer(consumer::pull::Config {
                durable_name: Some("raw".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = c
            .stream()
            .max_messages_per_batch(1024)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0u64;
        let mut first = None;
        while n < events {
            match messages.next().await {
                Some(Ok(m)) => {
                    first.get_or_insert_with(Instant::now);
                    if let Some(reply) = m.message.reply.clone() {
                        client
                            .publish(reply, bytes::Bytes::from_static(b"+ACK"))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    n += 1;
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("raw consumer stream ended".into()),
            }
        }
        client.flush().await.map_err(|e| e.to_string())?;
        Ok::<f64, String>(events as f64 / first.map_or(1.0, |t: Instant| t.elapsed().as_secs_f64()))
    })?;
    let baseline_cpu = cpu_seconds() - cpu;

    eprintln!("jetstream: weir (jetstream → blackhole)…");
    let config = count_sink::pipeline_to_count(
        "bench-nats",
        "jetstream",
        &format!("url = \"{url}\"\nstream = \"{stream}\"\nconsumer = \"weir\"\n"),
        shards,
    )?;
    let (run, weir_cpu) = run_until_counted(&config, events)?;
    Ok(run.report(
        "jetstream",
        events,
        run.seconds,
        Baseline {
            name: "raw async-nats pull consumer, one explicit ack per message, same stream".into(),
            events_per_sec: baseline,
        },
        shards,
        (
            ns_per_event(weir_cpu, events),
            ns_per_event(baseline_cpu, events),
        ),
    ))
}

/// Creates `stream` on `subject` and publishes `events` events to it,
/// each acknowledged by the server.
fn preload(
    rt: &tokio::runtime::Runtime,
    url: &str,
    stream: &str,
    subject: &str,
    events: u64,
) -> Result<(), String> {
    rt.block_on(async {
        let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
        let js = jetstream::new(client);
        js.create_stream(jetstream::stream::Config {
            name: stream.to_string(),
            subjects: vec![subject.to_string()],
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut acks = Vec::with_capacity(1024);
        for i in 0..events {
            acks.push(
                js.publish(subject.to_string(), payload(i))
                    .await
                    .map_err(|e| e.to_string())?,
            );
            if acks.len() == 1024 {
                for a in acks.drain(..) {
                    a.await.map_err(|e| e.to_string())?;
                }
            }
        }
        for a in acks {
            a.await.map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })
}

/// Publishes `events` to `subject` as fast as the client takes them.
async fn publish_all(url: &str, subject: &str, events: u64) -> Result<(), String> {
    let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    for i in 0..events {
        client
            .publish(subject.to_string(), payload(i))
            .await
            .map_err(|e| e.to_string())?;
    }
    client.flush().await.map_err(|e| e.to_string())
}

fn core(
    rt: &tokio::runtime::Runtime,
    url: &str,
    events: u64,
    shards: usize,
) -> Result<BenchReport, String> {
    let subject = format!("bench.{}.core", std::process::id());
    eprintln!("nats: baseline (raw async-nats subscriber counting)…");
    let cpu = cpu_seconds();
    let (baseline, baseline_got) = rt.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .subscription_capacity(65_536)
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let mut sub = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| e.to_string())?;
        client.flush().await.map_err(|e| e.to_string())?;
        let publisher = tokio::spawn({
            let (url, subject) = (url.to_string(), subject.clone());
            async move { publish_all(&url, &subject, events).await }
        });
        let mut n = 0u64;
        let mut first = None;
        let mut last = Instant::now();
        while n < events {
            match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
                Ok(Some(_)) => {
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                    n += 1;
                }
                _ => break, // the rest was dropped (slow consumer)
            }
        }
        publisher.await.map_err(|e| e.to_string())??;
        let secs = first.map_or(1.0, |t: Instant| last.duration_since(t).as_secs_f64());
        Ok::<(f64, u64), String>((n as f64 / secs, n))
    })?;
    let baseline_cpu = cpu_seconds() - cpu;

    eprintln!("nats: weir (nats → blackhole)…");
    let config = count_sink::pipeline_to_count(
        "bench-nats",
        "nats",
        &format!("url = \"{url}\"\nsubjects = [\"{subject}\"]\n"),
        shards,
    )?;
    let start = count_sink::COUNTED.load(Ordering::Relaxed);
    let cpu = cpu_seconds();
    let mut first: Option<Instant> = None;
    let mut last_change = (0u64, Instant::now());
    let mut publisher: Option<std::thread::JoinHandle<Result<(), String>>> = None;
    let started = Instant::now();
    let run = run_weir(&config, || {
        // give the source a moment to subscribe, then publish
        if publisher.is_none() && started.elapsed() > Duration::from_secs(1) {
            let (url, subject) = (url.to_string(), subject.clone());
            publisher = Some(std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(publish_all(&url, &subject, events))
            }));
        }
        let n = count_sink::COUNTED.load(Ordering::Relaxed) - start;
        if n > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if n != last_change.0 {
            last_change = (n, Instant::now());
        }
        let stalled = n > 0 && last_change.1.elapsed() > Duration::from_secs(2);
        (n >= events || stalled).then_some(first).flatten()
    })?;
    let weir_cpu = cpu_seconds() - cpu;
    if let Some(p) = publisher {
        p.join().map_err(|_| "publisher panicked".to_string())??;
    }
    let got = count_sink::COUNTED.load(Ordering::Relaxed) - start;
    // a stalled run waited 2 s after its last event
    let seconds = if got < events {
        (run.seconds - 2.0).max(1e-3)
    } else {
        run.seconds
    };
    let mut report = run.report(
        "nats",
        got,
        seconds,
        Baseline {
            name: "raw async-nats subscriber counting the same publisher's events".into(),
            events_per_sec: baseline,
        },
        shards,
        (
            ns_per_event(weir_cpu, got),
            ns_per_event(baseline_cpu, baseline_got),
        ),
    );
    report.extra.insert("received".into(), json!(got));
    report
        .extra
        .insert("baseline_received".into(), json!(baseline_got));
    Ok(report)
}
