//! A real nats-server with JetStream for the tests, started through the
//! project's `scripts/nats-dev.sh`, and blocking helpers over async-nats.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use super::dev_server;

/// A server in its own temporary directory, stopped (and removed) on drop.
pub struct Server {
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    /// The CA the test client trusts when the server requires TLS.
    ca: Option<PathBuf>,
    _tmp: tempfile::TempDir,
}

fn start_in(dir: &Path, port: Option<u16>, extra: &[&str]) -> String {
    dev_server::start("nats-dev.sh", dir, port, extra, "NATS_URL")
}

impl Server {
    /// Starts a server with JetStream on a free port.
    pub fn start() -> Server {
        Self::start_with(&[], None)
    }

    /// Starts a server that requires TLS, with the certificate and key in
    /// `certs` (see [`super::certs::make`]); the test client trusts `ca.crt`.
    pub fn start_tls(certs: &Path) -> Server {
        let file = |f: &str| certs.join(f).display().to_string();
        let args = [
            "--".to_string(),
            "--tls".into(),
            "--tlscert".into(),
            file("server.crt"),
            "--tlskey".into(),
            file("server.key"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_with(&args, Some(certs.join("ca.crt")))
    }

    fn start_with(extra: &[&str], ca: Option<PathBuf>) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nats");
        let url = start_in(&dir, None, extra);
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Server {
            url,
            port,
            dir,
            rt,
            ca,
            _tmp: tmp,
        }
    }

    /// Stops the server, keeping its JetStream data.
    pub fn stop(&self) {
        dev_server::stop("nats-dev.sh", &self.dir, &["--keep"]);
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        start_in(&self.dir, Some(self.port), &[]);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        super::faults::pid_in(&self.dir.join("nats.pid"))
    }

    fn js(&self) -> jetstream::Context {
        let url = self.url.clone();
        let mut options = async_nats::ConnectOptions::new();
        if let Some(ca) = &self.ca {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        let client = self
            .rt
            .block_on(async move { options.connect(url).await })
            .expect("connect");
        let _runtime = self.rt.enter(); // the context spawns its acker task
        jetstream::new(client)
    }

    /// Creates a stream capturing `subjects`.
    pub fn create_stream(&self, name: &str, subjects: &[&str]) {
        let js = self.js();
        self.rt
            .block_on(js.create_stream(stream::Config {
                name: name.to_string(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }))
            .expect("create stream");
    }

    /// Publishes `(subject, payload)` pairs to JetStream, waiting for every ack.
    pub fn publish(&self, records: impl IntoIterator<Item = (String, String)>) {
        let js = self.js();
        self.rt.block_on(async move {
            let mut acks = Vec::new();
            for (subject, payload) in records {
                acks.push(js.publish(subject, payload.into()).await.expect("publish"));
                if acks.len() >= 512 {
                    for a in acks.drain(..) {
                        a.await.expect("puback");
                    }
                }
            }
            for a in acks {
                a.await.expect("puback");
            }
        });
    }

    /// Publishes to core NATS and flushes.
    pub fn publish_core(&self, records: impl IntoIterator<Item = (String, String)>) {
        let url = self.url.clone();
        self.rt.block_on(async move {
            let client = async_nats::connect(url).await.expect("connect");
            for (subject, payload) in records {
                client
                    .publish(subject, payload.into())
                    .await
                    .expect("publish");
            }
            client.flush().await.expect("flush");
        });
    }

    /// Reads up to `count` messages of `stream` from the start, within `timeout`.
    pub fn read(&self, stream: &str, count: usize, timeout: Duration) -> Vec<(String, String)> {
        let js = self.js();
        let stream = stream.to_string();
        self.rt.block_on(async move {
            let s = js.get_stream(&stream).await.expect("stream");
            let c = s
                .create_consumer(consumer::pull::OrderedConfig::default())
                .await
                .expect("ordered consumer");
            let mut out = Vec::new();
            let mut messages = c.messages().await.expect("messages");
            let deadline = Instant::now() + timeout;
            while out.len() < count {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, messages.next()).await {
                    Ok(Some(Ok(m))) => out.push((
                        m.subject.to_string(),
                        String::from_utf8_lossy(&m.payload).into_owned(),
                    )),
                    Ok(Some(Err(e))) => panic!("reading {stream}: {e}"),
                    Ok(None) | Err(_) => break,
                }
            }
            out
        })
    }

    /// `(ack floor stream sequence, pending, ack pending)` of a durable consumer.
    pub fn consumer_state(&self, stream: &str, consumer: &str) -> Option<(u64, u64, usize)> {
        let js = self.js();
        self.rt.block_on(async move {
            let s = js.get_stream(stream).await.ok()?;
            let mut c: jetstream::consumer::PullConsumer = s.get_consumer(consumer).await.ok()?;
            let info = c.info().await.ok()?;
            Some((
                info.ack_floor.stream_sequence,
                info.num_pending,
                info.num_ack_pending,
            ))
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        dev_server::remove("nats-dev.sh", &self.dir, &[]);
    }
}
