//! What the Kafka benchmarks run without weir: preloading a topic, and the
//! baselines (a raw rdkafka consumer that only counts; a raw consume →
//! produce copy loop).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

/// Creates `topic` with `partitions` partitions.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .map_err(|e| format!("creating topic {topic}: {e}"))?;
    for r in results {
        r.map_err(|(t, e)| format!("creating topic {t}: {e}"))?;
    }
    // created on the controller: a broker's metadata can lag behind it, and
    // a sink opened in that window finds no topic
    let lister: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = lister
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| {
                m.topics()
                    .first()
                    .map(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
            })
            .unwrap_or(false);
        if seen {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "topic {topic} was created but its metadata did not show it within 30 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deletes every topic whose name starts with `weir-bench-` and holds the
/// run id `id`: a benchmark against a long-lived broker must not leave its
/// gigabytes behind at every run.
pub fn delete_topics_of_run(bootstrap: &str, id: &str) -> Result<usize, String> {
    let config = {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap);
        c
    };
    let lister: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let metadata = lister
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| format!("listing topics: {e}"))?;
    let names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with("weir-bench-") && n.contains(id))
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = rt
        .block_on(admin.delete_topics(&refs, &AdminOptions::new()))
        .map_err(|e| format!("deleting topics: {e}"))?;
    for r in results {
        r.map_err(|(t, e)| format!("deleting topic {t}: {e}"))?;
    }
    Ok(names.len())
}

/// A producer tuned for bulk loading.
pub fn producer(bootstrap: &str) -> Result<ThreadedProducer<DefaultProducerContext>, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|e| e.to_string())
}

/// Sends one record, waiting while librdkafka's queue is full.
pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    value: &[u8],
) {
    send_record(producer, BaseRecord::to(topic).key(key).payload(value));
}

/// Sends `record`, waiting while librdkafka's queue is full.
fn send_record(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// The producer of the copy loops: idempotent, 5 ms linger, like weir's
/// `kafka` sink.
fn copy_producer(bootstrap: &str) -> Result<ThreadedProducer<DefaultProducerContext>, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| e.to_string())
}

/// The ~100-byte value of event `i`.
pub fn payload(i: u64, buf: &mut Vec<u8>) {
    use std::io::Write;
    buf.clear();
    let _ = write!(
        buf,
        r#"{{"id":{i:>10},"user":"user-{:03}","amount":{:>5},"currency":"EUR","ok":true,"pad":"0123456789"}}"#,
        i % 1000,
        i % 200
    );
}

/// Writes `events` ~100-byte JSON events to `topic`, keys spread over 1000.
pub fn preload(bootstrap: &str, topic: &str, events: u64) -> Result<(), String> {
    let producer = producer(bootstrap)?;
    let started = Instant::now();
    let mut value = Vec::with_capacity(128);
    for i in 0..events {
        payload(i, &mut value);
        let key = format!("k{}", i % 1000);
        send(&producer, topic, key.as_bytes(), &value);
        if i % 500_000 == 0 && i > 0 {
            eprintln!("  preloaded {i} events");
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("preloading {topic}: {e}"))?;
    eprintln!(
        "  preloaded {events} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A consumer of a fresh group reading from the start, with the fetch
/// settings weir's source uses (so the ratio measures weir, not settings).
pub fn consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("fetch.queue.backoff.ms", "5")
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .map_err(|e| e.to_string())
}

/// Baseline of `kafka`: a raw `BaseConsumer` of a fresh group counts
/// `events` messages. Events per second from the first message to the last.
pub fn count(bootstrap: &str, topic: &str, events: u64) -> Result<f64, String> {
    let consumer = consumer(bootstrap, &format!("weir-bench-raw-{}", unique()))?;
    consumer.subscribe(&[topic]).map_err(|e| e.to_string())?;
    let mut n = 0u64;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < events {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                std::hint::black_box(m.payload());
            }
            Some(Err(e)) => return Err(format!("raw consumer: {e}")),
            None if Instant::now() > deadline => return Err("raw consumer timed out".into()),
            None => {}
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(events as f64 / secs)
}

/// Baseline of `kafka-to-kafka`: a raw consume → produce loop copying
/// `events` messages from `from` to `to`; seconds from the first message
/// read until every copy is acknowledged.
pub fn copy(bootstrap: &str, from: &str, to: &str, events: u64) -> Result<f64, String> {
    let consumer = consumer(bootstrap, &format!("weir-bench-raw-{}", unique()))?;
    consumer.subscribe(&[from]).map_err(|e| e.to_string())?;
    let producer = copy_producer(bootstrap)?;
    let mut n = 0u64;
    let mut first = None;
    while n < events {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                send(
                    &producer,
                    to,
                    m.key().unwrap_or_default(),
                    m.payload().unwrap_or_default(),
                );
            }
            Some(Err(e)) => return Err(format!("raw consumer: {e}")),
            None => {}
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| e.to_string())?;
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(events as f64 / secs)
}

/// The latency baseline of `kafka-to-kafka`: copies `from` to `to` as
/// [`copy`] does, keeping each record's key and timestamp, until `stop`.
pub fn copy_until(
    bootstrap: &str,
    from: &str,
    to: &str,
    group: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    let consumer = consumer(bootstrap, group)?;
    consumer.subscribe(&[from]).map_err(|e| e.to_string())?;
    let producer = copy_producer(bootstrap)?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let mut record = BaseRecord::to(to)
                    .key(m.key().unwrap_or_default())
                    .payload(m.payload().unwrap_or_default());
                if let Some(ts) = m.timestamp().to_millis() {
                    record = record.timestamp(ts);
                }
                send_record(&producer, record);
            }
            Some(Err(e)) => return Err(format!("raw copy loop: {e}")),
            None => {}
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| e.to_string())
}

/// A number unique to this run, for topic and group names.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{}", std::process::id(), nanos % 1_000_000_000)
}
