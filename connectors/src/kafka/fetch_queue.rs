//! A queue of its own for the assigned partitions' messages, read a batch
//! of messages per call.
//!
//! rust-rdkafka's `BaseConsumer::poll` hands over one message per call, and
//! each call is one pass through librdkafka's event API: the queue's lock,
//! three clock reads, the poll-interval bookkeeping and an event object per
//! message. On this machine that was most of the consumer thread's time,
//! and that one thread bounded the source (see docs/benchmarks.md). The
//! crate has no batch call, so this module uses librdkafka's C API
//! directly: each assigned partition's queue is forwarded to a queue
//! created here, and `rd_kafka_consume_batch_queue` takes up to
//! [`FETCH_BATCH`] messages under one lock. The consumer's own queue keeps
//! everything else (rebalances, commit results, statistics, errors) and is
//! still served through `poll`, which runs the rebalance callbacks: the
//! batch call must not serve those (with rust-rdkafka's event API it would
//! unassign without telling the source).

use std::ffi::CString;
use std::marker::PhantomData;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// The most messages one call takes.
pub(crate) const FETCH_BATCH: usize = 1024;

/// The partitions' queue, and the consumer queue whose events wake a
/// batch call waiting on it.
pub(crate) struct FetchQueue {
    /// The client (owned by the consumer, which outlives this queue).
    client: *mut rd::rd_kafka_t,
    /// Where the assigned partitions' messages go.
    queue: *mut rd::rd_kafka_queue_t,
    /// The consumer's queue: events, and messages of partitions not
    /// forwarded yet.
    consumer_queue: *mut rd::rd_kafka_queue_t,
    /// The messages of the last call, destroyed at the next.
    messages: Vec<*mut rd::rd_kafka_message_t>,
    /// Partitions forwarded here: given back to the consumer queue when
    /// this queue goes.
    forwarded: Vec<(CString, i32)>,
}

// SAFETY: the handles are librdkafka's thread-safe queue and client
// handles; the messages are owned by this value and only read through it.
unsafe impl Send for FetchQueue {}

/// Called by librdkafka (on one of its threads, with the consumer queue
/// locked) when an event arrives on the consumer queue: wakes a batch call
/// waiting on the fetch queue, so a rebalance is served at once.
unsafe extern "C" fn wake(_client: *mut rd::rd_kafka_t, fetch_queue: *mut std::ffi::c_void) {
    // SAFETY: the opaque is the fetch queue, which disables this callback
    // before it is destroyed
    unsafe { rd::rd_kafka_queue_yield(fetch_queue.cast()) };
}

impl FetchQueue {
    /// A queue for `consumer`'s partitions. Nothing is forwarded yet.
    pub(crate) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> FetchQueue {
        let client = consumer.client().native_ptr();
        // SAFETY: `client` is a live consumer; both calls return new
        // handles, destroyed in `drop`
        let (queue, consumer_queue) = unsafe {
            (
                rd::rd_kafka_queue_new(client),
                rd::rd_kafka_queue_get_consumer(client),
            )
        };
        if !consumer_queue.is_null() {
            // SAFETY: both handles are live until `drop`, which disables
            // the callback first
            unsafe { rd::rd_kafka_queue_cb_event_enable(consumer_queue, Some(wake), queue.cast()) };
        }
        FetchQueue {
            client,
            queue,
            consumer_queue,
            messages: Vec::with_capacity(FETCH_BATCH),
            forwarded: Vec::new(),
        }
    }

    /// Sends `topic`/`partition`'s messages here from now on (what its
    /// queue holds already comes along). librdkafka ends a partition's
    /// forwarding when it stops fetching it, so this is done at every
    /// assignment.
    pub(crate) fn forward(&mut self, topic: &str, partition: i32) {
        let Ok(name) = CString::new(topic) else {
            return;
        };
        // SAFETY: live client; the partition handle is destroyed at once
        // (forwarding keeps its own reference to our queue)
        unsafe {
            let partition_queue =
                rd::rd_kafka_queue_get_partition(self.client, name.as_ptr(), partition);
            if partition_queue.is_null() {
                return;
            }
            rd::rd_kafka_queue_forward(partition_queue, self.queue);
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        if !self
            .forwarded
            .iter()
            .any(|(t, p)| *p == partition && *t == name)
        {
            self.forwarded.push((name, partition));
        }
    }

    /// Whether the consumer queue holds something for `poll`: an event or
    /// a message of a partition not forwarded yet.
    pub(crate) fn consumer_queue_pending(&self) -> bool {
        // SAFETY: live handle
        !self.consumer_queue.is_null()
            && unsafe { rd::rd_kafka_queue_length(self.consumer_queue) } > 0
    }

    /// Destroys the last call's messages and takes up to [`FETCH_BATCH`]
    /// new ones, waiting up to `timeout` for the first (an event on the
    /// consumer queue ends the wait early).
    pub(crate) fn fetch(&mut self, timeout: Duration) -> Fetched<'_> {
        self.release();
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the array has room for FETCH_BATCH pointers; librdkafka
        // writes `n` of them, each a message we now own
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue,
                timeout_ms,
                self.messages.as_mut_ptr(),
                FETCH_BATCH,
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(FETCH_BATCH);
        // SAFETY: librdkafka initialised the first `n` elements
        unsafe { self.messages.set_len(n) };
        Fetched {
            messages: &self.messages,
        }
    }

    /// Destroys the messages of the last call.
    fn release(&mut self) {
        for m in self.messages.drain(..) {
            // SAFETY: each was handed to us by the batch call, once
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        self.release();
        // SAFETY: the handles are ours; the client is still alive (the
        // consumer is closed after this queue goes)
        unsafe {
            if !self.consumer_queue.is_null() {
                rd::rd_kafka_queue_cb_event_enable(self.consumer_queue, None, std::ptr::null_mut());
            }
            // the partitions still assigned go back to the consumer queue,
            // which the consumer's close serves
            for (topic, partition) in &self.forwarded {
                let partition_queue =
                    rd::rd_kafka_queue_get_partition(self.client, topic.as_ptr(), *partition);
                if !partition_queue.is_null() {
                    rd::rd_kafka_queue_forward(partition_queue, self.consumer_queue);
                    rd::rd_kafka_queue_destroy(partition_queue);
                }
            }
            if !self.consumer_queue.is_null() {
                rd::rd_kafka_queue_destroy(self.consumer_queue);
            }
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// The messages one batch call took, lent until the next call.
pub(crate) struct Fetched<'q> {
    messages: &'q [*mut rd::rd_kafka_message_t],
}

impl<'q> Fetched<'q> {
    /// How many messages.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// The messages, in the order librdkafka queued them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = FetchedMessage<'q>> + '_ {
        self.messages.iter().map(|&m| FetchedMessage {
            message: m,
            _queue: PhantomData,
        })
    }
}

/// One message of a batch call: reads of its fields.
#[derive(Clone, Copy)]
pub(crate) struct FetchedMessage<'q> {
    message: *const rd::rd_kafka_message_t,
    _queue: PhantomData<&'q FetchQueue>,
}

impl<'q> FetchedMessage<'q> {
    fn fields(&self) -> &'q rd::rd_kafka_message_t {
        // SAFETY: the message lives until the queue's next call, which
        // needs the queue mutably while `'q` borrows it
        unsafe { &*self.message }
    }

    /// The raw message, for librdkafka calls.
    pub(crate) fn ptr(&self) -> *const rd::rd_kafka_message_t {
        self.message
    }

    /// The error it carries (a consumer error comes as a message), or
    /// none.
    pub(crate) fn error(&self) -> Option<rd::rd_kafka_resp_err_t> {
        let err = self.fields().err;
        (err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then_some(err)
    }

    /// The topic handle's address: equal for messages of one topic.
    pub(crate) fn topic_handle(&self) -> usize {
        self.fields().rkt as usize
    }

    /// The topic's name.
    pub(crate) fn topic(&self) -> &'q str {
        let rkt = self.fields().rkt;
        if rkt.is_null() {
            return "";
        }
        // SAFETY: a live topic handle's name is a NUL-terminated string
        // that lives as long as the handle the message holds
        unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_topic_name(rkt)) }
            .to_str()
            .unwrap_or("")
    }

    /// The partition.
    pub(crate) fn partition(&self) -> i32 {
        self.fields().partition
    }

    /// The offset.
    pub(crate) fn offset(&self) -> i64 {
        self.fields().offset
    }

    /// The key, if any.
    pub(crate) fn key(&self) -> Option<&'q [u8]> {
        let f = self.fields();
        // SAFETY: librdkafka's key pointer and length describe the key
        (!f.key.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(f.key.cast::<u8>(), f.key_len) })
    }

    /// The value, if any (none for a tombstone).
    pub(crate) fn payload(&self) -> Option<&'q [u8]> {
        let f = self.fields();
        // SAFETY: librdkafka's payload pointer and length describe it
        (!f.payload.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(f.payload.cast::<u8>(), f.len) })
    }

    /// The timestamp in milliseconds, or none.
    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message
        let ts = unsafe { rd::rd_kafka_message_timestamp(self.message, &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts >= 0)
            .then_some(ts)
    }
}
