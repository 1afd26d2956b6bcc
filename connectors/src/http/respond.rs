//! The answers of the `http` source: what the pipeline made of a request,
//! and the errors, each with a status that says whose fault it was.
//!
//! A step shapes a synchronous answer through its output event's headers:
//! `http.status` (a status code, e.g. `201`) and `http.response.NAME` (a
//! response header `NAME`, e.g. `http.response.content-type`). Without a
//! content type the request's own `content-type` is used.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};

use hyper::Response;
use weir_engine::reply::Outcome;
use weir_engine::Event;

use super::config::Multiple;
use super::serve::{self, HttpResponse};

/// Event header a step sets to choose the response status.
pub const STATUS_HEADER: &str = "http.status";
/// Prefix of event headers that become response headers.
pub const RESPONSE_HEADER_PREFIX: &str = "http.response.";

/// A plain-text answer.
pub fn plain(status: StatusCode, text: &str) -> HttpResponse {
    build(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(text.as_bytes()),
    )
}

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> HttpResponse {
    let mut r = Response::new(serve::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r
}

/// A JSON error: `{"error": reason, "stage": stage, "retryable": bool}`.
pub fn error(
    status: StatusCode,
    stage: Option<&str>,
    reason: &str,
    retryable: bool,
) -> HttpResponse {
    let mut body = serde_json::json!({ "error": reason, "retryable": retryable });
    if let Some(stage) = stage {
        body["stage"] = stage.into();
    }
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    build(status, "application/json", Bytes::from(bytes))
}

/// 503: the source does not take requests now; try again in a second.
pub fn unavailable(reason: &str) -> HttpResponse {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, None, reason, true);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// 503 with `Retry-After`: the in-flight limit stayed full.
pub fn overloaded(limit: usize) -> HttpResponse {
    unavailable(&format!(
        "overloaded: {limit} requests in flight; retry later"
    ))
}

/// 413: the body is larger than `max` bytes.
pub fn too_large(max: usize) -> HttpResponse {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
        &format!("the body is larger than max_body ({max} bytes)"),
        false,
    )
}

/// 405 with the methods the path answers.
pub fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut r = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path\n",
    );
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(http::header::ALLOW, v);
    }
    r
}

/// 202 with the event's id: the sinks durably wrote it.
pub fn accepted(id: &str) -> HttpResponse {
    let body = format!("{{\"id\":\"{id}\"}}\n");
    build(StatusCode::ACCEPTED, "application/json", Bytes::from(body))
}

/// The answer for what the steps made of a request.
pub fn outcome(result: Outcome, multiple: Multiple) -> HttpResponse {
    match result {
        Outcome::Dropped => {
            let mut r = Response::new(serve::full(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Outcome::Failed {
            stage,
            reason,
            retryable,
        } => {
            // a step that calls a failure final says the input is bad
            let status = if retryable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            error(status, Some(&stage), &reason, retryable)
        }
        Outcome::Emitted { mut events, routed } => {
            if events.is_empty() {
                events = routed.into_iter().map(|(_, e)| e).collect();
            }
            match events.len() {
                0 => outcome(Outcome::Dropped, multiple),
                1 => {
                    let event = events.pop().unwrap_or_default();
                    let mut r = Response::new(serve::full(event.value.clone()));
                    shape(&mut r, &event, None);
                    r
                }
                _ => {
                    let (body, content_type) = join(&events, multiple);
                    let mut r = Response::new(serve::full(body));
                    shape(&mut r, &events[0], Some(content_type));
                    r
                }
            }
        }
    }
}

/// Several outputs in one body.
fn join(events: &[Event], multiple: Multiple) -> (Bytes, &'static str) {
    let content_type = match multiple {
        Multiple::Ndjson => "application/x-ndjson",
        Multiple::JsonArray => "application/json",
    };
    (join_values(events, multiple), content_type)
}

/// The events' values in one body: one per line (`Ndjson`), or a JSON
/// array in which JSON values stand as they are and anything else as a
/// string. Shared by the source's answers and the sink's requests.
pub fn join_values(events: &[Event], multiple: Multiple) -> Bytes {
    let size: usize = events.iter().map(|e| e.value.len() + 3).sum();
    let mut out = BytesMut::with_capacity(size + 2);
    match multiple {
        Multiple::Ndjson => {
            for e in events {
                out.put_slice(&e.value);
                out.put_u8(b'\n');
            }
        }
        Multiple::JsonArray => {
            out.put_u8(b'[');
            for (i, e) in events.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                if serde_json::from_slice::<serde::de::IgnoredAny>(&e.value).is_ok() {
                    out.put_slice(&e.value);
                } else {
                    let s = String::from_utf8_lossy(&e.value);
                    out.put_slice(serde_json::to_string(&s).unwrap_or_default().as_bytes());
                }
            }
            out.put_u8(b']');
        }
    }
    out.freeze()
}

/// Status and headers from the event's `http.*` headers.
fn shape(r: &mut HttpResponse, event: &Event, content_type: Option<&'static str>) {
    if let Some(ct) = content_type {
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    } else if let Some(ct) = event
        .header("content-type")
        .and_then(|v| HeaderValue::from_bytes(v).ok())
    {
        r.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    for (name, value) in &event.headers {
        if let Some(rest) = name.strip_prefix(RESPONSE_HEADER_PREFIX.as_bytes()) {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(rest), HeaderValue::from_bytes(value)) {
                r.headers_mut().insert(n, v);
            }
        } else if name.as_ref() == STATUS_HEADER.as_bytes() {
            let code = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok());
            match code {
                Some(code) => *r.status_mut() = code,
                None => {
                    tracing::debug!(value = ?value, "ignoring an http.status that is no status code")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: HttpResponse) -> Bytes {
        r.into_body().collect().await.unwrap().to_bytes()
    }

    fn event(value: &str) -> Event {
        Event::new(value.to_string())
    }

    #[tokio::test]
    async fn one_output_is_the_body_with_the_requests_content_type() {
        let mut e = event("{\"a\":1}");
        e.headers.push((
            Bytes::from_static(b"content-type"),
            Bytes::from_static(b"application/json"),
        ));
        let r = outcome(
            Outcome::Emitted {
                events: vec![e],
                routed: vec![],
            },
            Multiple::JsonArray,
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(body(r).await, "{\"a\":1}");
    }

    #[tokio::test]
    async fn a_step_sets_status_and_headers() {
        let mut e = event("made");
        e.headers.push((
            Bytes::from_static(b"http.status"),
            Bytes::from_static(b"201"),
        ));
        e.headers.push((
            Bytes::from_static(b"http.response.location"),
            Bytes::from_static(b"/things/7"),
        ));
        e.headers.push((
            Bytes::from_static(b"http.response.content-type"),
            Bytes::from_static(b"text/plain"),
        ));
        let r = outcome(
            Outcome::Emitted {
                events: vec![e],
                routed: vec![],
            },
            Multiple::JsonArray,
        );
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["location"], "/things/7");
        assert_eq!(r.headers()["content-type"], "text/plain");
    }

    #[tokio::test]
    async fn several_outputs_as_array_or_ndjson() {
        let events = vec![event("{\"a\":1}"), event("plain \"text\"")];
        let r = outcome(
            Outcome::Emitted {
                events: events.clone(),
                routed: vec![],
            },
            Multiple::JsonArray,
        );
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(body(r).await, "[{\"a\":1},\"plain \\\"text\\\"\"]");
        let r = outcome(
            Outcome::Emitted {
                events,
                routed: vec![],
            },
            Multiple::Ndjson,
        );
        assert_eq!(body(r).await, "{\"a\":1}\nplain \"text\"\n");
    }

    #[tokio::test]
    async fn dropped_and_failed() {
        assert_eq!(
            outcome(Outcome::Dropped, Multiple::JsonArray).status(),
            StatusCode::NO_CONTENT
        );
        let failed = |retryable| Outcome::Failed {
            stage: "parse".into(),
            reason: "bad json".into(),
            retryable,
        };
        let r = outcome(failed(false), Multiple::JsonArray);
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let v: serde_json::Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "bad json", "stage": "parse", "retryable": false})
        );
        assert_eq!(
            outcome(failed(true), Multiple::JsonArray).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
