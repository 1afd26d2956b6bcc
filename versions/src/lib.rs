//! Function versions, shared by every versioned step type (`wasm`,
//! `python`, `node`): a version is immutable and named by the hash of its
//! content; the process-wide [`catalog`] deploys, rolls back and runs
//! canaries through the pipeline's control channel; [`split`] sends a
//! share of the keys to a canary and as many to a control group of the
//! stable version; [`canary`] judges the two; [`stats`] counts per version.

pub mod canary;
pub mod catalog;
pub mod metrics;
pub mod split;
pub mod stats;
pub mod store;

pub use catalog::{catalog, CanarySpec, CatalogError, Version, VersionSource, Versioned};
pub use stats::{StatsSnapshot, VersionStats};
