//! Options of the `generator` source and their validation.

use std::time::Duration;

use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};

use super::plan::MAX_PARTITIONS;
use crate::template::Template;

/// The default payload template.
pub const DEFAULT_PAYLOAD: &str = r#"{"id":{{seq}},"amount":{{rand:0:200}}}"#;

/// Options of the `generator` source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorOptions {
    /// Events to generate before the source ends; default none: unbounded.
    #[serde(default)]
    pub count: Option<u64>,
    /// Events per second over all partitions, paced per batch; default
    /// none: as fast as the pipeline takes them. Must be above 0.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Payload template with `{{seq}}`, `{{partition}}`, `{{key}}`,
    /// `{{ts}}` and `{{rand:LO:HI}}` placeholders; default
    /// [`DEFAULT_PAYLOAD`].
    #[serde(default = "default_payload")]
    pub payload: String,
    /// Number of distinct keys: event `seq` gets the key `key-{seq % n}`
    /// and is routed to shards by key; default none: unkeyed events,
    /// routed by partition. At least 1.
    #[serde(default)]
    pub key_cardinality: Option<u64>,
    /// Number of partitions; default 0: one per shard. At most 65536.
    #[serde(default)]
    pub partitions: u32,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            count: None,
            rate: None,
            payload: default_payload(),
            key_cardinality: None,
            partitions: 0,
        }
    }
}

fn default_payload() -> String {
    DEFAULT_PAYLOAD.to_string()
}

/// Validated options.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Events in total, if bounded.
    pub(crate) count: Option<u64>,
    /// Events per second, if paced.
    pub(crate) rate: Option<f64>,
    /// The parsed payload.
    pub(crate) template: Template,
    /// Distinct keys, if keyed.
    pub(crate) key_cardinality: Option<u64>,
    /// Partitions; 0 = one per shard.
    pub(crate) partitions: u32,
}

impl Settings {
    /// Checks `options`; errors are reported at the offending option.
    pub(crate) fn from_options(
        options: GeneratorOptions,
        config: &ComponentConfig,
    ) -> Result<Settings, Diagnostic> {
        Settings::check(options).map_err(|(key, message)| config.option_error(key, message))
    }

    /// Checks `options`; an error names the option and what is wrong.
    pub(crate) fn check(options: GeneratorOptions) -> Result<Settings, (&'static str, String)> {
        if let Some(rate) = options.rate {
            if !(rate.is_finite() && rate > 0.0) || Duration::try_from_secs_f64(1.0 / rate).is_err()
            {
                return Err((
                    "rate",
                    format!("`rate` must be a positive number of events per second, found {rate}"),
                ));
            }
        }
        if options.key_cardinality == Some(0) {
            return Err((
                "key_cardinality",
                "`key_cardinality` must be at least 1".to_string(),
            ));
        }
        if options.partitions > MAX_PARTITIONS {
            return Err((
                "partitions",
                format!(
                    "`partitions` must be at most {MAX_PARTITIONS}, found {}",
                    options.partitions
                ),
            ));
        }
        let template = Template::parse(&options.payload)
            .map_err(|e| ("payload", format!("`payload`: {e}")))?;
        if template.uses_key() && options.key_cardinality.is_none() {
            return Err((
                "payload",
                "`payload` uses `{{key}}` but events have no key; set `key_cardinality`"
                    .to_string(),
            ));
        }
        Ok(Settings {
            count: options.count,
            rate: options.rate,
            template,
            key_cardinality: options.key_cardinality,
            partitions: options.partitions,
        })
    }
}
