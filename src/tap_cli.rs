//! `weir tap STAGE`: prints a live sample of the events leaving a stage of
//! a running weir (one JSON object per line), through its admin API. For
//! debugging in production: at most `PER_BATCH` events of a batch are
//! sampled, nothing is sampled while no one listens, and a slow terminal
//! loses samples rather than slowing the pipeline.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `weir tap`.
#[derive(Args, Debug)]
pub struct TapArgs {
    /// The stage: `source:NAME`, `step:NAME`, `sink:NAME`, or just NAME
    /// (looked up among steps, then sinks, then sources).
    pub stage: String,
    /// How many events to print before exiting.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// The admin server (HOST:PORT); default `WEIR_ADMIN_ADDR`.
    #[arg(long)]
    pub admin: Option<String>,
}

/// Runs the command.
pub fn tap(args: TapArgs) -> ExitCode {
    let admin = match crate::admin_client::address(args.admin) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let result = crate::admin_client::block_on(async {
        let stage = resolve(&admin, &args.stage).await?;
        let mut out = std::io::stdout().lock();
        crate::admin_client::events(
            &admin,
            &format!("/api/v1/tap/{stage}?limit={}", args.limit),
            |data| writeln!(out, "{data}").is_ok(),
        )
        .await
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) | Err(e) => fail(&e),
    }
}

/// `NAME` → the first stage id with that name, from the live view's graph.
async fn resolve(admin: &str, stage: &str) -> Result<String, String> {
    if stage.contains(':') {
        return Ok(stage.to_string());
    }
    let mut view = None;
    crate::admin_client::events(admin, "/api/v1/pipeline/stream", |data| {
        view = serde_json::from_str::<serde_json::Value>(data).ok();
        false
    })
    .await?;
    let nodes = view
        .as_ref()
        .and_then(|v| v["graph"]["nodes"].as_array().cloned())
        .unwrap_or_default();
    for kind in ["step", "sink", "source"] {
        if let Some(n) = nodes
            .iter()
            .find(|n| n["kind"] == kind && n["name"] == stage)
        {
            return Ok(n["id"].as_str().unwrap_or_default().to_string());
        }
    }
    let known: Vec<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
    Err(format!("no stage `{stage}`; stages: {}", known.join(", ")))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
