//! A small Postgres frontend over TCP: startup and authentication (trust,
//! password, MD5, SCRAM-SHA-256), simple queries with text results, and the
//! copy-both stream of a replication connection.
//!
//! `tokio-postgres` cannot open a replication stream, and weir needs only
//! the simple-query protocol (every value in text form, which is what
//! pgoutput sends too), so one client serves the change feed, the
//! snapshot, the advisory lock and the sink.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conninfo::{ConnInfo, SslMode};

/// An error from the server (`ErrorResponse`) or the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgError {
    /// The server refused: SQLSTATE code, message and optional detail/hint.
    Server {
        /// SQLSTATE, e.g. `42P01`.
        code: String,
        /// The primary message.
        message: String,
        /// DETAIL and HINT, if any.
        detail: Option<String>,
    },
    /// The connection failed or broke.
    Io(String),
    /// The server sent something this client does not understand.
    Protocol(String),
}

impl PgError {
    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: connection loss, a server
    /// shutting down or starting, a slot held by another process,
    /// serialization failures and deadlocks.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Io(_) => true,
            PgError::Protocol(_) => false,
            PgError::Server { code, .. } => {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code.starts_with("53")
                    || matches!(code.as_str(), "55006" | "40001" | "40P01" | "55P03")
            }
        }
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Server {
                code,
                message,
                detail,
            } => {
                write!(f, "{message} (SQLSTATE {code})")?;
                if let Some(d) = detail {
                    write!(f, "; {d}")?;
                }
                Ok(())
            }
            PgError::Io(e) => write!(f, "connection error: {e}"),
            PgError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl std::error::Error for PgError {}

impl From<std::io::Error> for PgError {
    fn from(e: std::io::Error) -> Self {
        PgError::Io(e.to_string())
    }
}

/// The rows of a simple query: column names and type OIDs, and values in
/// text form (`None` is SQL NULL).
#[derive(Debug, Default, Clone)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Column type OIDs.
    pub types: Vec<u32>,
    /// The rows.
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    /// The first value of the first row, if any and not NULL.
    pub fn scalar(&self) -> Option<&str> {
        self.rows.first()?.first()?.as_deref()
    }
}

/// A message of a copy-both stream.
#[derive(Debug)]
pub enum CopyMessage {
    /// A `CopyData` payload.
    Data(Bytes),
    /// The server ended the copy (`CopyDone`), or the stream ended cleanly.
    Done,
}

/// One frontend connection.
pub struct Connection {
    reader: ReadSide,
    writer: WriteSide,
    /// The server's version, from its `server_version` parameter.
    pub server_version: String,
}

/// The receiving half of a connection (a replication stream's reader).
pub struct ReadSide {
    reader: Box<dyn AsyncRead + Send + Sync + Unpin>,
    rbuf: BytesMut,
}

/// The sending half of a connection (a replication stream's status updates).
pub struct WriteSide {
    writer: Box<dyn AsyncWrite + Send + Sync + Unpin>,
    wbuf: BytesMut,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("server_version", &self.server_version)
            .finish()
    }
}

/// A backend message: its tag and body.
struct Message {
    tag: u8,
    body: Bytes,
}

impl Connection {
    /// Connects and logs in. With `replication`, the session is a logical
    /// replication connection (`replication=database`), which also runs SQL.
    pub async fn connect(info: &ConnInfo, replication: bool) -> Result<Connection, PgError> {
        let addr = format!("{}:{}", info.host, info.port);
        let stream = tokio::time::timeout(info.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| PgError::Io(format!("connecting to {addr} timed out")))?
            .map_err(|e| PgError::Io(format!("connecting to {addr}: {e}")))?;
        stream.set_nodelay(true)?;
        let (reader, writer) = tokio::time::timeout(info.connect_timeout, secure(stream, info))
            .await
            .map_err(|_| PgError::Io(format!("the TLS handshake with {addr} timed out")))??;
        let mut conn = Connection {
            reader: ReadSide {
                reader,
                rbuf: BytesMut::with_capacity(64 * 1024),
            },
            writer: WriteSide {
                writer,
                wbuf: BytesMut::with_capacity(8 * 1024),
            },
            server_version: String::new(),
        };
        let login = conn.login(info, replication);
        tokio::time::timeout(info.connect_timeout, login)
            .await
            .map_err(|_| PgError::Io(format!("logging in to {addr} timed out")))??;
        Ok(conn)
    }

    async fn login(&mut self, info: &ConnInfo, replication: bool) -> Result<(), PgError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &info.user),
            ("database", &info.dbname),
            ("application_name", "weir"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "iso_8601"),
            ("extra_float_digits", "3"),
            // literals are quoted by doubling quotes only: backslashes must not escape
            ("standard_conforming_strings", "on"),
        ];
        if replication {
            params.push(("replication", "database"));
        }
        frontend::startup_message(params.iter().copied(), &mut self.writer.wbuf)?;
        self.writer.flush().await?;
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            let m = self.reader.read_message().await?;
            match m.tag {
                b'R' => {
                    let mut body = m.body.clone();
                    if body.len() < 4 {
                        return Err(PgError::Protocol("short authentication message".into()));
                    }
                    let kind = body.get_i32();
                    let password = || {
                        info.password.as_deref().ok_or_else(|| PgError::Server {
                            code: "28P01".into(),
                            message: format!(
                                "the server asks for a password for role `{}` and the connection string has none",
                                info.user
                            ),
                            detail: None,
                        })
                    };
                    match kind {
                        0 => {} // AuthenticationOk
                        3 => {
                            frontend::password_message(password()?.as_bytes(), &mut self.writer.wbuf)?;
                            self.writer.flush().await?;
                        }
                        5 => {
                            if body.len() < 4 {
                                return Err(PgError::Protocol("short MD5 salt".into()));
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash =
                                md5_hash(info.user.as_bytes(), password()?.as_bytes(), salt);
                            frontend::password_message(hash.as_bytes(), &mut self.writer.wbuf)?;
                            self.writer.flush().await?;
                        }
                        10 => {
                            let mechanisms = String::from_utf8_lossy(&body);
                            if !mechanisms.split('\0').any(|m| m == sasl::SCRAM_SHA_256) {
                                return Err(PgError::Protocol(format!(
                                    "the server offers only SASL mechanisms {mechanisms:?}; weir speaks SCRAM-SHA-256"
                                )));
                            }
                            let s = sasl::ScramSha256::new(
                                password()?.as_bytes(),
                                sasl::ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response(
                                sasl::SCRAM_SHA_256,
                                s.message(),
                                &mut self.writer.wbuf,
                            )?;
                            self.writer.flush().await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                PgError::Protocol("SASL continue without a start".into())
                            })?;
                            s.update(&body)
                                .map_err(|e| PgError::Protocol(format!("SCRAM: {e}")))?;
                            frontend::sasl_response(s.message(), &mut self.writer.wbuf)?;
                            self.writer.flush().await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                PgError::Protocol("SASL final without a start".into())
                            })?;
                            s.finish(&body)
                                .map_err(|e| PgError::Protocol(format!("SCRAM: {e}")))?;
                        }
                        other => {
                            return Err(PgError::Protocol(format!(
                                "authentication method {other} is not supported (weir speaks trust, password, md5 and scram-sha-256)"
                            )))
                        }
                    }
                }
                b'S' => {
                    let mut parts = m.body.split(|b| *b == 0);
                    if parts.next() == Some(b"server_version") {
                        if let Some(v) = parts.next() {
                            self.server_version = String::from_utf8_lossy(v).into_owned();
                        }
                    }
                }
                b'K' | b'N' => {}
                b'Z' => return Ok(()),
                b'E' => return Err(parse_error(&m.body)),
                other => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message `{}` during login",
                        other as char
                    )))
                }
            }
        }
    }

    /// Runs one or more SQL statements (simple query protocol) and returns
    /// the rows of the last one that returned rows.
    pub async fn query(&mut self, sql: &str) -> Result<Rows, PgError> {
        self.writer.encode_query(sql)?;
        self.writer.flush().await?;
        let mut rows = Rows::default();
        let mut error = None;
        loop {
            let m = self.reader.read_message().await?;
            match m.tag {
                b'T' => {
                    rows = Rows::default();
                    parse_row_description(&m.body, &mut rows)?;
                }
                b'D' => rows.rows.push(parse_data_row(&m.body)?),
                b'C' | b'I' | b'N' | b'S' => {}
                b'E' => error = Some(parse_error(&m.body)),
                b'Z' => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    }
                }
                b'W' | b'H' | b'G' => {
                    return Err(PgError::Protocol("a copy started in a plain query".into()))
                }
                other => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message `{}` in a query",
                        other as char
                    )))
                }
            }
        }
    }

    /// Sends a command that starts a copy-both stream (`START_REPLICATION`)
    /// and waits for the server to start it.
    pub async fn start_copy_both(&mut self, sql: &str) -> Result<(), PgError> {
        self.writer.encode_query(sql)?;
        self.writer.flush().await?;
        loop {
            let m = self.reader.read_message().await?;
            match m.tag {
                b'W' => return Ok(()),
                b'N' | b'S' => {}
                b'E' => {
                    let e = parse_error(&m.body);
                    // the server follows the error with ReadyForQuery
                    let _ = self.reader.read_message().await;
                    return Err(e);
                }
                other => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message `{}` starting replication",
                        other as char
                    )))
                }
            }
        }
    }

    /// Splits a connection whose copy-both stream has started.
    pub fn split(self) -> (ReadSide, WriteSide) {
        (self.reader, self.writer)
    }

    /// Ends the session politely.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.writer.wbuf);
        let _ = self.writer.flush().await;
    }
}

impl ReadSide {
    /// A reader of server messages from any byte stream (a connection's
    /// is made by [`Connection::split`]; this one serves tests and the
    /// fuzz targets).
    pub fn from_reader(reader: impl AsyncRead + Send + Sync + Unpin + 'static) -> ReadSide {
        ReadSide {
            reader: Box::new(reader),
            rbuf: BytesMut::new(),
        }
    }

    /// The next message of a copy-both stream. Cancel safe: a partly read
    /// message stays buffered for the next call.
    pub async fn next_copy(&mut self) -> Result<CopyMessage, PgError> {
        loop {
            let m = self.read_message().await?;
            match m.tag {
                b'd' => return Ok(CopyMessage::Data(m.body)),
                b'c' | b'C' | b'Z' => return Ok(CopyMessage::Done),
                b'N' | b'S' => {}
                b'E' => return Err(parse_error(&m.body)),
                other => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message `{}` in a replication stream",
                        other as char
                    )))
                }
            }
        }
    }

    /// Whether a complete message is already buffered (so `next_copy`
    /// would not wait).
    pub fn has_buffered_message(&self) -> bool {
        if self.rbuf.len() < 5 {
            return false;
        }
        let len = u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
        self.rbuf.len() > len as usize
    }

    async fn read_message(&mut self) -> Result<Message, PgError> {
        loop {
            if self.rbuf.len() >= 5 {
                let len =
                    u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]])
                        as usize;
                if !(4..=MAX_MESSAGE).contains(&len) {
                    return Err(PgError::Protocol(format!("message length {len}")));
                }
                if self.rbuf.len() > len {
                    let tag = self.rbuf[0];
                    self.rbuf.advance(5);
                    let body = self.rbuf.split_to(len - 4).freeze();
                    return Ok(Message { tag, body });
                }
                self.rbuf.reserve(len + 1 - self.rbuf.len());
            }
            if self.rbuf.capacity() - self.rbuf.len() < 8 * 1024 {
                self.rbuf.reserve(64 * 1024);
            }
            let n = self.reader.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(PgError::Io("the server closed the connection".into()));
            }
        }
    }
}

/// Longest message accepted from the server (a bad length must not make
/// the process reserve gigabytes).
const MAX_MESSAGE: usize = 1 << 30;

impl WriteSide {
    /// Encodes a simple query; SQL the protocol cannot carry (a NUL byte)
    /// is a non-retryable error and leaves nothing half-written.
    fn encode_query(&mut self, sql: &str) -> Result<(), PgError> {
        let at = self.wbuf.len();
        frontend::query(sql, &mut self.wbuf).map_err(|e| {
            self.wbuf.truncate(at);
            PgError::Protocol(format!("the statement cannot be sent: {e}"))
        })
    }

    /// Sends a `CopyData` message.
    pub async fn send_copy(&mut self, data: &[u8]) -> Result<(), PgError> {
        self.wbuf.put_u8(b'd');
        self.wbuf.put_i32(4 + data.len() as i32);
        self.wbuf.put_slice(data);
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), PgError> {
        self.writer.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }
}

type Halves = (
    Box<dyn AsyncRead + Send + Sync + Unpin>,
    Box<dyn AsyncWrite + Send + Sync + Unpin>,
);

/// Negotiates TLS as `info.ssl_mode` says (the `SSLRequest` exchange, then
/// a rustls handshake) and splits the stream.
async fn secure(mut stream: TcpStream, info: &ConnInfo) -> Result<Halves, PgError> {
    if info.ssl_mode == SslMode::Disable {
        let (r, w) = stream.into_split();
        return Ok((Box::new(r), Box::new(w)));
    }
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let config = super::tls::client_config(info.ssl_mode, info.ssl_root_cert.as_deref())?;
            let name = rustls_pki_types::ServerName::try_from(info.host.clone())
                .map_err(|e| PgError::Protocol(format!("TLS: host `{}`: {e}", info.host)))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                // not transient: a certificate that fails now fails again
                .map_err(|e| {
                    PgError::Protocol(format!(
                        "TLS handshake with {}:{} failed: {e}",
                        info.host, info.port
                    ))
                })?;
            let (r, w) = tokio::io::split(tls);
            Ok((Box::new(r), Box::new(w)))
        }
        b'N' if info.ssl_mode == SslMode::Prefer => {
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        b'N' => Err(PgError::Protocol(format!(
            "the server at {}:{} does not offer TLS and sslmode={:?} requires it",
            info.host, info.port, info.ssl_mode
        ))),
        other => Err(PgError::Protocol(format!(
            "unexpected answer `{}` to the TLS request",
            other as char
        ))),
    }
}

/// Quotes an identifier (`"my ""table"""`).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal (`'it''s'`); standard-conforming strings.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn parse_error(body: &[u8]) -> PgError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail: Vec<String> = Vec::new();
    for field in body.split(|b| *b == 0) {
        if field.is_empty() {
            continue;
        }
        let value = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail.push(value),
            b'H' => detail.push(format!("hint: {value}")),
            _ => {}
        }
    }
    PgError::Server {
        code,
        message,
        detail: (!detail.is_empty()).then(|| detail.join("; ")),
    }
}

fn parse_row_description(body: &[u8], rows: &mut Rows) -> Result<(), PgError> {
    let short = || PgError::Protocol("short RowDescription".into());
    let mut b = body;
    if b.len() < 2 {
        return Err(short());
    }
    let n = b.get_i16();
    for _ in 0..n {
        let end = b.iter().position(|c| *c == 0).ok_or_else(short)?;
        rows.columns
            .push(String::from_utf8_lossy(&b[..end]).into_owned());
        b = &b[end + 1..];
        if b.len() < 18 {
            return Err(short());
        }
        let _table = b.get_u32();
        let _attnum = b.get_i16();
        rows.types.push(b.get_u32());
        b.advance(8); // type size, type modifier, format
    }
    Ok(())
}

fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, PgError> {
    let short = || PgError::Protocol("short DataRow".into());
    let mut b = body;
    if b.len() < 2 {
        return Err(short());
    }
    let n = b.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if b.len() < 4 {
            return Err(short());
        }
        let len = b.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = len as usize;
        if b.len() < len {
            return Err(short());
        }
        row.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
        b.advance(len);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_are_read() {
        let body = b"SERROR\0C42P01\0Mrelation \"x\" does not exist\0Hcreate it\0\0";
        let e = parse_error(body);
        assert_eq!(e.code(), Some("42P01"));
        assert_eq!(
            e.to_string(),
            "relation \"x\" does not exist (SQLSTATE 42P01); hint: create it"
        );
        assert!(!e.is_transient());
        assert!(PgError::Io("x".into()).is_transient());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
