//! A client of a running weir's admin server, for `weir tap` and `weir top`:
//! reads a server-sent event stream, one `data:` payload at a time.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The admin server's address: `--admin`, else `WEIR_ADMIN_ADDR`.
pub fn address(given: Option<String>) -> Result<String, String> {
    given
        .or_else(|| std::env::var("WEIR_ADMIN_ADDR").ok())
        .ok_or_else(|| {
            "say where weir's admin server is: --admin HOST:PORT or WEIR_ADMIN_ADDR".to_string()
        })
}

/// GETs `path` and calls `each` with every event's data until the stream
/// ends or `each` returns `false`. The admin token (`WEIR_ADMIN_TOKEN` or
/// `WEIR_ADMIN_TOKEN_FILE`) is sent when set.
pub async fn events(
    admin: &str,
    path: &str,
    mut each: impl FnMut(&str) -> bool,
) -> Result<(), String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::get(format!("http://{admin}{path}"));
    if let Some(token) = crate::admin_functions::token_from_env()? {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("talking to the admin server at {admin}: {e}"))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&text).trim()
        ));
    }
    let mut pending = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    if !each(data) {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs `work` on a small runtime of its own.
pub fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(work))
        .map_err(|e| e.to_string())
}
