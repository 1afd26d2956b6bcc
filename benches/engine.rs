//! Micro benchmarks of the engine's per-batch and per-event machinery, with
//! no external harness (`cargo bench --bench engine`). Each line prints the
//! cost per operation; the end-to-end figures come from `weir bench`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_engine::assign::{hash_key, shard_for_key};
use weir_engine::queue::{bounded, QueueLimits};
use weir_engine::telemetry::QueueMetrics;
use weir_engine::{AckLedger, AckToken, Event, LatencyHistogram};

fn measure(name: &str, ops: u64, f: impl FnOnce()) {
    let started = Instant::now();
    f();
    let elapsed = started.elapsed();
    println!(
        "{name:<48} {:>9.1} ns/op  ({ops} ops in {elapsed:?})",
        elapsed.as_nanos() as f64 / ops as f64
    );
}

fn main() {
    let n = 2_000_000u64;

    measure("ack token: new + share + 2 acks (per batch)", n, || {
        let notify = Arc::new(tokio::sync::Notify::new());
        for _ in 0..n {
            let t = AckToken::new(Arc::clone(&notify), None);
            let s = t.share();
            s.ack();
            t.ack();
        }
    });

    measure(
        "ledger: track + ack + take_checkpoints (per batch)",
        n,
        || {
            let mut ledger = AckLedger::new();
            for i in 0..n {
                let t = AckToken::detached();
                ledger.track((i % 8) as u32, i + 1, t.state());
                t.ack();
                if i % 64 == 0 {
                    black_box(ledger.take_checkpoints());
                }
            }
        },
    );

    let keys: Vec<Bytes> = (0..1024)
        .map(|i| Bytes::from(format!("user-{i}")))
        .collect();
    measure("hash_key + shard_for_key (per event)", n, || {
        for i in 0..n as usize {
            black_box(shard_for_key(hash_key(&keys[i & 1023]), 2));
        }
    });

    measure("latency histogram record (per batch)", n, || {
        let h = LatencyHistogram::new();
        for i in 0..n {
            h.record(Duration::from_micros(i & 0xffff));
        }
        black_box(h.quantile_micros(0.99));
    });

    let batches = n / 1024;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    measure(
        "bounded queue: try_send + recv + permit drop (per batch)",
        batches,
        || {
            runtime.block_on(async {
                let (tx, mut rx) = bounded::<Vec<Event>>(
                    QueueLimits {
                        max_events: 8192,
                        max_bytes: 8 << 20,
                    },
                    QueueMetrics::new("bench"),
                );
                for _ in 0..batches {
                    tx.try_send(Vec::new(), 1024, 100 * 1024).unwrap();
                    black_box(rx.recv().await);
                }
            })
        },
    );
}
