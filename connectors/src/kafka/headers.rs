//! A Kafka message's headers, read as raw bytes.

use super::fetch_queue::FetchedMessage;

/// A message's headers as raw bytes. rdkafka's own header reader panics on
/// a key that is not UTF-8, which any producer may send; weir keeps such a
/// key as it is.
pub(crate) struct RawHeaders<'m> {
    headers: *const rdkafka::bindings::rd_kafka_headers_t,
    index: usize,
    _message: std::marker::PhantomData<&'m ()>,
}

impl<'m> RawHeaders<'m> {
    /// The headers of a message `poll` lent.
    pub(crate) fn of(message: &'m rdkafka::message::BorrowedMessage<'_>) -> Self {
        // SAFETY: the message is valid while borrowed
        unsafe { Self::of_ptr(message.ptr()) }
    }

    /// The headers of a message a batch call took.
    pub(crate) fn of_fetched(message: &FetchedMessage<'m>) -> Self {
        // SAFETY: the message is valid for 'm
        unsafe { Self::of_ptr(message.ptr()) }
    }

    /// # Safety
    /// `message` must stay valid for `'m`.
    unsafe fn of_ptr(message: *const rdkafka::bindings::rd_kafka_message_t) -> Self {
        let mut headers = std::ptr::null_mut();
        // SAFETY: librdkafka fills `headers` with a pointer owned by the
        // message, or leaves it null.
        let err = unsafe { rdkafka::bindings::rd_kafka_message_headers(message, &mut headers) };
        if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            headers = std::ptr::null_mut();
        }
        RawHeaders {
            headers,
            index: 0,
            _message: std::marker::PhantomData,
        }
    }
}

impl<'m> Iterator for RawHeaders<'m> {
    type Item = (&'m [u8], &'m [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.headers.is_null() {
            return None;
        }
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `headers` belongs to the borrowed message; librdkafka
        // returns pointers into it that live as long as the message.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_get_all(
                self.headers,
                self.index,
                &mut name,
                &mut value,
                &mut size,
            )
        };
        if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            || name.is_null()
        {
            return None;
        }
        self.index += 1;
        // SAFETY: as above; a header name is a NUL-terminated string.
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value: &[u8] = if value.is_null() {
            &[]
        } else {
            // SAFETY: `value` points at `size` bytes owned by the message.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }
        };
        Some((key, value))
    }
}
