//! weir pipeline configuration.
//!
//! One TOML file describes a pipeline: [`load`] reads it into a typed
//! [`PipelineConfig`], or returns [`Diagnostics`] holding every error found,
//! each with file, line and column (1-based, in the original text) and what
//! was expected.
//!
//! Before parsing, `${NAME}` and `${NAME:-default}` are replaced from the
//! environment (`$${` is a literal `${`; comments are left alone). An unset
//! variable without a default is an error at its reference.
//!
//! ```toml
//! [pipeline]
//! name = "quickstart"
//!
//! [sources.gen]
//! type = "generator"
//! count = 10
//!
//! [[steps]]
//! type = "jq"
//!
//! [sinks.out]
//! type = "stdout"
//! ```
//!
//! Connector and step types are not checked here: the engine's registry
//! does that, using [`ComponentConfig::options`] and the location helpers
//! of [`ComponentConfig`] to report errors at the right place, and
//! [`suggest`] for did-you-mean hints.

mod component;
mod decode;
mod diagnostic;
mod document;
mod duration;
mod fields;
mod load;
mod pipeline;
mod settings;
mod source_text;
mod substitute;
mod suggest;
mod tree;

pub use component::ComponentConfig;
pub use diagnostic::{Diagnostic, Diagnostics, Location};
pub use duration::{deserialize as deserialize_duration, parse_duration, DurationError};
pub use load::{load, parse_str};
pub use pipeline::PipelineConfig;
pub use settings::{
    AdminSettings, BatchSettings, CheckpointSettings, DeadLetterSettings, OnStuck, Ordering,
    PipelineSettings, QueueSettings, RetrySettings, ShutdownSettings, TlsFiles,
};
pub use source_text::SourceText;
pub use suggest::suggest;
