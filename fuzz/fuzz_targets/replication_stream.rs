//! A replication connection's bytes as the server sends them: the wire
//! reader's message framing (tag, length, body), the copy-both messages,
//! the replication messages inside them (XLogData, keepalives) and the
//! pgoutput messages inside those. Any bytes must end in a message or an
//! error, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_connectors::postgres::pgoutput::Decoder;
use weir_connectors::postgres::replication::{parse, ReplicationMessage};
use weir_connectors::postgres::wire::{CopyMessage, ReadSide};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut reader = ReadSide::from_reader(std::io::Cursor::new(data.to_vec()));
    let mut decoder = Decoder::new();
    runtime.block_on(async {
        while let Ok(CopyMessage::Data(bytes)) = reader.next_copy().await {
            if let Ok(ReplicationMessage::XLogData { payload, .. }) = parse(bytes) {
                let _ = decoder.decode(&payload);
            }
        }
    });
});
