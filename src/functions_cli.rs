//! `weir functions`: list, deploy, canary, promote and roll back the
//! versioned functions (`wasm`, `python`, `node` steps) of a running `weir run`, through its admin API
//! (`/api/v1/functions`). The token comes from `WEIR_ADMIN_TOKEN` or the
//! file `WEIR_ADMIN_TOKEN_FILE` names, as for the server.

use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};

/// `weir functions` arguments.
#[derive(Args)]
pub struct FunctionsArgs {
    /// The admin server of the running weir (`admin.listen`); default
    /// `$WEIR_ADMIN_ADDR`.
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: FunctionsAction,
}

/// A `weir functions` action.
#[derive(Subcommand)]
pub enum FunctionsAction {
    /// Every function: versions, counters, canary state.
    List,
    /// Make a new version the function's only version (the current one is kept for rollback).
    Deploy {
        /// The function step's name (a `wasm`, `python` or `node` step).
        name: String,
        /// The new version's file (a component, a handler), uploaded.
        module: PathBuf,
    },
    /// Run a new version on a share of the keys beside the stable version.
    Canary {
        /// The function step's name (a `wasm`, `python` or `node` step).
        name: String,
        /// The new version's file (a component, a handler), uploaded.
        module: PathBuf,
        /// Share of keys for the canary (0.0–1.0).
        #[arg(long, default_value_t = 0.1)]
        share: f64,
        /// Promote after this long without a rollback (e.g. `10m`); default: only by `promote`.
        #[arg(long)]
        promote_after: Option<String>,
        /// Roll back when the canary's error rate exceeds the stable one's by more than this.
        #[arg(long)]
        max_error_rate_increase: Option<f64>,
        /// Events the canary must see before it is judged.
        #[arg(long)]
        min_events: Option<u64>,
    },
    /// Give the running canary another share of the keys.
    Share {
        /// The function step's name.
        name: String,
        /// The new share (0.0–1.0].
        share: f64,
    },
    /// Make the running canary the stable version.
    Promote {
        /// The function step's name (a `wasm`, `python` or `node` step).
        name: String,
    },
    /// End the canary, or go back to the previous version.
    Rollback {
        /// The function step's name (a `wasm`, `python` or `node` step).
        name: String,
    },
}

/// Runs the command.
pub fn functions(args: FunctionsArgs) -> ExitCode {
    let Some(admin) = args.admin.or_else(|| std::env::var("WEIR_ADMIN_ADDR").ok()) else {
        eprintln!("error: say where weir's admin server is: --admin HOST:PORT or WEIR_ADMIN_ADDR");
        return ExitCode::from(2);
    };
    let (method, path, body, wasm) = match &args.action {
        FunctionsAction::List => ("GET", "/api/v1/functions".to_string(), Vec::new(), false),
        FunctionsAction::Deploy { name, module } => match std::fs::read(module) {
            Ok(bytes) => (
                "POST",
                format!("/api/v1/functions/{name}/deploy"),
                bytes,
                true,
            ),
            Err(e) => return fail(&format!("cannot read {}: {e}", module.display())),
        },
        FunctionsAction::Canary {
            name,
            module,
            share,
            promote_after,
            max_error_rate_increase,
            min_events,
        } => {
            let mut query = format!("share={share}");
            if let Some(d) = promote_after {
                query.push_str(&format!("&promote_after={d}"));
            }
            if let Some(x) = max_error_rate_increase {
                query.push_str(&format!("&max_error_rate_increase={x}"));
            }
            if let Some(n) = min_events {
                query.push_str(&format!("&min_events={n}"));
            }
            match std::fs::read(module) {
                Ok(bytes) => (
                    "POST",
                    format!("/api/v1/functions/{name}/canary?{query}"),
                    bytes,
                    true,
                ),
                Err(e) => return fail(&format!("cannot read {}: {e}", module.display())),
            }
        }
        FunctionsAction::Share { name, share } => (
            "POST",
            format!("/api/v1/functions/{name}/share?share={share}"),
            Vec::new(),
            false,
        ),
        FunctionsAction::Promote { name } => (
            "POST",
            format!("/api/v1/functions/{name}/promote"),
            Vec::new(),
            false,
        ),
        FunctionsAction::Rollback { name } => (
            "POST",
            format!("/api/v1/functions/{name}/rollback"),
            Vec::new(),
            false,
        ),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e.to_string()),
    };
    let result = runtime.block_on(send(&admin, method, &path, body, wasm));
    match result {
        Ok((status, text)) => {
            let shown = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(text);
            if status.is_success() {
                println!("{shown}");
                ExitCode::SUCCESS
            } else {
                eprintln!("error: {status}: {shown}");
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(&format!("talking to the admin server at {admin}: {e}")),
    }
}

async fn send(
    admin: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
    wasm: bool,
) -> Result<(http::StatusCode, String), String> {
    let client = crate::admin_client::client::<Full<Bytes>>()?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(crate::admin_client::url(admin, path));
    if let Some(token) = crate::admin_functions::token_from_env()? {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if wasm {
        request = request.header(http::header::CONTENT_TYPE, "application/octet-stream");
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
