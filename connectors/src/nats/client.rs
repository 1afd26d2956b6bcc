//! Connecting, with connection events turned into logs and metrics.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use weir_engine::telemetry::names;
use weir_engine::{Error, Result};

use super::config::NatsTls;

/// Connects to `url` (comma-separated servers) as component `name`.
/// `capacity` sizes each subscription's buffer (messages).
pub(crate) async fn connect(
    url: &str,
    name: &str,
    capacity: Option<usize>,
    timeout: Duration,
    tls: Option<&NatsTls>,
) -> Result<Client> {
    let component = name.to_string();
    let mut options = ConnectOptions::new()
        .name(format!("weir-{name}"))
        .connection_timeout(timeout)
        .max_reconnects(None)
        .event_callback(move |event| {
            let component = component.clone();
            async move { log_event(&component, event) }
        });
    if let Some(capacity) = capacity {
        options = options.subscription_capacity(capacity.max(1));
    }
    if let Some(tls) = tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.into());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            options = options.add_client_certificate(cert.into(), key.into());
        }
    }
    let servers: Vec<&str> = url.split(',').map(str::trim).collect();
    let connect = options.connect(servers.as_slice());
    let shown = crate::redact::url(url);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(Error::retryable(format!(
            "cannot connect to NATS at `{shown}`: {e}"
        ))),
        Err(_) => Err(Error::retryable(format!(
            "cannot connect to NATS at `{shown}` within {timeout:?}"
        ))),
    }
}

fn log_event(component: &str, event: Event) {
    match event {
        Event::SlowConsumer(sid) => {
            metrics::counter!(names::NATS_SLOW_CONSUMER, "component" => component.to_string())
                .increment(1);
            tracing::error!(component, sid,
                "NATS slow consumer: the server dropped messages for this subscription (core NATS is at-most-once; raise `capacity` or add processes to the queue group)");
        }
        Event::Connected => tracing::info!(component, "NATS connected"),
        Event::Disconnected => tracing::warn!(component, "NATS disconnected; reconnecting"),
        other => tracing::warn!(component, event = %other, "NATS client event"),
    }
}
