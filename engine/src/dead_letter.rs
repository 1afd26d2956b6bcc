//! Dead letters: failed events wrapped with why, where and from where.
//!
//! A dead-lettered event keeps its key, value and headers and gains:
//! `weir.error` (the reason), `weir.stage` (the step or sink that gave up),
//! `weir.attempts`, `weir.source`, `weir.partition` and `weir.offset`.

use bytes::Bytes;

use crate::event::Event;

/// Header holding the failure reason.
pub const HEADER_ERROR: &str = "weir.error";
/// Header naming the step or sink that gave up.
pub const HEADER_STAGE: &str = "weir.stage";
/// Header with the number of attempts made.
pub const HEADER_ATTEMPTS: &str = "weir.attempts";
/// Header naming the source the event came from.
pub const HEADER_SOURCE: &str = "weir.source";
/// Header with the source partition.
pub const HEADER_PARTITION: &str = "weir.partition";
/// Header with the position in the source partition.
pub const HEADER_OFFSET: &str = "weir.offset";

/// Adds the dead-letter headers to `event`.
pub fn mark(event: &mut Event, reason: &str, stage: &str, attempts: u32, source_name: &str) {
    let origin = event.origin;
    event.set_header(
        Bytes::from_static(HEADER_ERROR.as_bytes()),
        Bytes::copy_from_slice(reason.as_bytes()),
    );
    event.set_header(
        Bytes::from_static(HEADER_STAGE.as_bytes()),
        Bytes::copy_from_slice(stage.as_bytes()),
    );
    event.set_header(
        Bytes::from_static(HEADER_ATTEMPTS.as_bytes()),
        Bytes::from(attempts.to_string()),
    );
    event.set_header(
        Bytes::from_static(HEADER_SOURCE.as_bytes()),
        Bytes::copy_from_slice(source_name.as_bytes()),
    );
    event.set_header(
        Bytes::from_static(HEADER_PARTITION.as_bytes()),
        Bytes::from(origin.partition.to_string()),
    );
    event.set_header(
        Bytes::from_static(HEADER_OFFSET.as_bytes()),
        Bytes::from(origin.offset.to_string()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_reason_stage_and_origin() {
        let mut e = Event::new("x").with_offset(17);
        e.origin.partition = 3;
        mark(&mut e, "bad json", "parse", 1, "in");
        assert_eq!(e.header(HEADER_ERROR).unwrap().as_ref(), b"bad json");
        assert_eq!(e.header(HEADER_STAGE).unwrap().as_ref(), b"parse");
        assert_eq!(e.header(HEADER_SOURCE).unwrap().as_ref(), b"in");
        assert_eq!(e.header(HEADER_PARTITION).unwrap().as_ref(), b"3");
        assert_eq!(e.header(HEADER_OFFSET).unwrap().as_ref(), b"17");
    }
}
