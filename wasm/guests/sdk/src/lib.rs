//! Write a weir function in Rust, compile it to a WebAssembly component
//! (`cargo build --release --target wasm32-wasip2`) and run it with a
//! `type = "wasm"` step.
//!
//! ```ignore
//! use weir_guest::{Config, Event, Function, Out};
//!
//! struct Upper;
//!
//! impl Function for Upper {
//!     fn init(_config: &Config) -> Result<Self, String> {
//!         Ok(Upper)
//!     }
//!     fn process(&mut self, event: &Event<'_>, out: &mut Out<'_>) {
//!         out.emit_value(event, &event.value.to_ascii_uppercase());
//!     }
//! }
//!
//! weir_guest::export_function!(Upper);
//! ```
//!
//! weir calls `init` once per instance (each lane of each shard has one),
//! then `process_batch` once per batch; its default calls `process` for
//! every event. An instance keeps its state across batches. A panic fails
//! the batch: weir rebuilds the instance, runs the batch's events one by one
//! to find the one that panics, and dead-letters it with the panic message.

#![allow(missing_docs)] // the generated bindings carry the WIT's docs

use std::cell::RefCell;

/// The bindings generated from `wasm/wit/weir-function.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "function",
        pub_export_macro: true,
        export_macro_name: "export_guest",
        default_bindings_module: "weir_guest::bindings",
    });
}

use bindings::weir::function::types as wit;
pub use wit::Header;

/// The step's `config` table, flattened to (key, value) strings.
#[derive(Debug, Clone, Default)]
pub struct Config(pub Vec<(String, String)>);

impl Config {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("config key `{key}` is required"))
    }
}

/// One input event; its bytes are borrowed from the batch.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Routing and ordering key; `None` for unkeyed events.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// Headers, in the order they were added.
    pub headers: &'a [Header],
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl<'a> Event<'a> {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_slice())
    }
}

/// A new event to pass on or route.
#[derive(Debug, Clone, Default)]
pub struct Output<'b> {
    /// Its key.
    pub key: Option<&'b [u8]>,
    /// Its payload.
    pub value: &'b [u8],
    /// Its headers (they replace the input's).
    pub headers: Vec<Header>,
}

/// A weir function.
pub trait Function: Sized + 'static {
    /// Builds the function from its configuration; an error refuses it.
    fn init(config: &Config) -> Result<Self, String>;

    /// Decides what becomes of one event.
    fn process(&mut self, event: &Event<'_>, out: &mut Out<'_>);

    /// Processes a batch; by default calls [`Function::process`] per event.
    fn process_batch(&mut self, events: &[Event<'_>], outputs: &mut Outputs) {
        for (i, event) in events.iter().enumerate() {
            self.process(event, &mut outputs.of(i));
        }
    }
}

/// What became of a batch so far: the outcomes and the bytes they refer to.
#[derive(Default)]
pub struct Outputs {
    data: Vec<u8>,
    outcomes: Vec<wit::Outcome>,
}

impl Outputs {
    /// The writer for the outcomes of input `index`.
    pub fn of(&mut self, index: usize) -> Out<'_> {
        Out {
            input: index as u32,
            outputs: self,
        }
    }
}

/// Where [`Function::process`] writes what becomes of its event. An event
/// given no outcome is dropped.
pub struct Out<'a> {
    input: u32,
    outputs: &'a mut Outputs,
}

impl Out<'_> {
    fn push(&mut self, action: wit::Action) {
        self.outputs.outcomes.push(wit::Outcome {
            input: self.input,
            action,
        });
    }

    fn span(&mut self, bytes: &[u8]) -> wit::Span {
        let offset = self.outputs.data.len() as u32;
        self.outputs.data.extend_from_slice(bytes);
        wit::Span {
            offset,
            len: bytes.len() as u32,
        }
    }

    fn output(&mut self, output: Output<'_>) -> wit::Output {
        wit::Output {
            key: output.key.map(|k| self.span(k)),
            value: self.span(output.value),
            headers: output.headers,
        }
    }

    /// Passes the event on unchanged.
    pub fn keep(&mut self) {
        self.push(wit::Action::Keep);
    }

    /// Passes on a new or changed event.
    pub fn emit(&mut self, output: Output<'_>) {
        let output = self.output(output);
        self.push(wit::Action::Emit(output));
    }

    /// Passes on the event with a new value (its key and headers kept).
    pub fn emit_value(&mut self, event: &Event<'_>, value: &[u8]) {
        self.emit(Output {
            key: event.key,
            value,
            headers: event.headers.to_vec(),
        });
    }

    /// Passes on the event with a new value that `write` appends to the
    /// buffer it is given (no copy of its own); key and headers kept. If
    /// `write` fails, nothing is emitted and its error is returned.
    pub fn write_value<E>(
        &mut self,
        event: &Event<'_>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let key = event.key.map(|k| self.span(k));
        let start = self.outputs.data.len();
        if let Err(e) = write(&mut self.outputs.data) {
            self.outputs.data.truncate(start);
            return Err(e);
        }
        let value = wit::Span {
            offset: start as u32,
            len: (self.outputs.data.len() - start) as u32,
        };
        self.push(wit::Action::Emit(wit::Output {
            key,
            value,
            headers: event.headers.to_vec(),
        }));
        Ok(())
    }

    /// Sends an event straight to the sink called `sink` (it must be in the
    /// step's `routes`).
    pub fn route(&mut self, sink: &str, event: Output<'_>) {
        let event = self.output(event);
        self.push(wit::Action::Route(wit::Routed {
            sink: sink.to_string(),
            event,
        }));
    }

    /// Filters the event out.
    pub fn drop(&mut self) {
        self.push(wit::Action::Drop);
    }

    /// Dead-letters the event with a reason.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.push(wit::Action::Fail(reason.into()));
    }

    /// Fails the event for now: weir retries it with backoff.
    pub fn retry(&mut self, reason: impl Into<String>) {
        self.push(wit::Action::Retry(reason.into()));
    }
}

fn slice(data: &[u8], span: wit::Span) -> &[u8] {
    let start = span.offset as usize;
    data.get(start..start.saturating_add(span.len as usize))
        .unwrap_or_default()
}

thread_local! {
    /// The instance's function (a component instance is single-threaded).
    static STATE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub fn __init<F: Function>(config: Vec<(String, String)>) -> Result<(), String> {
    let function = F::init(&Config(config))?;
    STATE.with(|s| *s.borrow_mut() = Some(Box::new(function)));
    Ok(())
}

#[doc(hidden)]
pub fn __process<F: Function>(batch: wit::Batch) -> wit::Outcomes {
    let events: Vec<Event<'_>> = batch
        .events
        .iter()
        .map(|e| Event {
            key: e.key.map(|k| slice(&batch.data, k)),
            value: slice(&batch.data, e.value),
            headers: &e.headers,
            timestamp_ms: e.timestamp_ms,
        })
        .collect();
    let mut outputs = Outputs {
        data: Vec::with_capacity(batch.data.len() + batch.data.len() / 4),
        outcomes: Vec::with_capacity(events.len()),
    };
    STATE.with(|s| {
        let mut state = s.borrow_mut();
        let function = state
            .as_mut()
            .and_then(|f| f.downcast_mut::<F>())
            .expect("weir called process before init");
        function.process_batch(&events, &mut outputs);
    });
    wit::Outcomes {
        data: outputs.data,
        outcomes: outputs.outcomes,
    }
}

/// Exports a [`Function`] type as the component's `init` and `process`.
#[macro_export]
macro_rules! export_function {
    ($ty:ty) => {
        struct __WeirGuest;

        impl $crate::bindings::Guest for __WeirGuest {
            fn init(config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>)
                -> ::std::result::Result<(), ::std::string::String> {
                $crate::__init::<$ty>(config)
            }

            fn process(batch: $crate::bindings::weir::function::types::Batch)
                -> $crate::bindings::weir::function::types::Outcomes {
                $crate::__process::<$ty>(batch)
            }
        }

        $crate::bindings::export_guest!(__WeirGuest with_types_in $crate::bindings);
    };
}
