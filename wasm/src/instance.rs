//! One guest instance: a store, the instantiated component and its log.
//! Each lane of each shard owns one per function version it runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::weir::function::types::{Batch, Outcomes};
use crate::bindings::Function;
use crate::guest_log::GuestLog;
use crate::host::HostState;
use crate::module::FunctionModule;

/// How a call is bounded.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Longest a call (`init` or one batch) may run.
    pub deadline: Duration,
    /// Most bytes of linear memory.
    pub max_memory: usize,
    /// Fuel per call, when the module runs on the fuel-metering engine.
    pub fuel: Option<u64>,
}

/// A live guest instance.
pub struct Instance {
    store: Store<HostState>,
    bindings: Function,
    log: GuestLog,
    limits: CallLimits,
}

impl Instance {
    /// Instantiates `module` and calls its `init` with `config`.
    pub async fn start(
        module: &FunctionModule,
        function: &Arc<str>,
        config: &[(String, String)],
        limits: CallLimits,
    ) -> Result<Self, String> {
        let log = GuestLog::new(function.clone());
        let mut store = Store::new(module.engine(), HostState::new(limits.max_memory, &log));
        store.limiter(|state| &mut state.cap);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if Instant::now() >= state.deadline {
                state.timed_out = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                // give the shard's other lanes the core for a moment
                Ok(UpdateDeadline::Yield(1))
            }
        });
        arm(&mut store, &limits);
        let bindings = module
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| explain(&mut store, &log, &limits, &e))?;
        let mut instance = Instance {
            store,
            bindings,
            log,
            limits,
        };
        let pairs: Vec<(&str, &str)> = config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        arm(&mut instance.store, &instance.limits);
        match instance
            .bindings
            .call_init(&mut instance.store, &pairs)
            .await
        {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(refused)) => Err(format!("init refused: {refused}")),
            Err(e) => Err(format!(
                "init failed: {}",
                explain(&mut instance.store, &instance.log, &instance.limits, &e)
            )),
        }
    }

    /// Runs one batch. An error is the reason the call failed (a trap, the
    /// deadline, the memory cap, the fuel), after which the instance must
    /// not be used again.
    pub async fn process(&mut self, batch: Batch<'_>) -> Result<Outcomes, String> {
        arm(&mut self.store, &self.limits);
        self.log.clear();
        match self.bindings.call_process(&mut self.store, batch).await {
            Ok(outcomes) => Ok(outcomes),
            Err(e) => Err(explain(&mut self.store, &self.log, &self.limits, &e)),
        }
    }
}

/// Sets the deadline (and fuel) of the next call and forgets the last one's output.
fn arm(store: &mut Store<HostState>, limits: &CallLimits) {
    let state = store.data_mut();
    state.deadline = Instant::now() + limits.deadline;
    state.timed_out = false;
    state.cap.refused = None;
    store.set_epoch_deadline(1);
    if let Some(fuel) = limits.fuel {
        // only fails on an engine without fuel, which `fuel` rules out
        let _ = store.set_fuel(fuel);
    }
}

/// Says why a call failed, in the words a dead letter should carry.
fn explain(
    store: &mut Store<HostState>,
    log: &GuestLog,
    limits: &CallLimits,
    error: &wasmtime::Error,
) -> String {
    let state = store.data_mut();
    let mut reason = if state.timed_out {
        format!("deadline of {:?} exceeded", limits.deadline)
    } else if let Some(asked) = state.cap.refused.take() {
        format!(
            "memory cap of {} bytes exceeded (the guest asked for {asked})",
            limits.max_memory
        )
    } else if error.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
        format!("fuel of {} exhausted", limits.fuel.unwrap_or(0))
    } else {
        format!("{error:#}")
    };
    if let Some(said) = log.take_recent() {
        reason.push_str("; the guest wrote: ");
        reason.push_str(&said);
    }
    reason
}
