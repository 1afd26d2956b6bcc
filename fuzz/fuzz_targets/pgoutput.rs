//! The pgoutput decoder over a sequence of messages (so a relation message
//! early on describes the rows of the later ones): each message is a
//! 2-byte big-endian length and that many bytes. Any bytes must decode or
//! give an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_connectors::postgres::pgoutput::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let message = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let _ = decoder.decode(message);
    }
});
