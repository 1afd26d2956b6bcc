//! Decoding the pgoutput logical replication protocol (version 1) into
//! change events: one JSON object per inserted, updated or deleted row and
//! per truncated table.
//!
//! Event value:
//! `{"op","schema","table","key","before","after","lsn","xid","commit_ts","seq"}`
//! (`seq`: the change's index in its transaction, so `(lsn, seq)` names
//! one change, the same in every replay)
//! (and `"unchanged"`: columns whose TOASTed value did not change and was
//! not sent). The event key is the JSON object of the replica identity
//! columns (normally the primary key), so every change of a row lands on
//! the same shard; tables without one (or with `REPLICA IDENTITY FULL`)
//! give unkeyed events.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::json::{write_str, write_value};
use super::lsn::Lsn;

/// A column of a published table.
#[derive(Debug, Clone)]
pub struct Column {
    /// `"name":`, escaped once.
    pub json_name: Vec<u8>,
    /// Type OID.
    pub type_oid: u32,
    /// Part of the replica identity (the event key).
    pub key: bool,
}

/// A published table as the stream last described it.
#[derive(Debug, Clone)]
pub struct Relation {
    /// `"schema":"…","table":"…"`, escaped once.
    pub json_header: Vec<u8>,
    /// `schema.table`, for messages.
    pub name: String,
    /// The columns, in table order.
    pub columns: Vec<Column>,
    /// Whether any column is a key column (else events are unkeyed).
    pub keyed: bool,
}

impl Relation {
    /// Describes a table from its schema, name and `(name, type, is_key)` columns.
    pub fn new(
        schema: &str,
        table: &str,
        columns: impl IntoIterator<Item = (String, u32, bool)>,
    ) -> Relation {
        let mut json_header = Vec::new();
        json_header.extend_from_slice(b"\"schema\":");
        write_str(&mut json_header, schema.as_bytes());
        json_header.extend_from_slice(b",\"table\":");
        write_str(&mut json_header, table.as_bytes());
        let columns: Vec<Column> = columns
            .into_iter()
            .map(|(name, type_oid, key)| {
                let mut json_name = Vec::with_capacity(name.len() + 3);
                write_str(&mut json_name, name.as_bytes());
                json_name.push(b':');
                Column {
                    json_name,
                    type_oid,
                    key,
                }
            })
            .collect();
        Relation {
            json_header,
            name: format!("{schema}.{table}"),
            keyed: columns.iter().any(|c| c.key),
            columns,
        }
    }
}

/// One column's value in a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datum<'a> {
    /// SQL NULL.
    Null,
    /// A TOASTed value that did not change and was not sent.
    Unchanged,
    /// The value in text form.
    Text(&'a [u8]),
}

/// A row's values by column index: decoded in place from a replication
/// message, or a slice (the snapshot's rows).
pub trait Row {
    /// How many values the row has.
    fn len(&self) -> usize;
    /// Whether the row has no values.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The value of column `i` (NULL past the end).
    fn datum(&self, i: usize) -> Datum<'_>;
}

impl Row for [Datum<'_>] {
    fn len(&self) -> usize {
        <[Datum<'_>]>::len(self)
    }

    fn datum(&self, i: usize) -> Datum<'_> {
        self.get(i).copied().unwrap_or(Datum::Null)
    }
}

/// A tuple of a replication message, read in place: `(kind, start, len)`
/// per column into the message, so decoding a row allocates nothing.
struct RawTuple<'a> {
    msg: &'a [u8],
    cols: &'a [(u8, usize, usize)],
}

impl Row for RawTuple<'_> {
    fn len(&self) -> usize {
        self.cols.len()
    }

    fn datum(&self, i: usize) -> Datum<'_> {
        match self.cols.get(i) {
            Some(&(b'u', _, _)) => Datum::Unchanged,
            Some(&(b't', start, len)) => Datum::Text(&self.msg[start..start + len]),
            _ => Datum::Null,
        }
    }
}

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A row read by the initial snapshot.
    Read,
    /// `INSERT`
    Insert,
    /// `UPDATE`
    Update,
    /// `DELETE`
    Delete,
    /// `TRUNCATE`
    Truncate,
}

impl Op {
    fn json(self) -> &'static [u8] {
        match self {
            Op::Read => b"{\"op\":\"read\",",
            Op::Insert => b"{\"op\":\"insert\",",
            Op::Update => b"{\"op\":\"update\",",
            Op::Delete => b"{\"op\":\"delete\",",
            Op::Truncate => b"{\"op\":\"truncate\",",
        }
    }
}

/// What a replication message meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A transaction began.
    Begin,
    /// A change event: its key and value.
    Change(Option<Bytes>, Bytes),
    /// An update that changed the row's key: it must not overtake the old
    /// key's earlier changes (on another shard), nor be overtaken by them.
    KeyChange(Option<Bytes>, Bytes),
    /// Several events (a truncate of several tables).
    Changes(Vec<Bytes>),
    /// The transaction committed; confirming `end` acknowledges it.
    Commit {
        /// The position after the commit record.
        end: Lsn,
    },
    /// Nothing to hand on (a relation or type description, an origin).
    Nothing,
}

/// Writes change events; buffers are reused from event to event.
#[derive(Debug, Default)]
pub struct EventWriter {
    scratch: Vec<u8>,
    key: Vec<u8>,
    unchanged: Vec<u8>,
    arena: BytesMut,
}

impl EventWriter {
    /// Writes one change; `txn` is `"lsn":…,"xid":…,"commit_ts":…` of its
    /// transaction. Returns the key (if the table has one) and the value.
    pub fn change<R: Row + ?Sized>(
        &mut self,
        op: Op,
        rel: &Relation,
        before: Option<(&R, bool)>,
        after: Option<&R>,
        txn: &[u8],
        seq: u64,
    ) -> (Option<Bytes>, Bytes) {
        let v = &mut self.scratch;
        v.clear();
        self.key.clear();
        self.unchanged.clear();
        v.extend_from_slice(op.json());
        v.extend_from_slice(&rel.json_header);
        // the key comes from the new row, or the old one for a delete
        let key_source = after.or(before.map(|(d, _)| d));
        if let (true, Some(row)) = (rel.keyed, key_source) {
            self.key.push(b'{');
            for (i, c) in rel.columns.iter().take(row.len()).enumerate() {
                if c.key {
                    if self.key.len() > 1 {
                        self.key.push(b',');
                    }
                    self.key.extend_from_slice(&c.json_name);
                    write_datum(&mut self.key, c.type_oid, row.datum(i));
                }
            }
            self.key.push(b'}');
            v.extend_from_slice(b",\"key\":");
            v.extend_from_slice(&self.key);
        } else {
            v.extend_from_slice(b",\"key\":null");
        }
        v.extend_from_slice(b",\"before\":");
        match before {
            Some((datums, key_only)) => write_row(v, rel, datums, key_only, &mut self.unchanged),
            None => v.extend_from_slice(b"null"),
        }
        v.extend_from_slice(b",\"after\":");
        self.unchanged.clear();
        match after {
            Some(datums) => write_row(v, rel, datums, false, &mut self.unchanged),
            None => v.extend_from_slice(b"null"),
        }
        v.push(b',');
        v.extend_from_slice(txn);
        write_seq(v, seq);
        if !self.unchanged.is_empty() {
            v.extend_from_slice(b",\"unchanged\":[");
            v.extend_from_slice(&self.unchanged);
            v.push(b']');
        }
        v.push(b'}');
        let key = (rel.keyed && key_source.is_some()).then(|| self.freeze_key());
        (key, self.freeze_value())
    }

    /// Writes a truncate event for one table.
    pub fn truncate(&mut self, rel: &Relation, txn: &[u8], seq: u64) -> Bytes {
        let v = &mut self.scratch;
        v.clear();
        v.extend_from_slice(Op::Truncate.json());
        v.extend_from_slice(&rel.json_header);
        v.extend_from_slice(b",\"key\":null,\"before\":null,\"after\":null,");
        v.extend_from_slice(txn);
        write_seq(v, seq);
        v.push(b'}');
        self.freeze_value()
    }

    fn freeze_value(&mut self) -> Bytes {
        Self::freeze(&mut self.arena, &self.scratch)
    }

    fn freeze_key(&mut self) -> Bytes {
        Self::freeze(&mut self.arena, &self.key)
    }

    /// Copies into a shared arena and splits it off: one allocation per
    /// 256 KiB of events instead of one per event.
    fn freeze(arena: &mut BytesMut, data: &[u8]) -> Bytes {
        if arena.capacity() < data.len() {
            *arena = BytesMut::with_capacity((256 * 1024).max(data.len()));
        }
        arena.put_slice(data);
        arena.split().freeze()
    }
}

fn write_seq(out: &mut Vec<u8>, seq: u64) {
    out.extend_from_slice(b",\"seq\":");
    crate::numbers::put_u64(out, seq);
}

fn write_datum(out: &mut Vec<u8>, type_oid: u32, d: Datum<'_>) {
    match d {
        Datum::Null | Datum::Unchanged => out.extend_from_slice(b"null"),
        Datum::Text(t) => write_value(out, type_oid, t),
    }
}

fn write_row<R: Row + ?Sized>(
    out: &mut Vec<u8>,
    rel: &Relation,
    row: &R,
    key_only: bool,
    unchanged: &mut Vec<u8>,
) {
    out.push(b'{');
    let mut first = true;
    for (i, c) in rel.columns.iter().take(row.len()).enumerate() {
        if key_only && !c.key {
            continue;
        }
        let d = row.datum(i);
        if d == Datum::Unchanged {
            if !unchanged.is_empty() {
                unchanged.push(b',');
            }
            unchanged.extend_from_slice(&c.json_name[..c.json_name.len() - 1]);
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&c.json_name);
        write_datum(out, c.type_oid, d);
    }
    out.push(b'}');
}

/// Microseconds since 2000-01-01 UTC as RFC 3339 (`2024-01-02T03:04:05.123456Z`).
pub fn format_pg_time(micros: i64) -> String {
    const PG_EPOCH_DAYS: i64 = 10_957; // 1970-01-01 → 2000-01-01
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400) + PG_EPOCH_DAYS;
    let tod = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

/// Decodes pgoutput messages, keeping the relations the stream described.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
    txn: Vec<u8>,
    datums_old: Vec<(u8, usize, usize)>,
    datums_new: Vec<(u8, usize, usize)>,
    /// Writes the events.
    pub writer: EventWriter,
    /// Commit time of the current transaction, in ms since the Unix epoch.
    pub commit_ms: i64,
    /// Changes so far in the current transaction.
    seq: u64,
}

fn short(what: &str) -> String {
    format!("pgoutput: truncated {what} message")
}

fn cstr<'a>(b: &mut &'a [u8], what: &str) -> Result<&'a str, String> {
    let end = b.iter().position(|c| *c == 0).ok_or_else(|| short(what))?;
    let s = std::str::from_utf8(&b[..end])
        .map_err(|_| format!("pgoutput: {what}: name is not UTF-8"))?;
    *b = &b[end + 1..];
    Ok(s)
}

fn need(b: &[u8], n: usize, what: &str) -> Result<(), String> {
    if b.len() < n {
        Err(short(what))
    } else {
        Ok(())
    }
}

/// Reads tuple data into `(kind, start, len)` triples relative to `base`.
fn read_tuple(
    b: &mut &[u8],
    base: *const u8,
    out: &mut Vec<(u8, usize, usize)>,
) -> Result<(), String> {
    out.clear();
    need(b, 2, "tuple")?;
    let n = b.get_i16();
    for _ in 0..n {
        need(b, 1, "tuple")?;
        let kind = b.get_u8();
        match kind {
            b'n' | b'u' => out.push((kind, 0, 0)),
            b't' => {
                need(b, 4, "tuple")?;
                let len = b.get_i32().max(0) as usize;
                need(b, len, "tuple")?;
                let start = b.as_ptr() as usize - base as usize;
                out.push((kind, start, len));
                b.advance(len);
            }
            other => {
                return Err(format!(
                    "pgoutput: unknown tuple value kind `{}`",
                    other as char
                ))
            }
        }
    }
    Ok(())
}

impl Decoder {
    /// A decoder that knows no relations yet.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes one pgoutput message (the payload of an `XLogData`).
    pub fn decode(&mut self, msg: &[u8]) -> Result<Decoded, String> {
        let base = msg.as_ptr();
        let mut b = msg;
        need(b, 1, "empty")?;
        let tag = b.get_u8();
        match tag {
            b'B' => {
                need(b, 20, "Begin")?;
                let final_lsn = Lsn(b.get_u64());
                let ts = b.get_i64();
                let xid = b.get_u32();
                self.commit_ms = ts.div_euclid(1000) + 946_684_800_000;
                self.seq = 0;
                self.txn.clear();
                self.txn.extend_from_slice(b"\"lsn\":\"");
                self.txn.extend_from_slice(final_lsn.to_string().as_bytes());
                self.txn.extend_from_slice(b"\",\"xid\":");
                crate::numbers::put_u64(&mut self.txn, u64::from(xid));
                self.txn.extend_from_slice(b",\"commit_ts\":\"");
                self.txn.extend_from_slice(format_pg_time(ts).as_bytes());
                self.txn.push(b'"');
                Ok(Decoded::Begin)
            }
            b'C' => {
                need(b, 25, "Commit")?;
                let _flags = b.get_u8();
                let _commit = b.get_u64();
                let end = Lsn(b.get_u64());
                Ok(Decoded::Commit { end })
            }
            b'R' => {
                need(b, 4, "Relation")?;
                let id = b.get_u32();
                let schema = cstr(&mut b, "Relation")?;
                let schema = if schema.is_empty() { "pg_catalog" } else { schema };
                let table = cstr(&mut b, "Relation")?;
                need(b, 3, "Relation")?;
                let identity = b.get_u8();
                let n = b.get_i16();
                let mut columns = Vec::with_capacity(n.max(0) as usize);
                for _ in 0..n {
                    need(b, 1, "Relation")?;
                    let flags = b.get_u8();
                    let name = cstr(&mut b, "Relation")?.to_string();
                    need(b, 8, "Relation")?;
                    let type_oid = b.get_u32();
                    let _typmod = b.get_i32();
                    // with REPLICA IDENTITY FULL every column is flagged:
                    // such a "key" is the whole row, useless for routing
                    columns.push((name, type_oid, flags & 1 == 1 && identity != b'f'));
                }
                self.relations.insert(id, Relation::new(schema, table, columns));
                Ok(Decoded::Nothing)
            }
            b'I' | b'U' | b'D' => {
                need(b, 5, "change")?;
                let id = b.get_u32();
                let rel = self
                    .relations
                    .get(&id)
                    .ok_or_else(|| format!("pgoutput: change for unknown relation {id}"))?;
                let mut old_kind = None;
                let mut new = false;
                while !b.is_empty() {
                    let part = b.get_u8();
                    match part {
                        b'K' | b'O' => {
                            read_tuple(&mut b, base, &mut self.datums_old)?;
                            old_kind = Some(part);
                        }
                        b'N' => {
                            read_tuple(&mut b, base, &mut self.datums_new)?;
                            new = true;
                        }
                        other => {
                            return Err(format!(
                                "pgoutput: unknown tuple marker `{}`",
                                other as char
                            ))
                        }
                    }
                }
                let old = old_kind.map(|k| {
                    let t = RawTuple {
                        msg,
                        cols: &self.datums_old,
                    };
                    (t, k == b'K')
                });
                let new = new.then_some(RawTuple {
                    msg,
                    cols: &self.datums_new,
                });
                let op = match tag {
                    b'I' => Op::Insert,
                    b'U' => Op::Update,
                    _ => Op::Delete,
                };
                let (key, value) = self.writer.change(
                    op,
                    rel,
                    old.as_ref().map(|(t, k)| (t, *k)),
                    new.as_ref(),
                    &self.txn,
                    self.seq,
                );
                self.seq += 1;
                // an update sends the old key (`K`) only when the key changed
                if op == Op::Update && old_kind == Some(b'K') && rel.keyed {
                    return Ok(Decoded::KeyChange(key, value));
                }
                Ok(Decoded::Change(key, value))
            }
            b'T' => {
                need(b, 5, "Truncate")?;
                let n = b.get_u32();
                let _options = b.get_u8();
                let mut events = Vec::new();
                for _ in 0..n {
                    need(b, 4, "Truncate")?;
                    let id = b.get_u32();
                    let rel = self
                        .relations
                        .get(&id)
                        .ok_or_else(|| format!("pgoutput: truncate of unknown relation {id}"))?;
                    events.push(self.writer.truncate(rel, &self.txn, self.seq));
                    self.seq += 1;
                }
                Ok(Decoded::Changes(events))
            }
            b'Y' | b'O' | b'M' => Ok(Decoded::Nothing),
            other => Err(format!(
                "pgoutput: unknown message `{}` (is the slot's plugin pgoutput, protocol version 1?)",
                other as char
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation_msg() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        m.extend_from_slice(b"public\0orders\0d");
        m.extend_from_slice(&3i16.to_be_bytes());
        for (flags, name, oid) in [(1u8, "id", 23u32), (0, "note", 25), (0, "doc", 3802)] {
            m.push(flags);
            m.extend_from_slice(name.as_bytes());
            m.push(0);
            m.extend_from_slice(&oid.to_be_bytes());
            m.extend_from_slice(&(-1i32).to_be_bytes());
        }
        m
    }

    fn tuple(m: &mut Vec<u8>, values: &[Option<&str>]) {
        m.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            match v {
                None => m.push(b'n'),
                Some("\u{0}unchanged") => m.push(b'u'),
                Some(s) => {
                    m.push(b't');
                    m.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    m.extend_from_slice(s.as_bytes());
                }
            }
        }
    }

    fn begin() -> Vec<u8> {
        let mut m = vec![b'B'];
        m.extend_from_slice(&0x1_0000_0100u64.to_be_bytes());
        m.extend_from_slice(&0i64.to_be_bytes());
        m.extend_from_slice(&77u32.to_be_bytes());
        m
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn insert_update_delete_become_events() {
        let mut d = Decoder::new();
        assert_eq!(d.decode(&relation_msg()).unwrap(), Decoded::Nothing);
        assert_eq!(d.decode(&begin()).unwrap(), Decoded::Begin);
        let mut ins = vec![b'I'];
        ins.extend_from_slice(&16384u32.to_be_bytes());
        ins.push(b'N');
        tuple(&mut ins, &[Some("7"), None, Some("{\"a\":1}")]);
        let Decoded::Change(Some(key), value) = d.decode(&ins).unwrap() else {
            panic!("not a keyed change")
        };
        assert_eq!(text(&key), "{\"id\":7}");
        assert_eq!(
            text(&value),
            "{\"op\":\"insert\",\"schema\":\"public\",\"table\":\"orders\",\"key\":{\"id\":7},\
             \"before\":null,\"after\":{\"id\":7,\"note\":null,\"doc\":{\"a\":1}},\
             \"lsn\":\"1/100\",\"xid\":77,\"commit_ts\":\"2000-01-01T00:00:00.000000Z\",\"seq\":0}"
        );
        let mut upd = vec![b'U'];
        upd.extend_from_slice(&16384u32.to_be_bytes());
        upd.push(b'K');
        tuple(&mut upd, &[Some("6"), None, None]);
        upd.push(b'N');
        tuple(&mut upd, &[Some("7"), Some("x"), Some("\u{0}unchanged")]);
        let Decoded::KeyChange(_, value) = d.decode(&upd).unwrap() else {
            panic!("a key change")
        };
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(v["before"], serde_json::json!({"id": 6}));
        assert_eq!(v["after"], serde_json::json!({"id": 7, "note": "x"}));
        assert_eq!(v["unchanged"], serde_json::json!(["doc"]));
        assert_eq!(v["seq"], 1);
        let mut del = vec![b'D'];
        del.extend_from_slice(&16384u32.to_be_bytes());
        del.push(b'K');
        tuple(&mut del, &[Some("7"), None, None]);
        let Decoded::Change(Some(key), value) = d.decode(&del).unwrap() else {
            panic!()
        };
        assert_eq!(text(&key), "{\"id\":7}");
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(v["op"], "delete");
        assert_eq!(v["after"], serde_json::Value::Null);
        let mut commit = vec![b'C', 0];
        commit.extend_from_slice(&0x1_0000_0100u64.to_be_bytes());
        commit.extend_from_slice(&0x1_0000_0180u64.to_be_bytes());
        commit.extend_from_slice(&0i64.to_be_bytes());
        assert_eq!(
            d.decode(&commit).unwrap(),
            Decoded::Commit {
                end: Lsn(0x1_0000_0180)
            }
        );
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        let mut d = Decoder::new();
        assert!(d.decode(b"").is_err());
        assert!(d.decode(b"Bxx").is_err());
        assert!(d
            .decode(&[b'I', 0, 0, 0, 9, b'N'])
            .unwrap_err()
            .contains("unknown relation"));
        let mut rel = relation_msg();
        rel.truncate(rel.len() - 3);
        assert!(d.decode(&rel).is_err());
        assert!(d.decode(b"Z").unwrap_err().contains("unknown message"));
    }

    #[test]
    fn commit_time_is_rfc3339() {
        assert_eq!(format_pg_time(0), "2000-01-01T00:00:00.000000Z");
        // 2024-02-29 12:34:56.789 UTC
        let micros = (1_709_210_096_789_000i64) - 946_684_800_000_000;
        assert_eq!(format_pg_time(micros), "2024-02-29T12:34:56.789000Z");
    }
}
