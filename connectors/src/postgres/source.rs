//! The `postgres-cdc` source: committed inserts, updates, deletes and
//! truncates of the published tables, in commit order, from a logical
//! replication slot (pgoutput).
//!
//! At-least-once: the slot's confirmed position only moves past a
//! transaction once every event of it was acked by the sinks, so after a
//! crash the server sends again what was not confirmed (duplicates only
//! after the last confirmed position, never a gap). Events are keyed by the
//! row's replica identity (normally the primary key) and routed by key, so
//! each row's changes stay in order across shards. A full shard stops the
//! reading of the stream; a separate task keeps sending status updates so
//! the server does not time the connection out. A lost connection is
//! re-established with backoff. With `single_active`, an advisory lock
//! lets one process stream while others wait to take over.

use std::time::Duration;

use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::driver::drive;
use weir_engine::{Error, Result, Source, SourceContext};

use super::cdc_config::{qualified, CdcOptions, SnapshotMode};
use super::conninfo::ConnInfo;
use super::feed::CdcConnector;
use super::lsn::Lsn;
use super::progress::Progress;
use super::snapshot::copy_tables;
use super::wire::{quote_ident, quote_literal, Connection, PgError};
use crate::pending::Pending;

/// Builds a `postgres-cdc` source.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let (options, info) = CdcOptions::from_config(config)?;
    Ok(Box::new(CdcSource { options, info }))
}

/// Streams a publication through a logical replication slot.
#[derive(Debug)]
pub struct CdcSource {
    options: CdcOptions,
    info: ConnInfo,
}

/// Where a waiting process checks the lock again.
const LOCK_POLL: Duration = Duration::from_millis(500);

/// The longest wait between attempts to connect again while standing by.
const LOCK_BACKOFF_MAX: Duration = Duration::from_secs(5);

#[async_trait]
impl Source for CdcSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let CdcSource { options: o, info } = *self;
        let name = ctx.name().to_string();
        let fail = |what: &str, e: PgError| classify(&name, &info, what, e);
        let mut lock = None;
        if o.single_active {
            let shutdown = ctx.shutdown();
            tokio::select! {
                _ = shutdown => return Ok(()), // shut down while waiting
                taken = acquire_lock(&info, &o.slot, &name) => {
                    lock = Some(taken.map_err(|e| fail("advisory lock", e))?);
                }
            }
        }
        let mut conn = Connection::connect(&info, true)
            .await
            .map_err(|e| fail("connecting for replication", e))?;
        ensure_publication(&mut conn, &o)
            .await
            .map_err(|e| fail("publication", e))?;
        let mut progress = Progress::new(Lsn(0));
        let slot = find_slot(&mut conn, &o.slot)
            .await
            .map_err(|e| fail("replication slot", e))?;
        match slot {
            Some(confirmed) => progress.confirmed = confirmed,
            None if !o.create_slot => {
                return Err(Error::user(format!(
                    "postgres-cdc source `{name}`: replication slot `{}` does not exist in database `{}` and `create_slot` is false",
                    o.slot, info.dbname
                )))
            }
            None if o.snapshot == SnapshotMode::Initial => {
                match snapshot_then_slot(&info, &o, &mut ctx, &mut progress).await? {
                    Some(point) => progress.confirmed = point,
                    None => return Ok(()), // shut down during the snapshot
                }
            }
            None => {
                let rows = conn
                    .query(&format!(
                        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
                        quote_ident(&o.slot)
                    ))
                    .await
                    .map_err(|e| fail("creating the replication slot", e))?;
                progress.confirmed = rows
                    .rows
                    .first()
                    .and_then(|r| r.get(1).cloned().flatten())
                    .and_then(|l| Lsn::parse(&l))
                    .unwrap_or_default();
                tracing::info!(source = %name, slot = %o.slot, at = %progress.confirmed, "created the replication slot");
            }
        }
        let pending = Pending::new(ctx.batch_settings(), ctx.batch_wait());
        let mut connector = CdcConnector::new(name.clone(), info.clone(), o, progress, pending);
        connector.lock = lock;
        connector.first = Some(conn);
        drive(connector, &mut ctx).await
    }
}

/// The error of a failed step: retryable when the failure is transient,
/// with a hint for missing privileges.
pub(crate) fn classify(name: &str, info: &ConnInfo, what: &str, e: PgError) -> Error {
    let hint = match e.code() {
        Some("42501") if what.contains("replication") => {
            "; the role needs the REPLICATION attribute (ALTER ROLE … REPLICATION) or superuser"
        }
        Some("42501") => "; the role needs ownership of the tables (to create the publication) or an existing publication",
        _ => "",
    };
    let msg = format!("postgres-cdc source `{name}` ({info}): {what}: {e}{hint}");
    if e.is_transient() {
        Error::retryable(msg)
    } else {
        Error::external(msg)
    }
}

/// Waits for the advisory lock of `slot`, polling (cancel it to stop
/// waiting). A first connection that fails is an error (a wrong URL is
/// reported at start); once connected, a lost connection (the server
/// restarting, a failover) is made again with backoff, since a standby
/// must outlive its server's restarts.
pub(crate) async fn acquire_lock(
    info: &ConnInfo,
    slot: &str,
    name: &str,
) -> Result<Connection, PgError> {
    let mut conn = Some(Connection::connect(info, false).await?);
    let sql = format!(
        "SELECT pg_try_advisory_lock(hashtext({}))",
        quote_literal(&format!("weir-postgres-cdc/{slot}"))
    );
    let mut waiting = false;
    let mut backoff = LOCK_POLL;
    loop {
        let answer = match conn.as_mut() {
            Some(c) => c.query(&sql).await.map(|rows| rows.scalar() == Some("t")),
            None => match Connection::connect(info, false).await {
                Ok(c) => {
                    tracing::info!(source = %name, slot, "connected again; waiting for the slot's lock");
                    conn = Some(c);
                    backoff = LOCK_POLL;
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        match answer {
            Ok(true) => {
                if waiting {
                    tracing::info!(source = %name, slot, "took over: this process now streams the slot");
                }
                return Ok(conn.take().expect("connected"));
            }
            Ok(false) => {
                if !waiting {
                    tracing::info!(source = %name, slot, "another process streams this slot; standing by to take over");
                    waiting = true;
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(source = %name, slot, error = %e, retry_in = ?backoff,
                    "the connection waiting for the slot's lock failed; connecting again");
                conn = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LOCK_BACKOFF_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates the publication for `tables` if it does not exist.
async fn ensure_publication(conn: &mut Connection, o: &CdcOptions) -> Result<(), PgError> {
    let exists = conn
        .query(&format!(
            "SELECT 1 FROM pg_publication WHERE pubname = {}",
            quote_literal(&o.publication)
        ))
        .await?;
    if !exists.rows.is_empty() {
        return Ok(());
    }
    if o.tables.is_empty() {
        return Err(PgError::Server {
            code: "42704".into(),
            message: format!("publication `{}` does not exist", o.publication),
            detail: Some(format!(
                "create it (CREATE PUBLICATION {} FOR TABLE ...) or list `tables` so weir creates it",
                quote_ident(&o.publication)
            )),
        });
    }
    let tables: Vec<String> = o.tables.iter().map(|t| qualified(t)).collect();
    conn.query(&format!(
        "CREATE PUBLICATION {} FOR TABLE {}",
        quote_ident(&o.publication),
        tables.join(", ")
    ))
    .await?;
    tracing::info!(publication = %o.publication, tables = ?o.tables, "created the publication");
    Ok(())
}

/// The slot's confirmed position, or `None` when it does not exist. A slot
/// of another database or plugin is an error.
async fn find_slot(conn: &mut Connection, slot: &str) -> Result<Option<Lsn>, PgError> {
    let rows = conn
        .query(&format!(
            "SELECT plugin, database = current_database(), confirmed_flush_lsn, slot_type \
             FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ))
        .await?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let col = |i: usize| row.get(i).cloned().flatten();
    let refuse = |why: String| PgError::Server {
        code: "55000".into(),
        message: format!("replication slot `{slot}` {why}"),
        detail: None,
    };
    if col(3).as_deref() != Some("logical") || col(0).as_deref() != Some("pgoutput") {
        return Err(refuse(format!(
            "is not a logical pgoutput slot (plugin {:?})",
            col(0)
        )));
    }
    if col(1).as_deref() != Some("t") {
        return Err(refuse("belongs to another database".into()));
    }
    Ok(Some(
        col(2).as_deref().and_then(Lsn::parse).unwrap_or_default(),
    ))
}

/// Creates the slot with an initial snapshot. The snapshot is read from a
/// temporary slot's exported snapshot; only when every copied row is acked
/// is the temporary slot copied to the permanent one (same start
/// position). A crash before that leaves no slot, so the next run starts
/// the snapshot over: no gap. Returns the slot's start position, or `None`
/// after a shutdown.
async fn snapshot_then_slot(
    info: &ConnInfo,
    o: &CdcOptions,
    ctx: &mut SourceContext,
    progress: &mut Progress,
) -> Result<Option<Lsn>> {
    let name = ctx.name().to_string();
    let fail = |what: &str, e: PgError| {
        Error::external(format!(
            "postgres-cdc source `{name}` ({info}): snapshot: {what}: {e}"
        ))
    };
    let temp = format!("{}_snap", &o.slot[..o.slot.len().min(58)]);
    let mut holder = Connection::connect(info, true)
        .await
        .map_err(|e| fail("connecting for replication", e))?;
    let created = holder
        .query(&format!(
            "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(&temp)
        ))
        .await
        .map_err(|e| fail("creating a temporary slot", e))?;
    let row = created.rows.first().cloned().unwrap_or_default();
    let point = row
        .get(1)
        .cloned()
        .flatten()
        .and_then(|l| Lsn::parse(&l))
        .ok_or_else(|| {
            Error::external("postgres-cdc: the server did not return a consistent point")
        })?;
    let snapshot_name = row
        .get(2)
        .cloned()
        .flatten()
        .ok_or_else(|| Error::external("postgres-cdc: the server did not export a snapshot"))?;
    tracing::info!(source = %name, at = %point, "initial snapshot started");
    let mut copier = Connection::connect(info, false)
        .await
        .map_err(|e| fail("connecting", e))?;
    let rows = match copy_tables(
        &mut copier,
        ctx,
        progress,
        &o.publication,
        &snapshot_name,
        point,
        o.snapshot_fetch,
    )
    .await
    {
        Ok(rows) => rows,
        Err(_) if ctx.is_shutdown() => {
            ctx.drain().await;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // every copied row must be durable before the slot exists
    let drained = ctx.drain().await;
    let cps = ctx.take_checkpoints();
    progress.acked(&cps, true);
    if ctx.is_shutdown() && (!drained || progress.acked < progress.counter) {
        return Ok(None);
    }
    if progress.acked < progress.counter {
        return Err(Error::external(format!(
            "postgres-cdc source `{name}`: {} snapshot rows failed delivery; the slot is not created and the snapshot starts over at the next run",
            progress.counter - progress.acked
        )));
    }
    copier
        .query(&format!(
            "SELECT pg_copy_logical_replication_slot({}, {}, false)",
            quote_literal(&temp),
            quote_literal(&o.slot)
        ))
        .await
        .map_err(|e| fail("creating the replication slot", e))?;
    copier.close().await;
    holder.close().await;
    tracing::info!(source = %name, rows, slot = %o.slot, at = %point, "initial snapshot done; created the replication slot");
    Ok(Some(point))
}
