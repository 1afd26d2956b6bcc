//! `/api/v1/functions`: the versioned functions (`wasm`, `python`, `node`
//! steps) of the running pipeline.
//!
//! - `GET  /api/v1/functions` — every function: stable, previous and
//!   canary versions (hash, size, load time, events, errors, traps, mean
//!   time per event), how the last canary ended, the versions kept on disk.
//! - `POST /api/v1/functions/NAME/deploy` — make a new version the only one.
//! - `POST /api/v1/functions/NAME/canary?share=0.1&…` — run a new version
//!   on a share of the keys; the query sets the policy (`share`,
//!   `min_events`, `max_error_rate_increase`, `max_latency_ratio`,
//!   `promote_after`, `check_every`).
//! - `POST /api/v1/functions/NAME/share?share=0.3` — give the running
//!   canary another share of the keys.
//! - `POST /api/v1/functions/NAME/promote` — make the canary stable.
//! - `POST /api/v1/functions/NAME/rollback` — end the canary, or go back to
//!   the previous version.
//!
//! A new version is the request body: the file's bytes (a component with
//! `Content-Type: application/wasm`; a handler with `text/x-python`,
//! `text/javascript`, `application/javascript` or
//! `application/octet-stream`), or JSON `{"module": "PATH"}` (or
//! `{"handler": "PATH"}`) naming a file on the server. Every `POST` needs `Authorization: Bearer TOKEN`
//! with the token of `WEIR_ADMIN_TOKEN` (or the file `WEIR_ADMIN_TOKEN_FILE`
//! names); when none is set, changes are refused (403).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::Request;
use weir_connectors::http::serve::HttpResponse;
use weir_versions::canary::CanaryPolicy;
use weir_versions::catalog::{catalog, CatalogError, VersionSource};

use crate::admin::{reply, AdminState};

/// Where these endpoints live.
pub const PREFIX: &str = "/api/v1/functions";

/// Largest component an upload may carry.
const MAX_UPLOAD: usize = 64 << 20;

/// The admin token from the environment: `WEIR_ADMIN_TOKEN`, else the
/// first line of the file `WEIR_ADMIN_TOKEN_FILE` names.
pub fn token_from_env() -> Result<Option<String>, String> {
    if let Ok(token) = std::env::var("WEIR_ADMIN_TOKEN") {
        if !token.is_empty() {
            return Ok(Some(token));
        }
    }
    match std::env::var_os("WEIR_ADMIN_TOKEN_FILE") {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("WEIR_ADMIN_TOKEN_FILE {}: {e}", path.to_string_lossy()))?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                return Err(format!(
                    "WEIR_ADMIN_TOKEN_FILE {} is empty",
                    path.to_string_lossy()
                ));
            }
            Ok(Some(token))
        }
        None => Ok(None),
    }
}

/// Answers a request under [`PREFIX`].
pub async fn answer(state: &AdminState, request: Request<Incoming>) -> HttpResponse {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let rest = path[PREFIX.len()..].trim_start_matches('/');
    let method = request.method().clone();
    if rest.is_empty() {
        return match method {
            Method::GET | Method::HEAD => json(StatusCode::OK, &catalog().list()),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        };
    }
    let Some((name, action)) = rest.split_once('/') else {
        return match catalog().describe(rest) {
            Ok(v) if method == Method::GET => json(StatusCode::OK, &v),
            Ok(_) => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            Err(e) => failure(&e),
        };
    };
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    if let Some(refused) = authorize(state, &request) {
        return refused;
    }
    let name = name.to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    // the body is read here; the change itself runs in a task of its own,
    // so a client that goes away cannot cancel it halfway (after the
    // shards swapped, before the catalog recorded it)
    let change = match action {
        "deploy" => match module_source(request).await {
            Ok(source) => Change::Deploy(source),
            Err(response) => return response,
        },
        "canary" => {
            let policy = match policy_from_query(&query) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            match module_source(request).await {
                Ok(source) => Change::Canary(source, policy),
                Err(response) => return response,
            }
        }
        "share" => match query
            .split('&')
            .find_map(|kv| kv.strip_prefix("share="))
            .and_then(|v| v.parse::<f64>().ok())
        {
            Some(share) => Change::Share(share),
            None => return error(StatusCode::BAD_REQUEST, "give the new share: ?share=0.3"),
        },
        "promote" => Change::Promote,
        "rollback" => Change::Rollback,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no action `{other}`: use deploy, canary, share, promote or rollback"),
            )
        }
    };
    let task = tokio::spawn(async move {
        match change {
            Change::Deploy(source) => catalog().deploy(&name, source).await,
            Change::Canary(source, policy) => catalog().start_canary(&name, source, policy).await,
            Change::Share(share) => catalog().set_canary_share(&name, share).await,
            Change::Promote => catalog().promote(&name).await,
            Change::Rollback => catalog().rollback(&name).await,
        }
    });
    let result = match task.await {
        Ok(result) => result,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the change failed: {e}"),
            )
        }
    };
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => failure(&e),
    }
}

/// A change asked for.
enum Change {
    Deploy(VersionSource),
    Canary(VersionSource, CanaryPolicy),
    Share(f64),
    Promote,
    Rollback,
}

/// `None` when the request carries the admin token; else the refusal.
pub(crate) fn authorize(state: &AdminState, request: &Request<Incoming>) -> Option<HttpResponse> {
    let Some(token) = &state.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "changes are off: start weir with WEIR_ADMIN_TOKEN (or WEIR_ADMIN_TOKEN_FILE) set",
        ));
    };
    let given = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        None
    } else {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        Some(r)
    }
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guess was right. (Eight lines; not worth a crate.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The new version a request carries.
async fn module_source(request: Request<Incoming>) -> Result<VersionSource, HttpResponse> {
    const UPLOADS: [&[u8]; 5] = [
        b"application/wasm",
        b"application/octet-stream",
        b"application/javascript",
        b"text/javascript",
        b"text/x-python",
    ];
    let is_upload = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| UPLOADS.iter().any(|t| v.as_bytes().starts_with(t)));
    let body = match Limited::new(request.into_body(), MAX_UPLOAD)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("reading the body: {e} (at most {MAX_UPLOAD} bytes)"),
            ))
        }
    };
    if is_upload {
        return Ok(VersionSource::Bytes(body.to_vec()));
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ByPath {
        #[serde(alias = "handler")]
        module: std::path::PathBuf,
    }
    serde_json::from_slice::<ByPath>(&body)
        .map(|b| VersionSource::Path(b.module))
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the body must be the new version's bytes (Content-Type: application/wasm, text/x-python, text/javascript or application/octet-stream) or JSON {{\"module\": \"PATH\"}}: {e}"
                ),
            )
        })
}

/// A canary policy from `share=0.2&promote_after=30s&…`.
fn policy_from_query(query: &str) -> Result<CanaryPolicy, String> {
    let mut policy = CanaryPolicy::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("{key}: `{value}` is not a number"))
        };
        let duration = || -> Result<Duration, String> {
            weir_config::parse_duration(value).map_err(|e| format!("{key}: {e}"))
        };
        match key {
            "share" => policy.share = number()?,
            "min_events" => {
                policy.min_events = value
                    .parse()
                    .map_err(|_| format!("min_events: `{value}` is not a whole number"))?
            }
            "max_error_rate_increase" => policy.max_error_rate_increase = number()?,
            "max_latency_ratio" => policy.max_latency_ratio = number()?,
            "promote_after" => policy.promote_after = Some(duration()?),
            "check_every" => policy.check_every = duration()?,
            other => {
                return Err(format!(
                    "unknown canary setting `{other}`: use share, min_events, max_error_rate_increase, \
                     max_latency_ratio, promote_after, check_every"
                ))
            }
        }
    }
    policy.validate()?;
    Ok(policy)
}

fn failure(e: &CatalogError) -> HttpResponse {
    let status = match e {
        CatalogError::NoSuchFunction { .. } => StatusCode::NOT_FOUND,
        CatalogError::NotRunning => StatusCode::SERVICE_UNAVAILABLE,
        CatalogError::Load(_) | CatalogError::BadRequest(_) => StatusCode::BAD_REQUEST,
        CatalogError::Conflict(_) => StatusCode::CONFLICT,
        CatalogError::Swap(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    reply(status, "application/json", Bytes::from(value.to_string()))
}

pub(crate) fn error(status: StatusCode, message: &str) -> HttpResponse {
    json(status, &serde_json::json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn policy_from_a_query_names_bad_settings() {
        let p = policy_from_query("share=0.25&promote_after=30s&min_events=50").unwrap();
        assert_eq!(p.share, 0.25);
        assert_eq!(p.promote_after, Some(Duration::from_secs(30)));
        assert_eq!(p.min_events, 50);
        assert!(policy_from_query("share=2").unwrap_err().contains("share"));
        assert!(policy_from_query("shares=1")
            .unwrap_err()
            .contains("unknown canary setting `shares`"));
    }
}
