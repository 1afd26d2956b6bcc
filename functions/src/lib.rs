//! weir's steps: the built-ins (`jq`, `json`, `route`, `key-by`, `sample`)
//! and native Rust steps (`json-add-field`), plus the [`jq`] helper that
//! compiles and runs jq programs.
//!
//! [`register`] adds every step type to the engine's registry, one line per
//! type. To write a step of your own, see [`native`].

mod batch_bytes;
pub mod jq;
pub mod native;
mod scan;
pub mod steps;
#[cfg(test)]
mod testing;

use weir_engine::Registry;

/// Registers every step type of this crate.
pub fn register(registry: &mut Registry) {
    registry.step("jq", steps::jq::build);
    registry.step("json", steps::json::build);
    registry.step("route", steps::route::build);
    registry.step("key-by", steps::key_by::build);
    registry.step("sample", steps::sample::build);
    registry.step("set-headers", steps::set_headers::build);
    registry.step("json-add-field", native::json_add_field::build);
}
