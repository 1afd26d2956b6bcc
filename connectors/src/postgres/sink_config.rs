//! Options of the `postgres` sink.

use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};

use super::cdc_config::check_conninfo;
use super::conninfo::ConnInfo;

/// How events become rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Each event (a JSON object) is inserted as a row (default).
    #[default]
    Insert,
    /// Each event (a JSON object) is inserted, or updates the row with the
    /// same key; within a batch the last event of a key wins.
    Upsert,
    /// Events are change events of the `postgres-cdc` source: inserts,
    /// updates and snapshot reads upsert `after`, deletes remove the row
    /// by `key`, truncates empty the table. Replaying changes converges
    /// to the same rows, so a restart that repeats some leaves no duplicate.
    Changes,
}

/// Options of the `postgres` sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSinkOptions {
    /// Connection string, `postgres://user:password@host:port/database` (required).
    pub url: String,
    /// Target table, `schema.table` or `table` (in `public`) (required).
    pub table: String,
    /// `"insert"` (default), `"upsert"` or `"changes"`.
    #[serde(default)]
    pub mode: WriteMode,
    /// Key columns for `upsert` and `changes`; default the table's primary key.
    #[serde(default)]
    pub key: Vec<String>,
}

impl PgSinkOptions {
    /// Parses and checks.
    pub fn from_config(config: &ComponentConfig) -> Result<(Self, ConnInfo), Diagnostic> {
        let o: Self = config.options()?;
        let info = check_conninfo(config, &o.url)?;
        if o.table.trim().is_empty() || o.table.split('.').count() > 2 {
            return Err(config.option_error("table", "`table` is `name` or `schema.name`"));
        }
        if o.mode == WriteMode::Insert && !o.key.is_empty() {
            return Err(config.option_error("key", "`key` is for mode = \"upsert\" or \"changes\""));
        }
        Ok((o, info))
    }
}
