//! Host bindings generated from `wit/weir-function.wit`.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "wit",
    world: "function",
    exports: { default: async },
    ownership: Borrowing { duplicate_if_necessary: true },
});
