//! The initial snapshot: every existing row of the published tables, read
//! in the snapshot a new replication slot exported, so the stream that
//! follows starts exactly where the copy ends (no gap, no duplicate).

use std::collections::HashSet;
use std::time::Instant;

use weir_engine::telemetry::names;
use weir_engine::{Error, Event, Origin, Result, Routing, SourceContext};

/// A progress line is logged every this many rows of a table.
const PROGRESS_EVERY: u64 = 100_000;

use super::lsn::Lsn;
use super::pgoutput::{Datum, EventWriter, Op, Relation};
use super::progress::Progress;
use super::wire::{quote_ident, quote_literal, Connection, PgError};

/// Copies the published tables' rows as `op = "read"` events, all in the
/// exported snapshot `snapshot_name`, dispatched by key. Returns how many rows.
pub async fn copy_tables(
    conn: &mut Connection,
    ctx: &mut SourceContext,
    progress: &mut Progress,
    publication: &str,
    snapshot_name: &str,
    consistent_point: Lsn,
    fetch: usize,
) -> Result<u64> {
    let name = ctx.name().to_string();
    let pg = |what: &str, e: PgError| {
        Error::external(format!(
            "postgres-cdc source `{name}`: snapshot: {what}: {e}"
        ))
    };
    conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| pg("begin", e))?;
    conn.query(&format!(
        "SET TRANSACTION SNAPSHOT {}",
        quote_literal(snapshot_name)
    ))
    .await
    .map_err(|e| pg("setting the exported snapshot", e))?;
    // what the stream will send is what the snapshot reads: the published
    // columns and rows (column lists and row filters, Postgres 15+), and a
    // table without its inheritance children (they are published, or not,
    // on their own); a partitioned table is read whole
    let major: u32 = conn
        .server_version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (columns, filter) = if major >= 15 {
        (
            "(SELECT string_agg(quote_ident(a), ', ') FROM unnest(t.attnames) a)",
            "t.rowfilter",
        )
    } else {
        ("NULL", "NULL")
    };
    let tables = conn
        .query(&format!(
            "SELECT t.schemaname, t.tablename, {columns}, {filter}, c.relkind \
             FROM pg_publication_tables t \
             JOIN pg_namespace n ON n.nspname = t.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename \
             WHERE t.pubname = {} ORDER BY 1, 2",
            quote_literal(publication)
        ))
        .await
        .map_err(|e| pg("listing the publication's tables", e))?;
    let txn = format!("\"lsn\":\"{consistent_point}\",\"xid\":null,\"commit_ts\":null");
    let mut writer = EventWriter::default();
    let batch_max = ctx.batch_settings().max_events.max(1);
    let mut total = 0u64;
    let started = Instant::now();
    for row in &tables.rows {
        let (Some(Some(schema)), Some(Some(table))) = (row.first(), row.get(1)) else {
            continue;
        };
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let keys = key_columns(conn, &qualified)
            .await
            .map_err(|e| pg(&qualified, e))?;
        let columns = row.get(2).cloned().flatten().unwrap_or_else(|| "*".into());
        let only = if row.get(4).cloned().flatten().as_deref() == Some("p") {
            ""
        } else {
            "ONLY "
        };
        let filter = match row.get(3).cloned().flatten() {
            Some(f) => format!(" WHERE {f}"),
            None => String::new(),
        };
        conn.query(&format!(
            "DECLARE weir_snapshot NO SCROLL CURSOR FOR SELECT {columns} FROM {only}{qualified}{filter}"
        ))
        .await
        .map_err(|e| pg(&qualified, e))?;
        let mut relation: Option<Relation> = None;
        let mut rows_of_table = 0u64;
        let table_started = Instant::now();
        loop {
            let page = conn
                .query(&format!("FETCH {fetch} FROM weir_snapshot"))
                .await
                .map_err(|e| pg(&qualified, e))?;
            if page.rows.is_empty() {
                break;
            }
            let rel = relation.get_or_insert_with(|| {
                Relation::new(
                    schema,
                    table,
                    page.columns
                        .iter()
                        .zip(&page.types)
                        .map(|(c, t)| (c.clone(), *t, keys.contains(c))),
                )
            });
            let mut events = Vec::with_capacity(batch_max.min(page.rows.len()));
            let mut datums = Vec::with_capacity(page.columns.len());
            for r in &page.rows {
                datums.clear();
                datums.extend(r.iter().map(|v| match v {
                    Some(t) => Datum::Text(t.as_bytes()),
                    None => Datum::Null,
                }));
                let offset = progress.next_event();
                let (key, value) = writer.change(
                    Op::Read,
                    rel,
                    None,
                    Some(datums.as_slice()),
                    txn.as_bytes(),
                    offset,
                );
                events.push(Event {
                    key,
                    value,
                    headers: Vec::new(),
                    timestamp_ms: crate::control::now_ms(),
                    origin: Origin {
                        offset,
                        ..Origin::default()
                    },
                });
                if events.len() >= batch_max {
                    dispatch(ctx, progress, &mut events).await?;
                }
            }
            dispatch(ctx, progress, &mut events).await?;
            let before = rows_of_table;
            rows_of_table += page.rows.len() as u64;
            metrics::counter!(names::PG_CDC_SNAPSHOT_ROWS, "source" => name.clone())
                .increment(page.rows.len() as u64);
            if before / PROGRESS_EVERY != rows_of_table / PROGRESS_EVERY {
                tracing::info!(
                    source = %name, table = %qualified, rows = rows_of_table,
                    rows_per_s = (rows_of_table as f64 / table_started.elapsed().as_secs_f64().max(1e-3)).round(),
                    "snapshot in progress"
                );
            }
            if ctx.is_shutdown() {
                return Err(Error::external(format!(
                    "postgres-cdc source `{name}`: shutdown during the initial snapshot; it starts over at the next run"
                )));
            }
        }
        conn.query("CLOSE weir_snapshot")
            .await
            .map_err(|e| pg(&qualified, e))?;
        total += rows_of_table;
        tracing::info!(
            source = %name, table = %qualified, rows = rows_of_table, total,
            elapsed_s = started.elapsed().as_secs_f64(),
            "snapshot copied a table"
        );
    }
    conn.query("COMMIT").await.map_err(|e| pg("commit", e))?;
    Ok(total)
}

async fn dispatch(
    ctx: &mut SourceContext,
    progress: &mut Progress,
    events: &mut Vec<Event>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(events);
    let end = progress.counter;
    ctx.dispatch(0, batch, end, Routing::Key).await?;
    progress.dispatched = end;
    Ok(())
}

/// The columns the change stream flags as the key: the primary key (replica
/// identity default) or the replica identity index; none for `FULL`/`NOTHING`.
async fn key_columns(conn: &mut Connection, qualified: &str) -> Result<HashSet<String>, PgError> {
    let rows = conn
        .query(&format!(
            "SELECT a.attname FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = {}::regclass \
             AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))",
            quote_literal(qualified)
        ))
        .await?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}
