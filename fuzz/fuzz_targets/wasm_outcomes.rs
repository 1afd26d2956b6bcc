//! What a WebAssembly guest returns from a call — outcomes naming inputs
//! by index, spans into the data it returned, routes by sink name, and
//! contradicting actions — applied to a batch by the host. A guest is
//! untrusted: any outcomes must be applied or refused, never panic or
//! slice out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir_wasm::fuzzing::apply_outcomes(data);
});
