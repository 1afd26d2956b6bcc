//! Options of the `postgres-cdc` source.

use std::time::Duration;

use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};

use super::conninfo::ConnInfo;

/// Whether to copy the existing rows before streaming changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Only changes committed after the slot was created (default).
    #[default]
    Never,
    /// When weir creates the slot, first emit every existing row of the
    /// published tables (`op = "read"`) from the slot's own snapshot.
    Initial,
}

/// Options of the `postgres-cdc` source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcOptions {
    /// Connection string, `postgres://user:password@host:port/database`
    /// (required). The role needs the `REPLICATION` attribute.
    pub url: String,
    /// Publication to stream (required). Created for `tables` if missing.
    pub publication: String,
    /// Tables (`schema.table` or `table` for `public`) of a publication
    /// weir creates; ignored when the publication exists.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Logical replication slot (required): the server keeps the changes
    /// weir has not confirmed in it.
    pub slot: String,
    /// Create the slot when it is missing; default true. With false, a
    /// missing slot is an error.
    #[serde(default = "yes")]
    pub create_slot: bool,
    /// `"never"` (default) or `"initial"`: copy existing rows when the slot
    /// is created.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Rows fetched per round trip while snapshotting; default 10000.
    #[serde(default = "default_snapshot_fetch")]
    pub snapshot_fetch: usize,
    /// Hold a Postgres advisory lock so only one process streams the slot;
    /// others wait and take over when it dies. Default true.
    #[serde(default = "yes")]
    pub single_active: bool,
    /// How often a standby status update (the confirmed position) is sent
    /// even when nothing moved; default 10s. Keep it below the server's
    /// `wal_sender_timeout`.
    #[serde(
        default = "default_status_interval",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub status_interval: Duration,
    /// Longest wait between reconnection attempts after the server went
    /// away; default 10s.
    #[serde(
        default = "default_max_backoff",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub max_reconnect_backoff: Duration,
}

fn yes() -> bool {
    true
}

fn default_snapshot_fetch() -> usize {
    10_000
}

fn default_status_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

/// Checks a connection string option.
pub(crate) fn check_conninfo(config: &ComponentConfig, url: &str) -> Result<ConnInfo, Diagnostic> {
    ConnInfo::parse(url)
        .map_err(|e| config.option_error("url", format!("bad connection string: {e}")))
}

/// Checks a Postgres name (slot, publication): what the server accepts
/// unquoted for a slot, so it is also safe to quote anywhere.
fn check_slot_name(config: &ComponentConfig, key: &str, name: &str) -> Result<(), Diagnostic> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(config.option_error(
            key,
            format!("`{name}` is not a valid name: use 1 to 63 lower-case letters, digits and underscores"),
        ))
    }
}

impl CdcOptions {
    /// Parses and checks.
    pub fn from_config(config: &ComponentConfig) -> Result<(Self, ConnInfo), Diagnostic> {
        let o: Self = config.options()?;
        let info = check_conninfo(config, &o.url)?;
        check_slot_name(config, "slot", &o.slot)?;
        if o.publication.trim().is_empty() {
            return Err(config.option_error("publication", "`publication` must not be empty"));
        }
        if o.tables
            .iter()
            .any(|t| t.trim().is_empty() || t.split('.').count() > 2)
        {
            return Err(config.option_error("tables", "each table is `name` or `schema.name`"));
        }
        if o.snapshot_fetch == 0 {
            return Err(
                config.option_error("snapshot_fetch", "`snapshot_fetch` must be at least 1")
            );
        }
        if o.status_interval.is_zero() {
            return Err(
                config.option_error("status_interval", "`status_interval` must be above zero")
            );
        }
        Ok((o, info))
    }
}

/// `schema.table` (or `table`, meaning `public.table`) as a quoted name.
pub(crate) fn qualified(table: &str) -> String {
    use super::wire::quote_ident;
    match table.split_once('.') {
        Some((schema, name)) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        None => format!("public.{}", quote_ident(table)),
    }
}
