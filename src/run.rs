//! `weir run FILE`: run a pipeline until its sources end or a signal asks it
//! to stop; drain and commit before exiting.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use weir_engine::shutdown_channel;

use crate::admin::{self, AdminState};
use crate::observability;

/// Runs the command; `admin_addr` overrides the file's `admin.listen`.
pub fn run(file: &Path, watch: bool, admin_addr: Option<String>) -> ExitCode {
    observability::init_logging();
    // before the pipeline is built: metric handles resolved earlier would be no-ops
    let metrics = observability::init_metrics();
    let Some((config, mut pipeline)) = crate::validate::load_and_build(file) else {
        return ExitCode::from(2);
    };
    let token = match crate::admin_functions::token_from_env() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !weir_versions::catalog().is_empty() {
        // deploys, canaries and rollbacks swap steps through the control channel
        weir_versions::catalog().attach(pipeline.control());
    }
    let io_threads = weir_engine::shard::available_cores().len().clamp(1, 2);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads)
        .thread_name("weir-io")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the I/O runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let (trigger, _) = shutdown_channel();
        let on_signal = trigger.clone();
        let mut term = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("error: cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(async move {
            tokio::select! { _ = term.0.recv() => {}, _ = term.1.recv() => {} }
            tracing::info!("signal received: stopping sources, draining, committing");
            on_signal.trigger();
            tokio::select! { _ = term.0.recv() => {}, _ = term.1.recv() => {} }
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(130);
        });
        crate::reload::on_sighup(file.to_path_buf());
        if watch {
            crate::reload::watch(file.to_path_buf());
        }
        let shape = crate::admin_live::Shape {
            name: config.pipeline.name.clone(),
            shards: pipeline.shard_count(),
            lanes: config.pipeline.max_inflight,
            sources: config.sources.iter().map(|s| s.name.clone()).collect(),
            steps: config.steps.iter().map(|s| s.name.clone()).collect(),
            sinks: config.sinks.iter().map(|s| s.name.clone()).collect(),
            dead_letter: config.dead_letter.as_ref().map(|d| d.sink.clone()),
        };
        let listen = admin_addr.or_else(|| config.admin.listen.clone());
        let state = Arc::new(AdminState {
            metrics,
            latency: pipeline.latency(),
            token,
            live: crate::admin_live::start(shape),
            file: file.to_path_buf(),
            drain: trigger.clone(),
            ready: AtomicBool::new(false),
            description: serde_json::json!({
                "name": config.pipeline.name,
                "file": file.display().to_string(),
                "shards": pipeline.shard_count(),
                "sources": config.sources.iter().map(|s| serde_json::json!({"name": s.name, "type": s.kind})).collect::<Vec<_>>(),
                "steps": config.steps.iter().map(|s| serde_json::json!({"name": s.name, "type": s.kind})).collect::<Vec<_>>(),
                "sinks": config.sinks.iter().map(|s| serde_json::json!({"name": s.name, "type": s.kind})).collect::<Vec<_>>(),
            }),
        });
        let mut _admin = None; // the admin server runs while this is held
        if let Some(listen) = &listen {
            match listen.parse() {
                Ok(addr) => match admin::serve(addr, Arc::clone(&state), config.admin.tls.as_ref()).await {
                    Ok((bound, stop)) => {
                        let scheme = if config.admin.tls.is_some() { "https" } else { "http" };
                        tracing::info!(%bound, scheme, "admin server listening");
                        _admin = Some(stop);
                    }
                    Err(e) => {
                        eprintln!("error: admin server cannot listen on {listen}: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                Err(e) => {
                    eprintln!("error: admin.listen `{listen}` is not an address: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        tracing::info!(pipeline = %config.pipeline.name, shards = pipeline.shard_count(), "pipeline starting");
        state.ready.store(true, Ordering::Relaxed);
        let result = pipeline.run(trigger).await;
        state.ready.store(false, Ordering::Relaxed);
        match result {
            Ok(report) if report.drained => {
                tracing::info!("pipeline finished: everything dispatched was delivered and committed");
                ExitCode::SUCCESS
            }
            Ok(_) => {
                eprintln!(
                    "error: some events were not delivered (see the errors above); \
                     the checkpoint stops before them and they will be read again"
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // a step or sink stuck past the shutdown deadline must not keep the process alive
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
