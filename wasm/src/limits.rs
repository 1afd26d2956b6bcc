//! The memory cap of one guest instance.

/// A `ResourceLimiter` that refuses to grow a guest's memories past a cap
/// (all the instance's memories together: a component may have several),
/// and remembers that it did, so the trap can say why.
#[derive(Debug)]
pub struct MemoryCap {
    /// Most bytes the instance's linear memories may hold together.
    pub max_bytes: usize,
    /// Bytes they hold now (wasmtime reports each memory's creation as a
    /// growth from 0).
    pub used: usize,
    /// The size a refused growth asked for, until taken.
    pub refused: Option<usize>,
}

impl MemoryCap {
    /// A cap of `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        MemoryCap {
            max_bytes,
            used: 0,
            refused: None,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max_bytes {
            self.refused = Some(total);
            // an error traps at once: a guest's allocator that saw a failed
            // growth would abort with a less useful message
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes exceeded (the guest asked for {total})",
                self.max_bytes
            ));
        }
        self.used = total;
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn the_cap_covers_all_memories_together() {
        let mut cap = MemoryCap::new(100);
        assert!(cap.memory_growing(0, 60, None).unwrap());
        assert!(cap.memory_growing(60, 70, None).unwrap());
        // a second memory: 70 + 40 > 100
        assert!(cap.memory_growing(0, 40, None).is_err());
        assert_eq!(cap.refused, Some(110));
        assert!(cap.memory_growing(0, 30, None).unwrap());
        assert_eq!(cap.used, 100);
    }
}
