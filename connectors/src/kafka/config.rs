//! Options of the `kafka` source and sink, and how they become librdkafka
//! properties.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};

/// Where a new consumer group starts reading a partition that has no
/// committed offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartOffset {
    /// From the oldest retained message (default): nothing already in the
    /// topic is skipped.
    #[default]
    Earliest,
    /// From the next message produced after the group joined.
    Latest,
}

/// The consumer group protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// The classic protocol with cooperative-sticky assignment (default):
    /// a rebalance moves only the partitions that change owner.
    #[default]
    Classic,
    /// KIP-848's broker-driven protocol (`group.protocol=consumer`), for
    /// brokers 4.0 and later; also incremental.
    Consumer,
}

/// Options of the `kafka` source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceOptions {
    /// Bootstrap brokers, `host:port[,host:port...]` (required).
    pub brokers: String,
    /// Topics to consume. Set this or `topic_pattern`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression (librdkafka syntax); every matching topic is
    /// consumed, including topics created later. Set this or `topics`.
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Consumer group id (required). Processes with the same group share
    /// the partitions.
    pub group: String,
    /// Where a partition without a committed offset starts: `"earliest"`
    /// (default) or `"latest"`.
    #[serde(default)]
    pub start: StartOffset,
    /// `"classic"` (default, cooperative-sticky) or `"consumer"` (KIP-848).
    #[serde(default)]
    pub group_protocol: GroupProtocol,
    /// How long a revoked partition may take to finish its in-flight
    /// batches before its offset is committed and it is released; default
    /// 10s.
    #[serde(
        default = "default_revoke_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub revoke_timeout: Duration,
    /// How long to wait for the brokers' metadata at start; default 10s.
    /// Unreachable brokers or a missing topic fail the pipeline after it.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub connect_timeout: Duration,
    /// A stable name for this process among the group's members (e.g.
    /// `"${HOSTNAME}"` in a StatefulSet); default none. Turns on static
    /// membership: `group.instance.id` is `INSTANCE-SOURCE`, so a process
    /// that restarts within `session.timeout.ms` (45 s by default) gets its
    /// partitions back without a rebalance of the others. Each process
    /// needs its own name.
    #[serde(default)]
    pub instance: Option<String>,
    /// The name of a `kafka` sink of this pipeline with `transactional_id`
    /// set: this source's offsets are committed in that sink's
    /// transactions, together with the records written for them
    /// (exactly-once Kafka → Kafka); default none. Offsets are then
    /// committed in epochs of `[checkpoint] interval`, and records are read
    /// with `isolation.level = read_committed`.
    #[serde(default)]
    pub exactly_once_sink: Option<String>,
    /// `group.instance.id` derived from `instance` and the source's name
    /// (set by [`KafkaSourceOptions::from_config`]).
    #[serde(skip)]
    pub group_instance_id: Option<String>,
    /// Any librdkafka consumer property, passed through as is (TLS, SASL,
    /// OAuth, fetch sizes...). weir's own settings (`enable.auto.commit`,
    /// `enable.auto.offset.store`) cannot be overridden.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Options of the `kafka` sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkOptions {
    /// Bootstrap brokers, `host:port[,host:port...]` (required).
    pub brokers: String,
    /// The topic every event is written to (required).
    pub topic: String,
    /// How long librdkafka may keep gathering records before it sends a
    /// request; default 5ms.
    #[serde(
        default = "default_linger",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub linger: Duration,
    /// How long a record may take to be delivered, retries included,
    /// before its delivery fails; default 120s (at most
    /// `transaction_timeout` with `transactional_id`).
    #[serde(
        default = "default_delivery_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub delivery_timeout: Duration,
    /// Batches handed to librdkafka whose delivery is not confirmed yet;
    /// default 64, at least 1. The sink's queue bounds them in events and
    /// bytes too.
    #[serde(default = "default_max_inflight_batches")]
    pub max_inflight_batches: usize,
    /// Turns on transactions (exactly-once, with a `kafka` source's
    /// `exactly_once_sink`): librdkafka's `transactional.id`, which must
    /// be stable across restarts of one process and unique among the
    /// processes running at once (e.g. `"enricher-${HOSTNAME}"`). A
    /// restart fences the previous producer of the id and aborts its open
    /// transaction. Default none.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// How long a transaction may stay open before the broker aborts it
    /// (`transaction.timeout.ms`); default 60s. It must be longer than an
    /// epoch (`[checkpoint] interval` plus the drain of its batches).
    #[serde(
        default = "default_transaction_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub transaction_timeout: Duration,
    /// Any librdkafka producer property, passed through as is (TLS, SASL,
    /// compression, batch sizes...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_revoke_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_inflight_batches() -> usize {
    64
}

fn default_linger() -> Duration {
    Duration::from_millis(5)
}

fn default_transaction_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(120)
}

/// Properties of the source that the user may not set through `options`.
const SOURCE_OWNED: &[&str] = &["enable.auto.commit", "enable.auto.offset.store", "group.id"];

impl KafkaSourceOptions {
    /// Parses and checks a source's options.
    pub fn from_config(config: &ComponentConfig) -> Result<Self, Diagnostic> {
        let mut options: KafkaSourceOptions = config.options()?;
        if let Some(instance) = &options.instance {
            let valid = !instance.is_empty()
                && instance
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(config.option_error(
                    "instance",
                    format!(
                        "`instance` must be letters, digits, `-`, `_` or `.`; found {instance:?}"
                    ),
                ));
            }
            if options.options.contains_key("group.instance.id") {
                return Err(config.option_error(
                    "options",
                    "set `instance` or `options.\"group.instance.id\"`, not both",
                ));
            }
            options.group_instance_id = Some(format!("{instance}-{}", config.name));
        }
        if options.brokers.trim().is_empty() {
            return Err(config.option_error("brokers", "`brokers` must not be empty"));
        }
        if options.group.trim().is_empty() {
            return Err(config.option_error("group", "`group` must not be empty"));
        }
        match (&options.topic_pattern, options.topics.is_empty()) {
            (None, true) => {
                return Err(config.error("set `topics` (a list of topics) or `topic_pattern`"))
            }
            (Some(_), false) => {
                return Err(config.option_error(
                    "topic_pattern",
                    "set either `topics` or `topic_pattern`, not both",
                ))
            }
            _ => {}
        }
        if let Some(t) = options.topics.iter().find(|t| t.trim().is_empty()) {
            return Err(config.option_error("topics", format!("topic name {t:?} is empty")));
        }
        if let Some(key) = options
            .options
            .keys()
            .find(|k| SOURCE_OWNED.contains(&k.as_str()))
        {
            return Err(config.option_error(
                "options",
                format!("`{key}` is set by weir (offsets are committed from the ack ledger; the group is `group`) and cannot be overridden"),
            ));
        }
        Ok(options)
    }

    /// The librdkafka consumer configuration.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set(
                "auto.offset.reset",
                match self.start {
                    StartOffset::Earliest => "earliest",
                    StartOffset::Latest => "latest",
                },
            )
            .set("statistics.interval.ms", "5000")
            // librdkafka waits this long before fetching again once its
            // prefetch queue is over its thresholds (default 1s): with a
            // consumer that drains the queue in batches, the fetcher would
            // sit idle most of that second
            .set("fetch.queue.backoff.ms", "5");
        match self.group_protocol {
            GroupProtocol::Classic => {
                c.set("partition.assignment.strategy", "cooperative-sticky");
            }
            GroupProtocol::Consumer => {
                c.set("group.protocol", "consumer");
            }
        }
        if let Some(id) = &self.group_instance_id {
            c.set("group.instance.id", id);
        }
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        if self.exactly_once_sink.is_some() {
            // what an aborted transaction wrote upstream is never read
            c.set("isolation.level", "read_committed");
        }
        c
    }

    /// The subscription: topic names, or the pattern (`^` prefixed, as
    /// librdkafka expects).
    pub fn subscription(&self) -> Vec<String> {
        match &self.topic_pattern {
            Some(p) if p.starts_with('^') => vec![p.clone()],
            Some(p) => vec![format!("^{p}")],
            None => self.topics.clone(),
        }
    }
}

impl KafkaSinkOptions {
    /// Parses and checks a sink's options.
    pub fn from_config(config: &ComponentConfig) -> Result<Self, Diagnostic> {
        let options: KafkaSinkOptions = config.options()?;
        if options.brokers.trim().is_empty() {
            return Err(config.option_error("brokers", "`brokers` must not be empty"));
        }
        if options.topic.trim().is_empty() {
            return Err(config.option_error("topic", "`topic` must not be empty"));
        }
        if options.max_inflight_batches == 0 {
            return Err(config.option_error(
                "max_inflight_batches",
                "`max_inflight_batches` must be at least 1",
            ));
        }
        if let Some(id) = &options.transactional_id {
            if id.trim().is_empty() {
                return Err(
                    config.option_error("transactional_id", "`transactional_id` must not be empty")
                );
            }
            if options.options.contains_key("transactional.id") {
                return Err(config.option_error(
                    "options",
                    "set `transactional_id` or `options.\"transactional.id\"`, not both",
                ));
            }
        } else if options.options.contains_key("transactional.id") {
            return Err(config.option_error(
                "options",
                "`transactional.id` is set through `transactional_id` (and a kafka source's `exactly_once_sink`)",
            ));
        }
        Ok(options)
    }

    /// The librdkafka producer configuration: idempotent, acks from all
    /// in-sync replicas, keys partitioned like the Java client (murmur2).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "delivery.timeout.ms",
                self.delivery_timeout.as_millis().max(1).to_string(),
            );
        for (k, v) in &self.options {
            c.set(k, v);
        }
        if let Some(id) = &self.transactional_id {
            // librdkafka refuses a record timeout longer than the
            // transaction's: a record cannot outlive its transaction
            let transaction_ms = self.transaction_timeout.as_millis().max(1);
            let delivery_ms = self.delivery_timeout.as_millis().clamp(1, transaction_ms);
            c.set("transactional.id", id)
                .set("transaction.timeout.ms", transaction_ms.to_string())
                .set("delivery.timeout.ms", delivery_ms.to_string());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<KafkaSourceOptions, String> {
        let config = ComponentConfig::from_toml("in", "kafka", toml).map_err(|d| d.to_string())?;
        KafkaSourceOptions::from_config(&config).map_err(|d| d.to_string())
    }

    #[test]
    fn a_source_needs_topics_or_a_pattern_but_not_both() {
        let none = parse("brokers = \"b:9092\"\ngroup = \"g\"").unwrap_err();
        assert!(none.contains("set `topics`"), "{none}");
        let both =
            parse("brokers = \"b:9092\"\ngroup = \"g\"\ntopics = [\"a\"]\ntopic_pattern = \"a.*\"")
                .unwrap_err();
        assert!(both.contains("not both"), "{both}");
        let ok = parse("brokers = \"b:9092\"\ngroup = \"g\"\ntopic_pattern = \"a.*\"").unwrap();
        assert_eq!(ok.subscription(), ["^a.*"]);
    }

    #[test]
    fn weir_owns_the_commit_settings() {
        let err = parse(
            "brokers = \"b:9092\"\ngroup = \"g\"\ntopics = [\"a\"]\noptions = { \"enable.auto.commit\" = \"true\" }",
        )
        .unwrap_err();
        assert!(err.contains("cannot be overridden"), "{err}");
        let ok = parse(
            "brokers = \"b:9092\"\ngroup = \"g\"\ntopics = [\"a\"]\noptions = { \"fetch.min.bytes\" = \"1000\" }",
        )
        .unwrap();
        let c = ok.client_config();
        assert_eq!(c.get("fetch.min.bytes"), Some("1000"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
    }

    #[test]
    fn an_instance_name_turns_on_static_membership() {
        let base = "brokers = \"b:9092\"\ngroup = \"g\"\ntopics = [\"a\"]\n";
        let none = parse(base).unwrap();
        assert_eq!(none.client_config().get("group.instance.id"), None);
        let named = parse(&format!("{base}instance = \"web-1\"")).unwrap();
        assert_eq!(
            named.client_config().get("group.instance.id"),
            Some("web-1-in")
        );
        let bad = parse(&format!("{base}instance = \"web 1\"")).unwrap_err();
        assert!(bad.contains("`instance` must be letters"), "{bad}");
        let both = parse(&format!(
            "{base}instance = \"w\"\noptions = {{ \"group.instance.id\" = \"x\" }}"
        ))
        .unwrap_err();
        assert!(both.contains("not both"), "{both}");
    }
}
