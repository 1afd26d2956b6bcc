//! The `postgres` sink: each batch is written in one transaction (one
//! round trip): the batch's JSON objects are expanded by the server with
//! `jsonb_populate_recordset` into the table's columns (a field per
//! column, by name; a missing field is NULL), then inserted, upserted by
//! key, or applied as change events (see [`WriteMode`]). A batch is acked
//! once its transaction committed.
//!
//! Errors: a lost connection or a transient server state (shutdown,
//! serialization failure, deadlock) is retried on a new connection; data
//! errors (a constraint, a value that does not fit its column) fail the
//! batch, which goes to the dead-letter sink with the server's message.

use std::collections::HashMap;

use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Error, Event, Result, Sink};

use super::cdc_config::qualified;
use super::conninfo::ConnInfo;
use super::json::write_str;
use super::sink_config::{PgSinkOptions, WriteMode};
use super::wire::{quote_ident, quote_literal, Connection, PgError};

/// Builds a `postgres` sink.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    let (options, info) = PgSinkOptions::from_config(config)?;
    Ok(Box::new(PgSink {
        name: config.name.clone(),
        table: qualified(&options.table),
        options,
        info,
        conn: None,
        statements: None,
        sql: String::new(),
        source_table: None,
    }))
}

/// Writes batches to a table.
#[derive(Debug)]
pub struct PgSink {
    name: String,
    options: PgSinkOptions,
    info: ConnInfo,
    /// The quoted table name.
    table: String,
    conn: Option<Connection>,
    statements: Option<Statements>,
    sql: String,
    /// `changes` mode: the source table whose changes this sink applies
    /// (the first one seen); changes of another table are refused.
    source_table: Option<(String, String)>,
}

/// The SQL around a batch's JSON, built once from the table's columns.
#[derive(Debug)]
struct Statements {
    /// `INSERT … FROM jsonb_populate_recordset(NULL::t, ` … `::jsonb) s ON CONFLICT …`
    upsert_head: String,
    upsert_tail: String,
    /// `DELETE … WHERE (key) IN (SELECT key FROM jsonb_populate_recordset(NULL::t, ` … `))`
    delete_head: String,
    delete_tail: String,
    /// `UPDATE … SET (non-key columns) = (… jsonb_populate_record(current row, change) …)`
    /// around the JSON: updates that left TOASTed columns out keep their values.
    patch_head: String,
    patch_tail: String,
    /// `UPDATE … SET (all columns) = …` around an old key and a new row: a
    /// key change that left TOASTed columns out moves the row.
    move_head: String,
    move_tail: String,
    /// Key column names, as in the events' `key` objects.
    key: Vec<String>,
}

impl PgSink {
    fn fail(&self, what: &str, e: PgError) -> Error {
        let msg = format!(
            "postgres sink `{}` ({}, table {}): {what}: {e}",
            self.name, self.info, self.table
        );
        if e.is_transient() {
            Error::retryable(msg)
        } else {
            Error::external(msg)
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let mut conn = Connection::connect(&self.info, false)
            .await
            .map_err(|e| self.fail("connecting", e))?;
        if self.statements.is_none() {
            let s = self.prepare(&mut conn).await?;
            self.statements = Some(s);
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// Reads the table's columns and key and builds the statements.
    async fn prepare(&self, conn: &mut Connection) -> Result<Statements> {
        let table = quote_literal(&self.table);
        let columns = conn
            .query(&format!(
                "SELECT attname FROM pg_attribute WHERE attrelid = {table}::regclass \
                 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
            ))
            .await
            .map_err(|e| self.fail("reading the table's columns", e))?;
        let columns: Vec<String> = columns
            .rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        let key = if self.options.key.is_empty() && self.options.mode != WriteMode::Insert {
            let rows = conn
                .query(&format!(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a \
                     ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = {table}::regclass AND i.indisprimary \
                     ORDER BY array_position(i.indkey, a.attnum)"
                ))
                .await
                .map_err(|e| self.fail("reading the table's primary key", e))?;
            let key: Vec<String> = rows
                .rows
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            if key.is_empty() {
                return Err(Error::user(format!(
                    "postgres sink `{}`: table {} has no primary key; set `key` to the columns that identify a row",
                    self.name, self.table
                )));
            }
            key
        } else {
            self.options.key.clone()
        };
        if let Some(missing) = key.iter().find(|k| !columns.contains(k)) {
            return Err(Error::user(format!(
                "postgres sink `{}`: key column `{missing}` is not a column of {}",
                self.name, self.table
            )));
        }
        let cols = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let keys = key
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let w_keys = key
            .iter()
            .map(|c| format!("w.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let non_key = columns
            .iter()
            .filter(|c| !key.contains(c))
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let conflict = if key.is_empty() {
            String::new()
        } else {
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !key.contains(c))
                .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
                .collect();
            if updates.is_empty() {
                format!(" ON CONFLICT ({keys}) DO NOTHING")
            } else {
                format!(" ON CONFLICT ({keys}) DO UPDATE SET {}", updates.join(", "))
            }
        };
        Ok(Statements {
            upsert_head: format!(
                "INSERT INTO {t} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{t}, ",
                t = self.table
            ),
            upsert_tail: format!("::jsonb) AS s{conflict}"),
            delete_head: format!(
                "DELETE FROM {t} WHERE ({keys}) IN (SELECT {keys} FROM jsonb_populate_recordset(NULL::{t}, ",
                t = self.table
            ),
            delete_tail: "::jsonb))".to_string(),
            patch_head: if non_key.is_empty() {
                String::new()
            } else {
                format!("UPDATE {t} AS w SET ({non_key}) = (SELECT {non_key} FROM jsonb_populate_record(w, e.j)) \
                     FROM jsonb_array_elements(", t = self.table)
            },
            patch_tail: format!(
                "::jsonb) AS e(j) WHERE ({w_keys}) = (SELECT {keys} FROM jsonb_populate_record(NULL::{t}, e.j))",
                t = self.table
            ),
            move_head: format!(
                "UPDATE {t} AS w SET ({cols}) = (SELECT {cols} FROM jsonb_populate_record(w, e.j->'a')) \
                 FROM jsonb_array_elements(",
                t = self.table
            ),
            move_tail: format!(
                "::jsonb) AS e(j) WHERE ({w_keys}) = (SELECT {keys} FROM jsonb_populate_record(NULL::{t}, e.j->'k'))",
                t = self.table
            ),
            key,
        })
    }

    /// Builds the batch's SQL into `self.sql`.
    fn build_sql(&mut self, events: &[Event]) -> Result<()> {
        let s = self.statements.as_ref().expect("prepared before writing");
        self.sql.clear();
        match self.options.mode {
            WriteMode::Insert => {
                for e in events {
                    check_object(&self.name, e)?;
                }
                let rows: Vec<&[u8]> = events.iter().map(|e| e.value.as_ref()).collect();
                push_statement(&mut self.sql, &s.upsert_head, &rows, &s.upsert_tail);
            }
            WriteMode::Upsert => {
                // the last event of a key wins (ON CONFLICT cannot touch a row twice)
                let mut last: HashMap<String, usize> = HashMap::new();
                for (i, e) in events.iter().enumerate() {
                    let v: serde_json::Value = parse_object(&self.name, e)?;
                    last.insert(key_of(&self.name, &v, &s.key)?, i);
                }
                let mut keep: Vec<usize> = last.into_values().collect();
                keep.sort_unstable();
                let rows: Vec<&[u8]> = keep.iter().map(|&i| events[i].value.as_ref()).collect();
                push_statement(&mut self.sql, &s.upsert_head, &rows, &s.upsert_tail);
            }
            WriteMode::Changes => {
                // segments between truncates; in each, the last change of a key wins
                let mut segment: Vec<(String, Change)> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                for e in events {
                    let v = parse_object(&self.name, e)?;
                    let op = v.get("op").and_then(|o| o.as_str()).unwrap_or("");
                    match op {
                        "insert" | "update" | "read" => {
                            let after = v.get("after").cloned().unwrap_or_default();
                            if !after.is_object() {
                                return Err(bad_event(
                                    &self.name,
                                    format!("a `{op}` change has no `after` object"),
                                ));
                            }
                            check_table(&self.name, &mut self.source_table, &v)?;
                            let new = key_of(&self.name, &after, &s.key)?;
                            // TOASTed values the update did not send keep theirs
                            let partial = v
                                .get("unchanged")
                                .and_then(|u| u.as_array())
                                .is_some_and(|u| !u.is_empty());
                            let mut moved = None;
                            if let Some(before) = v.get("before").filter(|b| b.is_object()) {
                                let old = key_of(&self.name, before, &s.key)?;
                                if old != new {
                                    moved = Some((old, before.clone()));
                                }
                            }
                            match (moved, partial) {
                                (None, false) => upsert_change(
                                    &mut segment,
                                    &mut index,
                                    new,
                                    Change::Upsert(after),
                                ),
                                (None, true) => upsert_change(
                                    &mut segment,
                                    &mut index,
                                    new,
                                    Change::Patch(after),
                                ),
                                // a changed key: the old row goes
                                (Some((old, before)), false) => {
                                    upsert_change(
                                        &mut segment,
                                        &mut index,
                                        old,
                                        Change::Delete(before),
                                    );
                                    upsert_change(
                                        &mut segment,
                                        &mut index,
                                        new,
                                        Change::Upsert(after),
                                    );
                                }
                                // a changed key without some columns: they come
                                // from the old row, in this batch or in the table
                                (Some((old, before)), true) => {
                                    let whole =
                                        index.get(&old).and_then(|&i| match &mut segment[i].1 {
                                            Change::Upsert(row) => {
                                                let mut row = std::mem::take(row);
                                                segment[i].1 = Change::Delete(before.clone());
                                                merge(&mut row, after.clone());
                                                Some(row)
                                            }
                                            _ => None,
                                        });
                                    match whole {
                                        Some(row) => upsert_change(
                                            &mut segment,
                                            &mut index,
                                            new,
                                            Change::Upsert(row),
                                        ),
                                        None => {
                                            flush_changes(
                                                &mut self.sql,
                                                s,
                                                &mut segment,
                                                &mut index,
                                            );
                                            let pair = serde_json::json!({"k": before, "a": after})
                                                .to_string();
                                            push_statement(
                                                &mut self.sql,
                                                &s.move_head,
                                                &[pair.as_bytes()],
                                                &s.move_tail,
                                            );
                                        }
                                    }
                                }
                            }
                        }
                        "delete" => {
                            let old = v
                                .get("key")
                                .filter(|k| k.is_object())
                                .or_else(|| v.get("before").filter(|b| b.is_object()))
                                .cloned()
                                .ok_or_else(|| {
                                    bad_event(
                                        &self.name,
                                        "a delete has no `key` or `before` object".into(),
                                    )
                                })?;
                            check_table(&self.name, &mut self.source_table, &v)?;
                            let key = key_of(&self.name, &old, &s.key)?;
                            upsert_change(&mut segment, &mut index, key, Change::Delete(old));
                        }
                        "truncate" => {
                            check_table(&self.name, &mut self.source_table, &v)?;
                            flush_changes(&mut self.sql, s, &mut segment, &mut index);
                            self.sql.push_str(&format!("TRUNCATE {};", self.table));
                        }
                        other => {
                            return Err(bad_event(
                                &self.name,
                                format!("unknown change op `{other}`"),
                            ))
                        }
                    }
                }
                flush_changes(&mut self.sql, s, &mut segment, &mut index);
            }
        }
        Ok(())
    }
}

/// One row's net change within a segment.
#[derive(Debug)]
enum Change {
    /// The whole row.
    Upsert(serde_json::Value),
    /// Some columns of an existing row (the rest were not sent).
    Patch(serde_json::Value),
    /// Remove the row with this key.
    Delete(serde_json::Value),
}

fn upsert_change(
    segment: &mut Vec<(String, Change)>,
    index: &mut HashMap<String, usize>,
    key: String,
    change: Change,
) {
    match index.get(&key) {
        Some(&i) => {
            // a patch over a whole row (or another patch) is merged into it
            let previous = std::mem::replace(&mut segment[i].1, Change::Delete(Default::default()));
            segment[i].1 = match (previous, change) {
                (Change::Upsert(mut row), Change::Patch(p)) => {
                    merge(&mut row, p);
                    Change::Upsert(row)
                }
                (Change::Patch(mut row), Change::Patch(p)) => {
                    merge(&mut row, p);
                    Change::Patch(row)
                }
                (_, change) => change,
            }
        }
        None => {
            index.insert(key.clone(), segment.len());
            segment.push((key, change));
        }
    }
}

fn merge(row: &mut serde_json::Value, patch: serde_json::Value) {
    if let (Some(row), serde_json::Value::Object(patch)) = (row.as_object_mut(), patch) {
        row.extend(patch);
    }
}

fn flush_changes(
    sql: &mut String,
    s: &Statements,
    segment: &mut Vec<(String, Change)>,
    index: &mut HashMap<String, usize>,
) {
    let mut deletes = Vec::new();
    let mut upserts = Vec::new();
    let mut patches = Vec::new();
    for (_, c) in segment.drain(..) {
        match c {
            Change::Upsert(v) => upserts.push(v.to_string().into_bytes()),
            Change::Patch(v) => patches.push(v.to_string().into_bytes()),
            Change::Delete(v) => deletes.push(v.to_string().into_bytes()),
        }
    }
    index.clear();
    let deletes: Vec<&[u8]> = deletes.iter().map(Vec::as_slice).collect();
    let upserts: Vec<&[u8]> = upserts.iter().map(Vec::as_slice).collect();
    let patches: Vec<&[u8]> = patches.iter().map(Vec::as_slice).collect();
    push_statement(sql, &s.delete_head, &deletes, &s.delete_tail);
    if !s.patch_head.is_empty() && !patches.is_empty() {
        push_statement(sql, &s.patch_head, &patches, &s.patch_tail);
    }
    push_statement(sql, &s.upsert_head, &upserts, &s.upsert_tail);
}

/// In `changes` mode one sink applies one source table's changes.
fn check_table(
    sink: &str,
    seen: &mut Option<(String, String)>,
    v: &serde_json::Value,
) -> Result<()> {
    let name = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_string();
    let this = (name("schema"), name("table"));
    match seen {
        None => {
            *seen = Some(this);
            Ok(())
        }
        Some(first) if *first == this => Ok(()),
        Some(first) => Err(bad_event(
            sink,
            format!(
                "in `changes` mode a sink applies one table's changes: it got {}.{} after {}.{}; \
                 route each table to its own sink (a `route` step on .table)",
                this.0, this.1, first.0, first.1
            ),
        )),
    }
}

/// Appends `head '[row,row]' tail;` unless there are no rows.
fn push_statement(sql: &mut String, head: &str, rows: &[&[u8]], tail: &str) {
    if rows.is_empty() {
        return;
    }
    sql.push_str(head);
    sql.push_str("'[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        // a string literal: quotes doubled (standard_conforming_strings)
        let text = String::from_utf8_lossy(r);
        if text.contains('\'') {
            sql.push_str(&text.replace('\'', "''"));
        } else {
            sql.push_str(&text);
        }
    }
    sql.push_str("]'");
    sql.push_str(tail);
    sql.push(';');
}

fn bad_event(sink: &str, why: String) -> Error {
    Error::user(format!("postgres sink `{sink}`: {why}"))
}

fn parse_object(sink: &str, e: &Event) -> Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&e.value)
        .map_err(|err| bad_event(sink, format!("the event is not JSON: {err}")))?;
    if !v.is_object() {
        return Err(bad_event(sink, "the event is not a JSON object".into()));
    }
    Ok(v)
}

/// Fails unless the event is one JSON object (checked without building it).
fn check_object(sink: &str, e: &Event) -> Result<()> {
    let first = e.value.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(bad_event(sink, "the event is not a JSON object".into()));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&e.value)
        .map(|_| ())
        .map_err(|err| bad_event(sink, format!("the event is not JSON: {err}")))
}

/// The key columns' values of a row object, as one comparable string; an
/// object without every key column is a bad event.
fn key_of(sink: &str, row: &serde_json::Value, key: &[String]) -> Result<String> {
    let mut out = Vec::new();
    for k in key {
        let Some(v) = row.get(k) else {
            return Err(bad_event(
                sink,
                format!("key column `{k}` is missing from {row}"),
            ));
        };
        write_str(&mut out, k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b',');
    }
    Ok(String::from_utf8(out).unwrap_or_default())
}

#[async_trait]
impl Sink for PgSink {
    async fn open(&mut self) -> Result<()> {
        self.connect().await
    }

    async fn write(&mut self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if self.conn.is_none() {
            self.connect().await?;
        }
        self.build_sql(events)?;
        if self.sql.is_empty() {
            return Ok(());
        }
        let conn = self.conn.as_mut().expect("connected above");
        // several statements in one simple query run as one transaction
        match conn.query(&self.sql).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if matches!(e, PgError::Io(_) | PgError::Protocol(_)) {
                    self.conn = None;
                }
                Err(self.fail("writing a batch", e))
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements() -> Statements {
        Statements {
            upsert_head: "UP(".into(),
            upsert_tail: ")".into(),
            delete_head: "DEL(".into(),
            delete_tail: ")".into(),
            patch_head: "PATCH(".into(),
            patch_tail: ")".into(),
            move_head: "MOVE(".into(),
            move_tail: ")".into(),
            key: vec!["id".into()],
        }
    }

    fn sink(mode: WriteMode) -> PgSink {
        PgSink {
            name: "t".into(),
            options: PgSinkOptions {
                url: String::new(),
                table: "t".into(),
                mode,
                key: vec![],
            },
            info: ConnInfo::parse("postgres://x").unwrap(),
            table: "public.\"t\"".into(),
            conn: None,
            statements: Some(statements()),
            sql: String::new(),
            source_table: None,
        }
    }

    fn events(values: &[&str]) -> Vec<Event> {
        values.iter().map(|v| Event::new(v.to_string())).collect()
    }

    #[test]
    fn upsert_keeps_the_last_event_of_a_key_and_escapes_quotes() {
        let mut s = sink(WriteMode::Upsert);
        s.build_sql(&events(&[
            r#"{"id":1,"v":"a"}"#,
            r#"{"id":2,"v":"it's"}"#,
            r#"{"id":1,"v":"b"}"#,
        ]))
        .unwrap();
        assert_eq!(s.sql, r#"UP('[{"id":2,"v":"it''s"},{"id":1,"v":"b"}]');"#);
    }

    #[test]
    fn changes_net_out_per_key_and_split_at_truncates() {
        let mut s = sink(WriteMode::Changes);
        s.build_sql(&events(&[
            r#"{"op":"insert","key":{"id":1},"after":{"id":1,"v":"a"}}"#,
            r#"{"op":"delete","key":{"id":1},"before":{"id":1}}"#,
            r#"{"op":"insert","key":{"id":2},"after":{"id":2,"v":"x"}}"#,
            r#"{"op":"truncate","key":null}"#,
            r#"{"op":"update","key":{"id":4},"before":{"id":3},"after":{"id":4,"v":"moved"}}"#,
        ]))
        .unwrap();
        assert_eq!(
            s.sql,
            concat!(
                r#"DEL('[{"id":1}]');UP('[{"id":2,"v":"x"}]');TRUNCATE public."t";"#,
                r#"DEL('[{"id":3}]');UP('[{"id":4,"v":"moved"}]');"#
            )
        );
        // an update that left a TOASTed column out patches the row; after
        // an insert in the same batch it is merged into the whole row
        s.build_sql(&events(&[
            r#"{"op":"update","key":{"id":5},"after":{"id":5,"v":"p"},"unchanged":["big"]}"#,
            r#"{"op":"insert","key":{"id":6},"after":{"id":6,"v":"a","big":"B"}}"#,
            r#"{"op":"update","key":{"id":6},"after":{"id":6,"v":"b"},"unchanged":["big"]}"#,
        ]))
        .unwrap();
        let check = ";";
        assert!(
            s.sql
                .starts_with(&format!(r#"PATCH('[{{"id":5,"v":"p"}}]'){check}"#)),
            "{}",
            s.sql
        );
        assert!(
            s.sql.ends_with(r#"UP('[{"big":"B","id":6,"v":"b"}]');"#),
            "{}",
            s.sql
        );
        // a key change without the TOASTed column: from the batch's row, or moved in the table
        s.build_sql(&events(&[
            r#"{"op":"insert","key":{"id":8},"after":{"id":8,"v":"a","big":"B"}}"#,
            r#"{"op":"update","key":{"id":9},"before":{"id":8},"after":{"id":9,"v":"b"},"unchanged":["big"]}"#,
        ]))
        .unwrap();
        assert_eq!(
            s.sql,
            r#"DEL('[{"id":8}]');UP('[{"big":"B","id":9,"v":"b"}]');"#
        );
        s.build_sql(&events(&[
            r#"{"op":"update","key":{"id":9},"before":{"id":8},"after":{"id":9,"v":"b"},"unchanged":["big"]}"#,
        ]))
        .unwrap();
        assert!(
            s.sql.starts_with(&format!(
                r#"MOVE('[{{"a":{{"id":9,"v":"b"}},"k":{{"id":8}}}}]'){check}"#
            )),
            "{}",
            s.sql
        );
        assert!(s
            .build_sql(&events(&[r#"{"op":"delete","key":{"other":1}}"#]))
            .unwrap_err()
            .message
            .contains("key column `id` is missing"));
        assert!(s
            .build_sql(&events(&["{\"op\":\"merge\"}"]))
            .unwrap_err()
            .message
            .contains("merge"));
        assert!(s
            .build_sql(&events(&["nope"]))
            .unwrap_err()
            .message
            .contains("not JSON"));
        // one table per sink
        let mut s = sink(WriteMode::Changes);
        s.build_sql(&events(&[
            r#"{"op":"delete","schema":"public","table":"a","key":{"id":1}}"#,
        ]))
        .unwrap();
        assert!(s
            .build_sql(&events(&[
                r#"{"op":"truncate","schema":"public","table":"b"}"#
            ]))
            .unwrap_err()
            .message
            .contains("route each table"));
    }
}
