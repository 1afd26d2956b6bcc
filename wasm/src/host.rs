//! What a guest instance's store holds: its WASI context (no files, no
//! network, no environment; stdout and stderr go to weir's log), its memory
//! cap, and the deadline of the call in progress.

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::guest_log::GuestLog;
use crate::limits::MemoryCap;

/// The store data of one guest instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory cap.
    pub(crate) cap: MemoryCap,
    /// When the call in progress must have returned.
    pub(crate) deadline: Instant,
    /// Set when the epoch callback stopped a call at its deadline.
    pub(crate) timed_out: bool,
}

impl HostState {
    /// A guest that may use at most `max_memory` bytes and writes to `log`.
    pub fn new(max_memory: usize, log: &GuestLog) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(log.clone())
            .stderr(log.clone())
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            cap: MemoryCap::new(max_memory),
            deadline: Instant::now(),
            timed_out: false,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
