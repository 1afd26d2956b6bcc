//! The Kafka dev broker a Kafka benchmark starts when no `--brokers` are
//! given (KRaft on the machine's JDK; jars fetched with Maven).

use crate::bench::dev_server::DevScript;

/// The broker script, as shipped in scripts/kafka-dev.sh.
pub(super) static SCRIPT: DevScript = DevScript {
    what: "a Kafka dev broker",
    name: "kafka-dev.sh",
    text: include_str!("../../../scripts/kafka-dev.sh"),
    key: "KAFKA_BOOTSTRAP",
    stop_args: &[],
};
