//! Start-up checks shared by the source and the sink: the brokers answer,
//! and the topics exist (weir never creates topics).

use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use weir_engine::{Error, Result};

/// Fetches the cluster's metadata (for `topic` only, if given) and checks
/// that every topic in `topics` exists with partitions.
pub(crate) fn check_topics<C: ClientContext>(
    client: &Client<C>,
    brokers: &str,
    topic: Option<&str>,
    topics: &[&str],
    timeout: Duration,
) -> Result<()> {
    let metadata = client.fetch_metadata(topic, timeout).map_err(|e| {
        Error::retryable(format!(
            "cannot reach the brokers `{brokers}` within {timeout:?}: {e}"
        ))
    })?;
    for topic in topics {
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == *topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(Error::user(format!(
                "topic `{topic}` does not exist on `{brokers}` (weir does not create topics: create it, or fix the name)"
            )));
        }
    }
    Ok(())
}
