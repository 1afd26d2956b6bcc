//! The memory cap of one guest instance.

/// A `ResourceLimiter` that refuses to grow a guest's memories past a cap,
/// and remembers that it did, so the trap can say why.
#[derive(Debug)]
pub struct MemoryCap {
    /// Most bytes one linear memory may hold.
    pub max_bytes: usize,
    /// The size a refused growth asked for, until taken.
    pub refused: Option<usize>,
}

impl MemoryCap {
    /// A cap of `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        MemoryCap {
            max_bytes,
            refused: None,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = Some(desired);
            // an error traps at once: a guest's allocator that saw a failed
            // growth would abort with a less useful message
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes exceeded (the guest asked for {desired})",
                self.max_bytes
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // tables hold function references; a million is far past any real guest
        Ok(desired <= 1 << 20)
    }
}
