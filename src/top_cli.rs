//! `weir top`: the live view of a running weir in the terminal, redrawn
//! every second from the admin server's stream: where backpressure starts,
//! sources (rate, lag), shards (busy, waiting, queue), steps and sinks
//! (rates, errors, dead letters, latency), functions. `--sort` orders the
//! steps and sinks; `--once` prints one view and exits (for scripts).
//! Plain text with ANSI clear-screen: no terminal UI crate is needed for a
//! table redrawn once a second.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::Value;

/// Arguments of `weir top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// The admin server (HOST:PORT); default `WEIR_ADMIN_ADDR`.
    #[arg(long)]
    pub admin: Option<String>,
    /// How steps and sinks are ordered.
    #[arg(long, value_enum, default_value_t = SortBy::Pipeline)]
    pub sort: SortBy,
    /// Print one view (with rates) and exit.
    #[arg(long)]
    pub once: bool,
}

/// Orders of steps and sinks.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SortBy {
    /// As in the pipeline file.
    Pipeline,
    /// Busiest first.
    Rate,
    /// Most errors first.
    Errors,
    /// Slowest p99 first.
    Latency,
}

/// Runs the command.
pub fn top(args: TopArgs) -> ExitCode {
    let admin = match crate::admin_client::address(args.admin) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut seen = 0;
    let result = crate::admin_client::block_on(crate::admin_client::events(
        &admin,
        "/api/v1/pipeline/stream",
        |data| {
            seen += 1;
            let Ok(view) = serde_json::from_str::<Value>(data) else {
                return true;
            };
            // the first view has no rates yet: --once waits for the second
            if args.once && seen < 2 {
                return true;
            }
            let text = render(&view, args.sort);
            let mut out = std::io::stdout().lock();
            if !args.once {
                let _ = write!(out, "\x1b[H\x1b[2J");
            }
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            !args.once
        },
    ));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) | Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn n(v: &Value) -> String {
    let x = v.as_f64().unwrap_or(0.0);
    if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

fn pct(v: &Value) -> String {
    format!("{:.0}%", v.as_f64().unwrap_or(0.0) * 100.0)
}

fn latency(v: &Value) -> String {
    if v.is_null() {
        "-".into()
    } else {
        format!("{}/{}", n(&v["p50_us"]), n(&v["p99_us"]))
    }
}

fn sorted(list: &Value, sort: SortBy, rate: &str) -> Vec<Value> {
    let mut rows = list.as_array().cloned().unwrap_or_default();
    let key = |v: &Value| -> f64 {
        match sort {
            SortBy::Pipeline => 0.0,
            SortBy::Rate => -v[rate].as_f64().unwrap_or(0.0),
            SortBy::Errors => -v["errors"].as_f64().unwrap_or(0.0),
            SortBy::Latency => -v["latency"]["p99_us"].as_f64().unwrap_or(0.0),
        }
    };
    rows.sort_by(|a, b| key(a).total_cmp(&key(b)));
    rows
}

/// The view as text.
pub fn render(v: &Value, sort: SortBy) -> String {
    let mut t = String::new();
    let bottleneck = match &v["bottleneck"] {
        Value::Null => "none".to_string(),
        b => format!(
            "starts at {} ({})",
            b["stage"].as_str().unwrap_or("?"),
            b["reason"].as_str().unwrap_or("")
        ),
    };
    let _ = writeln!(
        t,
        "weir · {}   backpressure: {bottleneck}\n",
        v["pipeline"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        t,
        "{:<24} {:>10} {:>10} {:>8} {:>12}",
        "SOURCE", "events/s", "events", "lag", "backpressure"
    );
    for s in v["sources"].as_array().into_iter().flatten() {
        let _ = writeln!(
            t,
            "{:<24} {:>10} {:>10} {:>8} {:>12}",
            s["name"].as_str().unwrap_or(""),
            n(&s["events_per_s"]),
            n(&s["events"]),
            n(&s["lag"]),
            format!(
                "{} {}",
                s["backpressure"].as_str().unwrap_or(""),
                pct(&s["backpressured"])
            )
        );
    }
    let _ = writeln!(
        t,
        "\n{:<24} {:>10} {:>10} {:>8} {:>12}",
        "SHARD", "busy", "waiting", "idle", "queue"
    );
    for s in v["shards"].as_array().into_iter().flatten() {
        let _ = writeln!(
            t,
            "{:<24} {:>10} {:>10} {:>8} {:>12}",
            s["index"].to_string(),
            pct(&s["busy"]),
            pct(&s["backpressured"]),
            pct(&s["idle"]),
            n(&s["queue_events"])
        );
    }
    let _ = writeln!(
        t,
        "\n{:<24} {:>10} {:>10} {:>8} {:>8} {:>14} {:>6}",
        "STEP", "in/s", "out/s", "errors", "dead", "p50/p99 µs", "bp"
    );
    for s in sorted(&v["steps"], sort, "in_per_s") {
        let _ = writeln!(
            t,
            "{:<24} {:>10} {:>10} {:>8} {:>8} {:>14} {:>6}",
            s["name"].as_str().unwrap_or(""),
            n(&s["in_per_s"]),
            n(&s["out_per_s"]),
            n(&s["errors"]),
            n(&s["dead_letters"]),
            latency(&s["latency"]),
            s["backpressure"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(
        t,
        "\n{:<24} {:>10} {:>10} {:>8} {:>8} {:>14} {:>6}",
        "SINK", "events/s", "queue", "errors", "dead", "p50/p99 µs", "waited"
    );
    for s in sorted(&v["sinks"], sort, "events_per_s") {
        let _ = writeln!(
            t,
            "{:<24} {:>10} {:>10} {:>8} {:>8} {:>14} {:>6}",
            s["name"].as_str().unwrap_or(""),
            n(&s["events_per_s"]),
            n(&s["queue_events"]),
            n(&s["errors"]),
            n(&s["dead_letters"]),
            latency(&s["latency"]),
            pct(&s["shards_waited"])
        );
    }
    let functions = v["functions"].as_array().cloned().unwrap_or_default();
    if !functions.is_empty() {
        let _ = writeln!(
            t,
            "\n{:<24} {:>8} {:>14} {:>22}",
            "FUNCTION", "type", "stable", "canary"
        );
        for f in functions {
            let canary = match &f["canary"] {
                Value::Null => "-".to_string(),
                c => format!(
                    "{} on {}",
                    &c["version"]["hash"].as_str().unwrap_or("")
                        [..12.min(c["version"]["hash"].as_str().unwrap_or("").len())],
                    pct(&c["share"])
                ),
            };
            let stable = f["stable"]["hash"].as_str().unwrap_or("");
            let _ = writeln!(
                t,
                "{:<24} {:>8} {:>14} {:>22}",
                f["name"].as_str().unwrap_or(""),
                f["type"].as_str().unwrap_or(""),
                &stable[..12.min(stable.len())],
                canary
            );
        }
    }
    t
}
