//! A pipeline run inside the test process (for tests that register their
//! own steps or sinks, or read its metrics), on a two-thread I/O runtime
//! as `weir run` uses.

use weir_config::PipelineConfig;
use weir_engine::{shutdown_channel, Pipeline, Registry, RunReport, ShutdownTrigger};

/// A running in-process pipeline.
pub struct InProcess {
    /// The I/O runtime it runs on (tests may run their clients here too).
    pub runtime: tokio::runtime::Runtime,
    /// Requests shutdown.
    pub trigger: ShutdownTrigger,
    run: tokio::task::JoinHandle<weir_engine::Result<RunReport>>,
}

/// Builds `config` with `registry` and starts it.
pub fn start(config: &PipelineConfig, registry: &Registry) -> InProcess {
    let pipeline = Pipeline::build(config, registry).unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (trigger, _) = shutdown_channel();
    let run = runtime.spawn(pipeline.run(trigger.clone()));
    InProcess {
        runtime,
        trigger,
        run,
    }
}

impl InProcess {
    /// Requests shutdown and waits for the run's report.
    pub fn stop(self) -> RunReport {
        self.trigger.trigger();
        self.runtime
            .block_on(self.run)
            .unwrap()
            .expect("the run ends cleanly")
    }

    /// Waits at most `limit` for the run to end by itself (without asking
    /// it to stop); panics if it does not.
    pub fn wait(self, limit: std::time::Duration) -> weir_engine::Result<RunReport> {
        let InProcess {
            runtime,
            trigger,
            run,
        } = self;
        let ended = runtime.block_on(async { tokio::time::timeout(limit, run).await });
        match ended {
            Ok(joined) => joined.unwrap(),
            Err(_) => {
                trigger.trigger();
                panic!("the run did not end by itself within {limit:?}");
            }
        }
    }
}
