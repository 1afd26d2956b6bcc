//! weir partition ids for Kafka topic-partitions, so one source can read
//! several topics. An assigned partition keeps its id until it is revoked;
//! ids come from the engine's [`PartitionSlots`], which spreads the
//! partitions held right now evenly over the shards and reuses the ids of
//! revoked ones.

use std::collections::HashMap;
use std::sync::Arc;

use weir_engine::assign::PartitionSlots;

/// The two-way map between assigned `(topic, partition)`s and weir
/// partition ids.
#[derive(Debug)]
pub(crate) struct PartitionIds {
    by_name: HashMap<(Arc<str>, i32), u32>,
    by_id: HashMap<u32, (Arc<str>, i32)>,
    slots: PartitionSlots,
}

impl PartitionIds {
    /// No partitions yet, for source `source` over `shards` shards.
    pub(crate) fn new(source: u16, shards: usize) -> Self {
        PartitionIds {
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            slots: PartitionSlots::new(source, shards),
        }
    }

    /// The id of a topic-partition, taking a free one at first sight.
    pub(crate) fn id(&mut self, topic: &str, partition: i32) -> u32 {
        if let Some(&id) = self.by_name.get(&(Arc::from(topic), partition)) {
            return id;
        }
        let id = self.slots.take();
        let topic: Arc<str> = Arc::from(topic);
        self.by_id.insert(id, (Arc::clone(&topic), partition));
        self.by_name.insert((topic, partition), id);
        id
    }

    /// The topic-partition of an id.
    pub(crate) fn get(&self, id: u32) -> Option<(&str, i32)> {
        self.by_id.get(&id).map(|(t, p)| (&**t, *p))
    }

    /// Frees the id of a revoked partition for the next assignment.
    pub(crate) fn release(&mut self, id: u32) {
        if let Some(name) = self.by_id.remove(&id) {
            self.by_name.remove(&name);
            self.slots.release(id);
        }
    }
}

/// The last id looked up, keyed by librdkafka's topic handle address and
/// the partition, so a run of messages from one partition costs two integer
/// compares, not a topic-name read and a hash lookup. Reset at every
/// rebalance (a handle address could be reused for another topic after its
/// topic is dropped).
#[derive(Debug, Default)]
pub(crate) struct LastId {
    topic_handle: usize,
    partition: i32,
    id: Option<u32>,
}

impl LastId {
    /// The id for a message's topic handle and partition; `ids` resolves
    /// it by name when it is not the last one.
    pub(crate) fn lookup(
        &mut self,
        topic_handle: usize,
        partition: i32,
        ids: impl FnOnce() -> u32,
    ) -> u32 {
        match self.id {
            Some(id) if self.partition == partition && self.topic_handle == topic_handle => id,
            _ => {
                let id = ids();
                self.topic_handle = topic_handle;
                self.partition = partition;
                self.id = Some(id);
                id
            }
        }
    }

    /// Forgets the cached id.
    pub(crate) fn reset(&mut self) {
        self.id = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_reversible_balanced_and_reused() {
        let mut ids = PartitionIds::new(0, 2);
        assert_eq!(ids.id("a", 3), 0);
        assert_eq!(ids.id("b", 3), 1);
        assert_eq!(ids.id("a", 3), 0);
        assert_eq!(ids.get(1), Some(("b", 3)));
        assert_eq!(ids.get(2), None);
        ids.release(1);
        assert_eq!(ids.get(1), None);
        assert_eq!(ids.id("c", 0), 1, "the freed id on the emptied shard");
        ids.release(1);
        assert_eq!(ids.id("b", 3), 1);
        let mut last = LastId::default();
        assert_eq!(last.lookup(0xa, 3, || ids.id("a", 3)), 0);
        assert_eq!(last.lookup(0xa, 3, || unreachable!("cached")), 0);
        assert_eq!(last.lookup(0xb, 3, || ids.id("b", 3)), 1);
        last.reset();
        assert_eq!(last.lookup(0xb, 3, || ids.id("b", 3)), 1);
    }
}
