//! Options of the `nats` and `jetstream` sources and sinks.

use std::time::Duration;

use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};

use super::subject::SubjectTemplate;

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_capacity() -> usize {
    65_536
}

/// Options of the `nats` (core NATS) source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceOptions {
    /// Server URL(s), comma-separated; default `nats://127.0.0.1:4222`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Subjects to subscribe to; wildcards (`*`, `>`) allowed (required).
    pub subjects: Vec<String>,
    /// Queue group: processes in one group share the messages instead of
    /// each getting all of them.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// Messages buffered per subscription before the server sees a slow
    /// consumer (and drops); default 65536.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// How long the first connection may take; default 10s.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub connect_timeout: Duration,
    /// TLS: required when set (a `tls://` URL asks for it too).
    #[serde(default)]
    pub tls: Option<NatsTls>,
}

/// Options of the `nats` (core NATS) sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkOptions {
    /// Server URL(s), comma-separated; default `nats://127.0.0.1:4222`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Subject to publish to: text with `{{key}}` and `{{field.path}}`
    /// placeholders (required).
    pub subject: String,
    /// How long the first connection may take; default 10s.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub connect_timeout: Duration,
    /// TLS: required when set (a `tls://` URL asks for it too).
    #[serde(default)]
    pub tls: Option<NatsTls>,
}

/// TLS towards the NATS servers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    /// PEM file of the CA(s) that sign the servers' certificates, besides
    /// the system's roots.
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM client certificate (with `key`), for servers that verify clients.
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<String>,
}

/// Where a new durable consumer starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliverPolicy {
    /// Every message in the stream (default).
    #[default]
    All,
    /// Only messages published after the consumer was created.
    New,
    /// The last message, then new ones.
    Last,
}

/// Options of the `jetstream` source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSourceOptions {
    /// Server URL(s), comma-separated; default `nats://127.0.0.1:4222`.
    #[serde(default = "default_url")]
    pub url: String,
    /// The stream (required). It must exist unless `create_stream` is set.
    pub stream: String,
    /// Create the stream with `subjects` when it does not exist; default false.
    #[serde(default)]
    pub create_stream: bool,
    /// Subjects of a stream created by `create_stream`.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Durable pull consumer name (required); created when missing.
    /// Processes that use the same name share the work.
    pub consumer: String,
    /// Only messages of this subject (wildcards allowed); default all.
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Where a new consumer starts: `"all"` (default), `"new"`, `"last"`.
    #[serde(default)]
    pub deliver_policy: DeliverPolicy,
    /// How long the server waits for an ack before redelivering; default 30s.
    #[serde(
        default = "default_ack_wait",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub ack_wait: Duration,
    /// Most messages delivered and not yet acked; default 20000.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
    /// Deliveries of one message before the server stops redelivering it;
    /// default 5.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: i64,
    /// How long the first connection may take; default 10s.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub connect_timeout: Duration,
    /// TLS: required when set (a `tls://` URL asks for it too).
    #[serde(default)]
    pub tls: Option<NatsTls>,
}

fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}

fn default_max_ack_pending() -> i64 {
    20_000
}

fn default_max_deliver() -> i64 {
    5
}

fn default_max_inflight_batches() -> usize {
    8
}

/// Options of the `jetstream` sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSinkOptions {
    /// Server URL(s), comma-separated; default `nats://127.0.0.1:4222`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Subject to publish to (a stream must capture it): text with
    /// `{{key}}` and `{{field.path}}` placeholders (required).
    pub subject: String,
    /// Batches published whose PubAcks are not all in yet; default 8.
    #[serde(default = "default_max_inflight_batches")]
    pub max_inflight_batches: usize,
    /// How long the first connection may take; default 10s.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub connect_timeout: Duration,
    /// TLS: required when set (a `tls://` URL asks for it too).
    #[serde(default)]
    pub tls: Option<NatsTls>,
}

fn check_url(config: &ComponentConfig, url: &str) -> Result<(), Diagnostic> {
    if url.trim().is_empty() {
        return Err(config.option_error("url", "`url` must not be empty"));
    }
    Ok(())
}

/// The TLS files exist, and a client certificate comes with its key.
fn check_tls(config: &ComponentConfig, tls: Option<&NatsTls>) -> Result<(), Diagnostic> {
    let Some(tls) = tls else {
        return Ok(());
    };
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(config.option_error("tls", "`tls.cert` and `tls.key` go together"));
    }
    for (name, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
        if let Some(path) = path {
            if !std::path::Path::new(path).is_file() {
                return Err(config.option_error("tls", format!("`tls.{name}`: no file `{path}`")));
            }
        }
    }
    Ok(())
}

fn check_subject(config: &ComponentConfig, subject: &str) -> Result<SubjectTemplate, Diagnostic> {
    SubjectTemplate::parse(subject).map_err(|e| config.option_error("subject", e))
}

impl NatsSourceOptions {
    /// Parses and checks.
    pub fn from_config(config: &ComponentConfig) -> Result<Self, Diagnostic> {
        let o: Self = config.options()?;
        check_url(config, &o.url)?;
        check_tls(config, o.tls.as_ref())?;
        if o.subjects.is_empty() || o.subjects.iter().any(|s| s.trim().is_empty()) {
            return Err(config.option_error(
                "subjects",
                "`subjects` needs at least one non-empty subject",
            ));
        }
        if o.capacity == 0 {
            return Err(config.option_error("capacity", "`capacity` must be at least 1"));
        }
        Ok(o)
    }
}

impl NatsSinkOptions {
    /// Parses and checks.
    pub(crate) fn from_config(
        config: &ComponentConfig,
    ) -> Result<(Self, SubjectTemplate), Diagnostic> {
        let o: Self = config.options()?;
        check_url(config, &o.url)?;
        check_tls(config, o.tls.as_ref())?;
        let t = check_subject(config, &o.subject)?;
        Ok((o, t))
    }
}

impl JetStreamSourceOptions {
    /// Parses and checks.
    pub fn from_config(config: &ComponentConfig) -> Result<Self, Diagnostic> {
        let o: Self = config.options()?;
        check_url(config, &o.url)?;
        check_tls(config, o.tls.as_ref())?;
        if o.stream.trim().is_empty() {
            return Err(config.option_error("stream", "`stream` must not be empty"));
        }
        if o.consumer.trim().is_empty() {
            return Err(config.option_error("consumer", "`consumer` must not be empty"));
        }
        if o.create_stream && o.subjects.is_empty() {
            return Err(config.option_error(
                "create_stream",
                "`create_stream` needs `subjects` for the new stream",
            ));
        }
        if o.max_ack_pending < 1 {
            return Err(
                config.option_error("max_ack_pending", "`max_ack_pending` must be at least 1")
            );
        }
        if o.max_deliver < 1 {
            return Err(config.option_error("max_deliver", "`max_deliver` must be at least 1"));
        }
        Ok(o)
    }
}

impl JetStreamSinkOptions {
    /// Parses and checks.
    pub(crate) fn from_config(
        config: &ComponentConfig,
    ) -> Result<(Self, SubjectTemplate), Diagnostic> {
        let o: Self = config.options()?;
        check_url(config, &o.url)?;
        check_tls(config, o.tls.as_ref())?;
        if o.max_inflight_batches == 0 {
            return Err(config.option_error(
                "max_inflight_batches",
                "`max_inflight_batches` must be at least 1",
            ));
        }
        let t = check_subject(config, &o.subject)?;
        Ok((o, t))
    }
}
