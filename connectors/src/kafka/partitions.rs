//! weir partition ids for Kafka topic-partitions: dense numbers handed out
//! in the order partitions are first assigned, so one source can read
//! several topics. An id never changes during a run.

use std::collections::HashMap;
use std::sync::Arc;

/// The two-way map between `(topic, partition)` and weir partition ids.
#[derive(Debug, Default)]
pub(crate) struct PartitionIds {
    by_name: HashMap<(Arc<str>, i32), u32>,
    by_id: Vec<(Arc<str>, i32)>,
}

impl PartitionIds {
    /// The id of a topic-partition, handing out a new one at first sight.
    pub(crate) fn id(&mut self, topic: &str, partition: i32) -> u32 {
        if let Some(&id) = self.by_name.get(&(Arc::from(topic), partition)) {
            return id;
        }
        let id = u32::try_from(self.by_id.len()).expect("fewer than 2^32 partitions");
        let topic: Arc<str> = Arc::from(topic);
        self.by_id.push((Arc::clone(&topic), partition));
        self.by_name.insert((topic, partition), id);
        id
    }

    /// The topic-partition of an id.
    pub(crate) fn get(&self, id: u32) -> Option<(&str, i32)> {
        self.by_id.get(id as usize).map(|(t, p)| (&**t, *p))
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
    fn ids_are_dense_stable_and_reversible() {
        let mut ids = PartitionIds::default();
        assert_eq!(ids.id("a", 3), 0);
        assert_eq!(ids.id("b", 3), 1);
        assert_eq!(ids.id("a", 3), 0);
        assert_eq!(ids.get(1), Some(("b", 3)));
        assert_eq!(ids.get(2), None);
        let mut last = LastId::default();
        assert_eq!(last.lookup(0xa, 3, || ids.id("a", 3)), 0);
        assert_eq!(last.lookup(0xa, 3, || unreachable!("cached")), 0);
        assert_eq!(last.lookup(0xb, 3, || ids.id("b", 3)), 1);
        last.reset();
        assert_eq!(last.lookup(0xb, 3, || ids.id("b", 3)), 1);
    }
}
