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
//!     fn process(&mut self, event: &Event, out: &mut Out<'_>) {
//!         out.emit_value(event, event.value.to_ascii_uppercase());
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

pub use bindings::weir::function::types::{Action, Event, Header, Outcome, Output, Routed};

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

/// A weir function.
pub trait Function: Sized + 'static {
    /// Builds the function from its configuration; an error refuses it.
    fn init(config: &Config) -> Result<Self, String>;

    /// Decides what becomes of one event.
    fn process(&mut self, event: &Event, out: &mut Out<'_>);

    /// Processes a batch; by default calls [`Function::process`] per event.
    fn process_batch(&mut self, events: Vec<Event>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let mut out = Out {
                input: i as u32,
                outcomes: &mut outcomes,
            };
            self.process(event, &mut out);
        }
        outcomes
    }
}

/// Where [`Function::process`] writes what becomes of its event. An event
/// given no outcome is dropped.
pub struct Out<'a> {
    input: u32,
    outcomes: &'a mut Vec<Outcome>,
}

impl Out<'_> {
    fn push(&mut self, action: Action) {
        self.outcomes.push(Outcome {
            input: self.input,
            action,
        });
    }

    /// Passes the event on unchanged.
    pub fn keep(&mut self) {
        self.push(Action::Keep);
    }

    /// Passes on a new or changed event.
    pub fn emit(&mut self, output: Output) {
        self.push(Action::Emit(output));
    }

    /// Passes on the event with a new value (key and headers kept).
    pub fn emit_value(&mut self, event: &Event, value: Vec<u8>) {
        self.emit(Output {
            key: event.key.clone(),
            value,
            headers: event.headers.clone(),
        });
    }

    /// Sends an event straight to the sink called `sink` (it must be in the
    /// step's `routes`).
    pub fn route(&mut self, sink: &str, event: Output) {
        self.push(Action::Route(Routed {
            sink: sink.to_string(),
            event,
        }));
    }

    /// Filters the event out.
    pub fn drop(&mut self) {
        self.push(Action::Drop);
    }

    /// Dead-letters the event with a reason.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.push(Action::Fail(reason.into()));
    }

    /// Fails the event for now: weir retries it with backoff.
    pub fn retry(&mut self, reason: impl Into<String>) {
        self.push(Action::Retry(reason.into()));
    }
}

/// The first header called `name`.
pub fn header<'e>(event: &'e Event, name: &str) -> Option<&'e [u8]> {
    event
        .headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_slice())
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
pub fn __process<F: Function>(events: Vec<Event>) -> Vec<Outcome> {
    STATE.with(|s| {
        let mut state = s.borrow_mut();
        let function = state
            .as_mut()
            .and_then(|f| f.downcast_mut::<F>())
            .expect("weir called process before init");
        function.process_batch(events)
    })
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

            fn process(events: ::std::vec::Vec<$crate::Event>) -> ::std::vec::Vec<$crate::Outcome> {
                $crate::__process::<$ty>(events)
            }
        }

        $crate::bindings::export_guest!(__WeirGuest with_types_in $crate::bindings);
    };
}
