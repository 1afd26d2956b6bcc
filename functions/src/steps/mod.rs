//! The built-in steps. Each file holds one step type: its options, its
//! builder (validation, called once from the configuration) and its
//! instances (built on each shard's thread).

pub mod jq;
pub mod json;
pub mod key_by;
pub mod route;
pub mod sample;
pub mod set_headers;
