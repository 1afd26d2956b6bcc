//! The `cdc` scenario of `weir bench`: rows inserted into a published
//! table are read from a logical replication slot by weir (`postgres-cdc`
//! source → counting sink) and, as the baseline, by a raw loop over the
//! same kind of replication stream (another slot with the same changes)
//! that only reads and decodes pgoutput into the same JSON events, with no
//! engine. Both time from the first change to the last.

use std::time::Instant;

use bytes::Buf;
use weir_connectors::postgres::conninfo::ConnInfo;
use weir_connectors::postgres::pgoutput::{Decoded, Decoder};
use weir_connectors::postgres::wire::{Connection, CopyMessage};

use super::count_sink;
use super::dev_server::{DevScript, DevServer};
use super::kafka::{cpu_seconds, ns_per_event, run_until_counted};
use super::report::{Baseline, BenchReport};
use super::BenchArgs;

/// Names of the Postgres scenarios.
pub const SCENARIOS: &[&str] = &["cdc"];

/// The Postgres dev cluster script.
static SCRIPT: DevScript = DevScript {
    what: "a Postgres cluster",
    name: "pg-dev.sh",
    text: include_str!("../../scripts/pg-dev.sh"),
    key: "PG_URL",
    stop_args: &["--mode", "immediate"],
};

/// Runs the `cdc` scenario.
pub fn run(_name: &str, args: &BenchArgs) -> Result<BenchReport, String> {
    let shards = args
        .shards
        .unwrap_or_else(|| weir_engine::shard::available_cores().len())
        .max(1);
    let events = args.events.unwrap_or(1_000_000);
    crate::observability::init_metrics();
    let server = DevServer::get(args.url.as_deref(), &SCRIPT)?;
    let info = ConnInfo::parse(&server.address)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let tag = std::process::id();
    let (table, publication) = (format!("weir_bench_{tag}"), format!("weir_bench_{tag}"));
    let (raw_slot, weir_slot) = (format!("weir_bench_raw_{tag}"), format!("weir_bench_{tag}"));
    eprintln!("cdc: inserting {events} rows into {table} (two slots record them)…");
    rt.block_on(async {
        let mut c = Connection::connect(&info, false).await.map_err(|e| e.to_string())?;
        let setup = format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, user_id int, amount numeric(10,2), \
             currency text, created timestamptz); \
             CREATE PUBLICATION {publication} FOR TABLE {table}"
        );
        c.query(&setup).await.map_err(|e| e.to_string())?;
        for slot in [&raw_slot, &weir_slot] {
            c.query(&format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"))
                .await
                .map_err(|e| e.to_string())?;
        }
        let chunk = 10_000u64;
        let mut from = 1u64;
        while from <= events {
            let to = (from + chunk - 1).min(events);
            c.query(&format!(
                "INSERT INTO {table} SELECT g, g % 1000, (g % 20000) / 100.0, 'EUR', \
                 '2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series({from}, {to}) g"
            ))
            .await
            .map_err(|e| e.to_string())?;
            from = to + 1;
        }
        Ok::<(), String>(())
    })?;

    let measured = measure(
        &rt,
        &info,
        &server.address,
        &publication,
        &raw_slot,
        &weir_slot,
        events,
        shards,
    );
    if !server.is_owned() {
        // on success or failure: a slot left behind keeps WAL forever
        let dropped = rt.block_on(async {
            let mut c = Connection::connect(&info, false)
                .await
                .map_err(|e| e.to_string())?;
            c.query(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name IN ('{raw_slot}', '{weir_slot}'); \
                 DROP PUBLICATION IF EXISTS {publication}; DROP TABLE IF EXISTS {table}"
            ))
            .await
            .map_err(|e| e.to_string())
        });
        if let Err(e) = dropped {
            eprintln!("cdc: could not drop the bench's slots {raw_slot}, {weir_slot}: {e}; drop them by hand");
        }
    }
    measured
}

/// Runs the baseline and weir over their slots.
#[allow(clippy::too_many_arguments)]
fn measure(
    rt: &tokio::runtime::Runtime,
    info: &ConnInfo,
    url: &str,
    publication: &str,
    raw_slot: &str,
    weir_slot: &str,
    events: u64,
    shards: usize,
) -> Result<BenchReport, String> {
    eprintln!("cdc: baseline (raw replication loop decoding pgoutput)…");
    let cpu = cpu_seconds();
    let baseline = rt.block_on(raw_loop(info, raw_slot, publication, events))?;
    let baseline_cpu = cpu_seconds() - cpu;

    eprintln!("cdc: weir (postgres-cdc → blackhole)…");
    let config = count_sink::pipeline_to_count(
        "bench-cdc",
        "postgres-cdc",
        &format!(
            "url = \"{url}\"\npublication = \"{publication}\"\nslot = \"{weir_slot}\"\n\
             create_slot = false\nsingle_active = false\n"
        ),
        shards,
    )?;
    let (run, weir_cpu) = run_until_counted(&config, events)?;
    Ok(run.report(
        "cdc",
        events,
        run.seconds,
        Baseline {
            name: "raw replication loop: read + decode pgoutput to the same JSON, no engine".into(),
            events_per_sec: baseline,
        },
        shards,
        (
            ns_per_event(weir_cpu, events),
            ns_per_event(baseline_cpu, events),
        ),
    ))
}

/// Reads `events` changes from `slot` and decodes them; returns changes/s.
async fn raw_loop(
    info: &ConnInfo,
    slot: &str,
    publication: &str,
    events: u64,
) -> Result<f64, String> {
    let mut c = Connection::connect(info, true)
        .await
        .map_err(|e| e.to_string())?;
    c.start_copy_both(&format!(
        "START_REPLICATION SLOT {slot} LOGICAL 0/0 (proto_version '1', publication_names '{publication}')"
    ))
    .await
    .map_err(|e| e.to_string())?;
    let (mut read, mut write) = c.split();
    let mut decoder = Decoder::new();
    let mut n = 0u64;
    let mut bytes = 0usize;
    let mut first = None;
    while n < events {
        match read.next_copy().await.map_err(|e| e.to_string())? {
            CopyMessage::Data(mut d) if d.first() == Some(&b'w') && d.len() >= 25 => {
                d.advance(25);
                match decoder.decode(&d)? {
                    Decoded::Change(key, value) => {
                        first.get_or_insert_with(Instant::now);
                        bytes += value.len() + key.map_or(0, |k| k.len());
                        n += 1;
                    }
                    Decoded::Changes(v) => n += v.len() as u64,
                    _ => {}
                }
            }
            CopyMessage::Data(d) if d.first() == Some(&b'k') && d.get(17) == Some(&1) => {
                // the server asks for a status: answer, confirming nothing
                let mut status = [0u8; 34];
                status[0] = b'r';
                write.send_copy(&status).await.map_err(|e| e.to_string())?;
            }
            CopyMessage::Data(_) => {}
            CopyMessage::Done => return Err("the server ended the stream".into()),
        }
    }
    std::hint::black_box(bytes);
    Ok(events as f64 / first.map_or(1.0, |t: Instant| t.elapsed().as_secs_f64()))
}
