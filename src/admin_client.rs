//! A client of a running weir's admin server, for `weir tap` and `weir top`:
//! reads a server-sent event stream, one `data:` payload at a time.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls::{self, RootCertStore};

/// The URL of `path` on the admin server `admin`: `HOST:PORT` is plain
/// HTTP, `https://HOST:PORT` HTTPS (an admin server with `[admin] tls`).
pub fn url(admin: &str, path: &str) -> String {
    if admin.starts_with("https://") || admin.starts_with("http://") {
        format!("{}{path}", admin.trim_end_matches('/'))
    } else {
        format!("http://{admin}{path}")
    }
}

/// A client of the admin server, for HTTP or HTTPS; HTTPS verifies the
/// server against the CA certificates in the PEM file `WEIR_ADMIN_CA` when
/// it is set, else against the system's roots.
pub fn client<B>() -> Result<Client<HttpsConnector<HttpConnector>, B>, String>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let mut roots = RootCertStore::empty();
    match std::env::var_os("WEIR_ADMIN_CA") {
        Some(path) => {
            let shown = std::path::Path::new(&path).display().to_string();
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("WEIR_ADMIN_CA {shown}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("WEIR_ADMIN_CA {shown}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("WEIR_ADMIN_CA {shown}: {e}"))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

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
    let client = client::<Empty<Bytes>>()?;
    let mut request = http::Request::get(url(admin, path));
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
