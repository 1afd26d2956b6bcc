//! The process's wasmtime engines and the epoch ticker that bounds a call.
//!
//! One engine serves every `wasm` step of the process (compiled code and
//! the instance pool are shared); a step that asks for fuel gets the
//! second engine, compiled with fuel metering, since metering costs every
//! function its instrumentation. Both are created on first use.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of deadlines, and how
/// often a long call yields its shard's core to the shard's other lanes.
pub const TICK: Duration = Duration::from_millis(10);

/// Component instances the pool holds: every lane of every shard of every
/// `wasm` step, twice under a canary, and the new ones a swap opens before
/// the old ones close. Default the larger of 1024 and 64 per core;
/// `WEIR_WASM_POOL_INSTANCES` overrides it. An instantiation beyond it
/// fails with wasmtime's error (which names the pool), the step's events
/// are retried later, and a swap that needs it is refused and undone.
fn pool_instances() -> u32 {
    if let Some(n) = std::env::var("WEIR_WASM_POOL_INSTANCES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    1024u32.max(cores.saturating_mul(64))
}

static PLAIN: OnceLock<Result<Engine, String>> = OnceLock::new();
static FUELED: OnceLock<Result<Engine, String>> = OnceLock::new();

/// The engine for steps with (`fuel = true`) or without fuel metering.
pub fn engine(fuel: bool) -> Result<Engine, String> {
    let cell = if fuel { &FUELED } else { &PLAIN };
    cell.get_or_init(|| {
        let engine = build(fuel).map_err(|e| format!("cannot start wasmtime: {e:#}"))?;
        start_ticker(engine.clone());
        Ok(engine)
    })
    .clone()
}

fn build(fuel: bool) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .consume_fuel(fuel)
        // traps carry the guest's stderr instead; backtraces cost every trap
        .wasm_backtrace_max_frames(None)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    let instances = pool_instances();
    let mut pool = PoolingAllocationConfig::default();
    // a component holds several core instances (a Python one, a dozen)
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(16))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(8))
        .total_stacks(instances);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.clone()));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            // a pool reserves address space up front; where that is refused
            // (a low `ulimit -v`), instances are allocated on demand instead
            tracing::warn!(error = %format!("{e:#}"), "wasm: instance pool refused, allocating on demand");
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&config)
        }
    }
}

/// Advances the engine's epoch every [`TICK`] on a thread of its own (the
/// thread sleeps between ticks; it never runs guest code).
fn start_ticker(engine: Engine) {
    let spawned = std::thread::Builder::new()
        .name("weir-wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            engine.increment_epoch();
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "wasm: cannot start the epoch thread; deadlines will not fire");
    }
}
