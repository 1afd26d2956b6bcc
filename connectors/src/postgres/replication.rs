//! The replication protocol's own messages inside a copy-both stream's
//! `CopyData`: `XLogData` (`w`, a pgoutput message and where it ends) and
//! the primary keepalive (`k`). Parsed apart from the connection so the
//! parse can be tested and fuzzed on bytes alone.

use bytes::{Buf, Bytes};

use super::wire::PgError;

/// One message of the replication stream.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL data: a pgoutput message and the WAL position it ends at.
    XLogData {
        /// The end of the WAL this message covers.
        end: u64,
        /// The pgoutput message.
        payload: Bytes,
    },
    /// The server's keepalive.
    Keepalive {
        /// The end of the server's WAL.
        wal_end: u64,
        /// Whether the server asks for a status update at once.
        reply: bool,
    },
    /// An empty `CopyData` (nothing to do).
    Empty,
}

/// Parses a `CopyData` payload of a replication stream.
pub fn parse(mut data: Bytes) -> Result<ReplicationMessage, PgError> {
    let Some(&tag) = data.first() else {
        return Ok(ReplicationMessage::Empty);
    };
    match tag {
        // tag, start (8), end (8), send time (8), payload
        b'w' if data.len() >= 25 => {
            data.advance(9);
            let end = data.get_u64();
            data.advance(8);
            Ok(ReplicationMessage::XLogData { end, payload: data })
        }
        // tag, WAL end (8), send time (8), reply (1)
        b'k' if data.len() >= 18 => {
            data.advance(1);
            let wal_end = data.get_u64();
            data.advance(8);
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                reply: data.get_u8() == 1,
            })
        }
        b'w' | b'k' => Err(PgError::Protocol(format!(
            "a replication message `{}` of {} bytes is too short",
            tag as char,
            data.len()
        ))),
        other => Err(PgError::Protocol(format!(
            "unknown replication message `{}`",
            other as char
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlogdata_keepalive_and_short_messages() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&1u64.to_be_bytes());
        w.extend_from_slice(&7u64.to_be_bytes());
        w.extend_from_slice(&0u64.to_be_bytes());
        w.extend_from_slice(b"B...");
        assert_eq!(
            parse(Bytes::from(w)).unwrap(),
            ReplicationMessage::XLogData {
                end: 7,
                payload: Bytes::from_static(b"B...")
            }
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&9u64.to_be_bytes());
        k.extend_from_slice(&0u64.to_be_bytes());
        k.push(1);
        assert_eq!(
            parse(Bytes::from(k)).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: 9,
                reply: true
            }
        );
        assert!(parse(Bytes::from_static(b"w123")).is_err());
        assert!(parse(Bytes::from_static(b"x")).is_err());
        assert_eq!(parse(Bytes::new()).unwrap(), ReplicationMessage::Empty);
    }
}
