//! `weir test FILE --input events.jsonl`: run a pipeline's steps offline
//! over sample events, with no source, sink or broker, and print what
//! became of each event.
//!
//! Output (stdout): one line per outcome,
//! `out <value>` for the default sinks, `route <sink> <value>` for routed
//! events, `fail line <n> step <step>: <reason>` for failures, then a summary.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use weir_engine::{ChainOutput, Event, StepChain, StepContext, StepSpec};

/// Runs the command.
pub fn test(file: &Path, input: &Path, allow_failures: bool) -> ExitCode {
    let config = match weir_config::load(file) {
        Ok(c) => c,
        Err(d) => {
            crate::validate::print_diagnostics(&d);
            return ExitCode::from(2);
        }
    };
    let registry = crate::registry();
    let sink_names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    let mut ctx = StepContext::new(&sink_names);
    let mut specs = Vec::new();
    let mut errors = weir_config::Diagnostics::default();
    for c in &config.steps {
        match registry.build_step(c, &mut ctx) {
            Ok(factory) => specs.push(StepSpec {
                name: c.name.as_str().into(),
                factory,
                metrics: weir_engine::telemetry::StepMetrics::new(&c.name),
            }),
            Err(d) => errors.push(d),
        }
    }
    if !errors.is_empty() {
        crate::validate::print_diagnostics(&errors);
        return ExitCode::from(2);
    }
    let events = match read_events(input) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: reading {}: {e}", input.display());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let outcome = local.block_on(&runtime, async {
        let mut chain = StepChain::build(&specs, config.retry.clone())?;
        let mut out = ChainOutput::default();
        chain.run(events, &mut out).await;
        Ok::<_, weir_engine::Error>(out)
    });
    let out = match outcome {
        Ok(out) => out,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    for e in &out.events {
        let _ = writeln!(stdout, "out {}", String::from_utf8_lossy(&e.value));
    }
    for (sink, e) in &out.routed {
        let _ = writeln!(
            stdout,
            "route {} {}",
            sink_names.get(*sink as usize).map_or("?", String::as_str),
            String::from_utf8_lossy(&e.value)
        );
    }
    for d in &out.dead {
        let _ = writeln!(
            stdout,
            "fail line {} step {}: {}",
            d.event.origin.offset, d.stage, d.reason
        );
    }
    let _ = writeln!(
        stdout,
        "summary: {} out, {} routed, {} failed",
        out.events.len(),
        out.routed.len(),
        out.dead.len()
    );
    if !out.dead.is_empty() && !allow_failures {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn read_events(path: &Path) -> std::io::Result<Vec<Event>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut events = Vec::new();
    for (i, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(Event::new(line).with_offset(i as u64 + 1));
    }
    Ok(events)
}
