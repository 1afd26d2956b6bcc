//! What a Python or Node worker sends back: frames (two little-endian
//! lengths, the JSON message, the blob), the messages, and a `done` or a
//! plugin source's `batch` applied to a batch of three events, with
//! offsets and lengths that come from another process. Any bytes must be
//! read or refused, never panic or slice out of bounds.
#![no_main]

use std::collections::HashMap;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_engine::{Event, StepOutput};
use weir_process::frame::read_frame;
use weir_process::protocol::{apply_done, decode_events, parse, Message};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut input = data;
    let mut buf = Vec::new();
    while let Ok(at) = runtime.block_on(read_frame(&mut input, &mut buf)) {
        let (json, blob) = buf.split_at(at);
        let blob = Bytes::copy_from_slice(blob);
        match parse(json) {
            Ok(Message::Done { o, vl }) => {
                let mut events: Vec<Event> = (0..3).map(|i| Event::new(format!("e{i}"))).collect();
                let mut output = StepOutput::new();
                let routes = HashMap::new();
                let _ = apply_done(o, vl, &blob, &mut events, &routes, "fuzz", &mut output);
            }
            Ok(Message::Batch { e, partition, .. }) => {
                let _ = decode_events(&e, &blob, partition);
            }
            _ => {}
        }
    }
});
