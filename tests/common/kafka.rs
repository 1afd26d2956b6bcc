//! A real Kafka broker for the tests, started through the project's
//! `scripts/kafka-dev.sh` (KRaft, on the machine's JDK), and a small client
//! to create topics, produce and read back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, ToBytes};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::dev_server;

/// A broker in its own temporary directory, stopped (and removed) on drop.
/// Derefs to a [`Client`] of it.
pub struct Broker {
    client: Client,
    port: u16,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker on a free port. Panics (the test fails) if it cannot.
    pub fn start() -> Broker {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kafka");
        let bootstrap = start_in(&dir, None);
        let port = bootstrap.rsplit(':').next().unwrap().parse().unwrap();
        Broker {
            client: Client { bootstrap },
            port,
            dir,
            _tmp: tmp,
        }
    }

    /// Stops the broker, keeping its data.
    pub fn stop(&self) {
        dev_server::stop("kafka-dev.sh", &self.dir, &["--keep"]);
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        start_in(&self.dir, Some(self.port));
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        super::faults::pid_in(&self.dir.join("kafka.pid"))
    }
}

impl std::ops::Deref for Broker {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Test-side client calls against a broker.
pub struct Client {
    /// `host:port` of the broker.
    pub bootstrap: String,
}

impl Client {
    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        // a broker that has just started (two at once on two cores, in CI)
        // can take a while: a generous timeout, and a retry when it passes
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let started = Instant::now();
        loop {
            match rt.block_on(admin.create_topics([&topic], &options)) {
                Ok(results) => {
                    for r in results {
                        match r {
                            Ok(_) => {}
                            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                            Err((t, e)) => panic!("creating topic {t}: {e}"),
                        }
                    }
                    break;
                }
                Err(e) if started.elapsed() < Duration::from_secs(90) => {
                    eprintln!("create_topics {name}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("create_topics {name}: {e}"),
            }
        }
        self.await_topic(name, partitions);
    }

    /// Waits until the broker's metadata shows `topic` with `partitions`
    /// partitions, each with a leader (creation returns before that).
    pub fn await_topic(&self, topic: &str, partitions: i32) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                let ready = metadata.topics().iter().any(|t| {
                    t.name() == topic
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                });
                if ready {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "topic {topic} was created but has no leaders after 60s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A producer for this broker.
    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .unwrap()
    }

    /// Produces `records` (key, value) to `topic` and waits until all are
    /// acknowledged.
    pub fn produce(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (Option<String>, String)>,
    ) {
        let producer = self.producer();
        for (key, value) in records {
            let mut record = BaseRecord::to(topic).payload(value.as_bytes());
            if let Some(k) = &key {
                record = record.key(k.as_bytes());
            }
            send_when_queue_has_room(&producer, record);
        }
        producer
            .flush(Duration::from_secs(60))
            .expect("all records acknowledged");
    }

    /// Produces `records` (partition, value) to `topic`, unkeyed, and waits
    /// until all are acknowledged.
    pub fn produce_to_partitions(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (i32, String)>,
    ) {
        let producer = self.producer();
        for (partition, value) in records {
            let record = BaseRecord::<(), _>::to(topic)
                .payload(value.as_bytes())
                .partition(partition);
            send_when_queue_has_room(&producer, record);
        }
        producer
            .flush(Duration::from_secs(60))
            .expect("all records acknowledged");
    }

    /// Reads every partition of `topic` from the start until `count`
    /// records were read or `timeout` passed (committed records only, the
    /// client's default).
    pub fn read(&self, topic: &str, count: usize, timeout: Duration) -> Vec<Record> {
        let consumer = self.reader(topic, Isolation::ReadCommitted);
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < count && Instant::now() < deadline {
            if let Some(record) = poll_record(&consumer, topic) {
                out.push(record);
            }
        }
        out
    }

    /// Reads every partition of `topic` from the start as a reader of
    /// `isolation`, until nothing came for `quiet` (or `timeout` passed).
    pub fn read_all(
        &self,
        topic: &str,
        isolation: Isolation,
        quiet: Duration,
        timeout: Duration,
    ) -> Vec<Record> {
        let consumer = self.reader(topic, isolation);
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        let mut last = Instant::now();
        while last.elapsed() < quiet && Instant::now() < deadline {
            if let Some(record) = poll_record(&consumer, topic) {
                out.push(record);
                last = Instant::now();
            }
        }
        out
    }

    /// A consumer assigned every partition of `topic` from the start.
    fn reader(&self, topic: &str, isolation: Isolation) -> BaseConsumer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "weir-test-reader")
            .set("enable.auto.commit", "false")
            .set(
                "isolation.level",
                match isolation {
                    Isolation::ReadCommitted => "read_committed",
                    Isolation::ReadUncommitted => "read_uncommitted",
                },
            )
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        consumer
    }

    /// The end (high watermark) offsets of `topic`'s partitions `0..partitions`.
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> HashMap<i32, i64> {
        let client = || -> BaseConsumer {
            ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .create()
                .unwrap()
        };
        let mut consumer = client();
        // a broker just back from a freeze or a restart answers "not
        // leader" or "unknown partition" for a while: ask again for up to
        // two minutes, each time with a new client (one keeps the metadata
        // it first got for minutes)
        let started = Instant::now();
        (0..partitions)
            .map(|p| loop {
                match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                    Ok((_, high)) => break (p, high),
                    Err(e) if started.elapsed() < Duration::from_secs(120) => {
                        eprintln!("watermarks of {topic}/{p}: {e}; asking again");
                        std::thread::sleep(Duration::from_millis(500));
                        consumer = client();
                    }
                    Err(e) => panic!("watermarks of {topic}/{p}: {e}"),
                }
            })
            .collect()
    }

    /// The committed offsets of `group` on `topic`, by partition; empty
    /// while the group coordinator cannot answer (callers poll).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
            return HashMap::new();
        };
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }
}

/// Sends `record`, waiting while the producer's queue is full.
fn send_when_queue_has_room<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, K, P>,
) {
    while let Err((_, back)) = producer.send(record) {
        record = back;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Adds a header to a record's headers (for tests that send headers).
pub fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(*v),
        })
    })
}

/// Which records a reader sees of transactional writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only those of committed transactions (and non-transactional ones).
    ReadCommitted,
    /// Also those of open and aborted transactions.
    ReadUncommitted,
}

/// The next record of `consumer`, if one came within 100 ms.
fn poll_record(consumer: &BaseConsumer, topic: &str) -> Option<Record> {
    match consumer.poll(Duration::from_millis(100)) {
        Some(Ok(m)) => Some(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        Some(Err(e)) => panic!("reading {topic}: {e}"),
        None => None,
    }
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<String>,
    /// Its value.
    pub value: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        dev_server::remove("kafka-dev.sh", &self.dir, &[]);
    }
}

fn start_in(dir: &Path, port: Option<u16>) -> String {
    dev_server::start("kafka-dev.sh", dir, port, &[], "KAFKA_BOOTSTRAP")
}
