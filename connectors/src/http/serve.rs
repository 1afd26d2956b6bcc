//! One HTTP server loop on hyper, shared by the `http` source and the
//! admin server: accept with back-off on errors (never a busy loop), TLS by
//! rustls when configured, HTTP/1.1 with keep-alive and a header read
//! timeout, HTTP/2 (ALPN over TLS, prior knowledge in clear text), and a
//! graceful close of every connection when the server is stopped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// A response with its whole body in memory.
pub type HttpResponse = Response<Body>;

/// A response body: whole (every response but a stream), or a stream of
/// chunks (the admin server's server-sent events). The whole case is not
/// boxed, so a request on the invoke path costs no extra allocation.
pub type Body = http_body_util::Either<Full<Bytes>, StreamingBody>;

/// A body sent chunk by chunk as the chunks come.
pub type StreamingBody = http_body_util::StreamBody<
    Pin<Box<dyn futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, Infallible>> + Send>>,
>;

/// A whole body.
#[inline]
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Either::Left(Full::new(bytes.into()))
}

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = HttpResponse> + Send>>;

/// Answers requests. Called once per request on the I/O runtime.
pub trait Handler: Send + Sync + 'static {
    /// The response to `request`, which came from `remote`.
    fn handle(self: Arc<Self>, request: Request<Incoming>, remote: SocketAddr) -> ResponseFuture;
}

/// How connections are served.
#[derive(Clone)]
pub struct ServeOptions {
    /// Longest time to read a request's headers; the connection is closed
    /// after it.
    pub header_timeout: Duration,
    /// TLS, if set.
    pub tls: Option<TlsAcceptor>,
}

/// Stops a running server: new connections are refused and open ones are
/// closed once their in-flight requests are answered. Dropping it stops too.
#[derive(Debug)]
pub struct StopServer {
    tx: watch::Sender<bool>,
}

impl StopServer {
    /// Stops the server (idempotent).
    pub fn stop(&self) {
        let _ = self.tx.send(true);
    }
}

impl Drop for StopServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `listener` with `handler` on the current runtime until stopped.
pub fn spawn<H: Handler>(
    listener: TcpListener,
    options: ServeOptions,
    handler: Arc<H>,
) -> StopServer {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(accept_loop(listener, options, handler, rx));
    StopServer { tx }
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    options: ServeOptions,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(options.header_timeout));
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => {
                failures = 0;
                pair
            }
            Err(e) => {
                // out of descriptors or memory: wait instead of spinning,
                // longer while it lasts (at most 1s)
                failures = failures.saturating_add(1);
                let pause =
                    Duration::from_millis(10u64 << failures.min(7)).min(Duration::from_secs(1));
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, "accepting a connection failed; pausing {pause:?}");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = Arc::clone(&builder);
        let handler = Arc::clone(&handler);
        let tls = options.tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = Arc::clone(&handler).handle(request, remote);
                async move { Ok::<_, Infallible>(response.await) }
            });
            match tls {
                None => serve_connection(&builder, TokioIo::new(stream), service, stop).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            serve_connection(&builder, TokioIo::new(tls), service, stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// How every connection is served: HTTP/1.1 with keep-alive or HTTP/2.
fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Serves one plain connection over `io` with `handler`, as the accept
/// loop would (the fuzz target's way in; the remote address is fixed).
pub(crate) async fn serve_one<IO, H>(io: IO, header_timeout: Duration, handler: Arc<H>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let remote = SocketAddr::from(([127, 0, 0, 1], 1));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = Arc::clone(&handler).handle(request, remote);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let (_stop, stop) = watch::channel(false);
    serve_connection(
        &connection_builder(header_timeout),
        TokioIo::new(io),
        service,
        stop,
    )
    .await;
}

async fn serve_connection<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = HttpResponse, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A TLS acceptor from PEM files, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate {}: no certificate in the file",
            cert.display()
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
