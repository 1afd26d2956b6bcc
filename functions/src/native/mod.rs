//! Native Rust steps: functions compiled into the binary and registered by
//! name, for work where jq is too slow or cannot reach (a cache, a client,
//! a parser).
//!
//! # Writing one
//!
//! A native step is three small pieces, as [`json_add_field`] shows:
//!
//! 1. **Options**: a `Deserialize` struct with
//!    `#[serde(deny_unknown_fields)]` and a doc comment on every field;
//!    [`ComponentConfig::options`](weir_config::ComponentConfig::options)
//!    reads it and reports errors with file, line and column.
//! 2. **A builder**, `fn(&ComponentConfig, &mut StepContext) ->
//!    Result<Arc<dyn StepFactory>, Diagnostic>`: it validates everything
//!    (use `config.option_error(key, …)` to point at a bad value, and
//!    `ctx.route_to(sink)` to resolve a sink it routes to) and returns a
//!    factory. The factory is `Send + Sync`: it holds configuration only.
//! 3. **The step**: a struct implementing [`Step`](weir_engine::Step),
//!    built by the factory once per lane on each shard's thread, so it may
//!    keep `!Send` state (`Rc`, caches, a connection) across batches.
//!    `process` takes the events out of `input` and, for each, calls
//!    `output.emit` (kept, changed or new), `output.drop_event` (filtered),
//!    `output.fail` / `output.fail_retryable` (dead-lettered, or retried
//!    first) or `output.route` (straight to a sink). It runs on the
//!    shard's async runtime: await I/O, never block.
//!
//! Then add one line to [`crate::register`]:
//!
//! ```
//! # let mut registry = weir_engine::Registry::new();
//! # use weir_functions::native;
//! registry.step("json-add-field", native::json_add_field::build);
//! # assert!(registry.step_kinds().any(|k| k == "json-add-field"));
//! ```
//!
//! and the step is usable as `type = "json-add-field"` in `[[steps]]`.
//!
//! Keep the hot path lean: write all of a batch's new values into one
//! `BytesMut` and split each off with `split().freeze()` rather than
//! allocating per event.

pub mod json_add_field;
