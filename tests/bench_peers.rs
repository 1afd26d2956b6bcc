//! The Kafka benches that compare weir with what a user would run instead.
//!
//! `weir bench kafka-streams`: the Kafka Streams application is built from
//! Maven Central (scripts/kafka-streams-bench.sh), both it and a `weir run`
//! process copy a real broker's topic (started by the bench), and the JSON
//! line carries both sides' figures. A small run: this checks the
//! scenario, not the performance (docs/benchmarks.md has the figures).

mod common;

use common::bench_json;

#[test]
fn the_kafka_streams_scenario_runs_the_peer_and_weir_on_one_broker() {
    let (v, last) = bench_json(&["kafka-streams", "--events", "50000"]);
    assert_eq!(v["scenario"], "kafka-streams");
    assert_eq!(v["events"], 50000);
    for mode in ["json", "passthrough"] {
        for side in ["weir", "streams"] {
            for figure in [
                "events_per_sec",
                "steady_events_per_sec",
                "cpu_ns_per_event",
                "rss_peak_bytes",
            ] {
                let key = format!("{mode}_{side}_{figure}");
                let value = v[&key]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no {key} in {last}"));
                assert!(value > 0.0, "{key} = {value} in {last}");
            }
            let key = format!("{mode}_{side}_first_output_seconds");
            assert!(v[&key].as_f64().is_some(), "no {key} in {last}");
        }
        let ratio = v[format!("{mode}_weir_events_per_sec")].as_f64().unwrap()
            / v[format!("{mode}_streams_events_per_sec")]
                .as_f64()
                .unwrap();
        assert!(
            (ratio - v[format!("{mode}_ratio")].as_f64().unwrap()).abs() < 0.01,
            "{last}"
        );
    }
    assert!(
        v["baseline"]["name"]
            .as_str()
            .unwrap()
            .contains("Kafka Streams"),
        "{last}"
    );
}

/// `weir bench kafka-to-kafka`: the throughput run against the raw copy
/// loop, then the latency runs (default batching, `latency_target`, no
/// step, the raw loop, in a random order) at a low rate, each measuring
/// what it produced after its warm-up.
#[test]
fn the_kafka_to_kafka_scenario_reports_latency_with_and_without_a_latency_target() {
    let rate = 2000;
    let (v, last) = bench_json(&[
        "kafka-to-kafka",
        "--events",
        "50000",
        "--latency-rate",
        &rate.to_string(),
    ]);
    assert_eq!(v["scenario"], "kafka-to-kafka");
    for key in [
        "events_per_sec",
        "ratio",
        "cpu_ns_per_event",
        "p50_us",
        "p99_us",
        "latency_adaptive_p50_us",
        "latency_adaptive_p99_us",
        "latency_no_step_p50_us",
        "latency_no_step_p99_us",
        "latency_baseline_p50_us",
        "latency_baseline_p99_us",
    ] {
        let value = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} in {last}"));
        assert!(value > 0.0, "{key} = {value} in {last}");
    }
    let mut order: Vec<&str> = v["latency_order"]
        .as_array()
        .unwrap_or_else(|| panic!("no latency_order in {last}"))
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    order.sort_unstable();
    assert_eq!(
        order,
        ["raw", "weir", "weir-adaptive", "weir-no-step"],
        "every copier ran once: {last}"
    );
    assert!(
        v["p99_us"].as_f64() >= v["p50_us"].as_f64(),
        "p99 below p50: {last}"
    );
    // 10 s measured at the rate, nothing measured twice
    let measured = v["latency_events"].as_f64().unwrap();
    let expected = 10.0 * rate as f64;
    assert!(
        (measured - expected).abs() <= expected * 0.05,
        "{measured} events measured, expected about {expected}: {last}"
    );
}
