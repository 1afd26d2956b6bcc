//! `weir`: the stream processor's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: events are allocated on the
/// I/O threads and freed on the shards' (and the other way round), the
/// pattern glibc's arenas handle worst (see docs/benchmarks.md, `http`).
/// Not (yet) the C code's `malloc`: its `override` feature gave the
/// `kafka` source a third more rate, but is held back until an
/// exactly-once test failure seen with it is explained
/// (docs/benchmarks.md, "mimalloc for C").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weir runs pipelines of functions over event streams.
#[derive(Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its sources end or SIGINT/SIGTERM.
    Run {
        /// The pipeline file (TOML).
        file: PathBuf,
        /// Watch the pipeline file and its functions' files, and deploy a
        /// `wasm`, `python` or `node` step's new version when one changes
        /// (as SIGHUP does).
        #[arg(long)]
        watch: bool,
        /// Serve the admin API and dashboard on HOST:PORT (overrides the
        /// file's `admin.listen`; bind to loopback unless the network is
        /// trusted).
        #[arg(long, value_name = "HOST:PORT")]
        admin_addr: Option<String>,
    },
    /// Check a pipeline file without running it.
    Validate {
        /// The pipeline file (TOML).
        file: PathBuf,
    },
    /// Run a pipeline's steps offline over sample events and print the outcome.
    Test {
        /// The pipeline file (TOML).
        file: PathBuf,
        /// Sample events, one value per line (JSON lines).
        #[arg(long)]
        input: PathBuf,
        /// Exit 0 even if some events failed.
        #[arg(long)]
        allow_failures: bool,
    },
    /// Measure throughput against a baseline measured in the same run.
    Bench(weir::bench::BenchArgs),
    /// List, deploy, canary, promote or roll back the WebAssembly functions of a running weir.
    Functions(weir::functions_cli::FunctionsArgs),
    /// Run a dead-letter file (envelopes) through a pipeline's steps and sinks again.
    Replay {
        /// The dead letters: a `file` sink's output with `format = "envelope"`.
        dead_letters: PathBuf,
        /// The pipeline file whose steps and sinks they go through.
        pipeline: PathBuf,
        /// Keep the replay's position here, so a stopped replay resumes.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Print a live sample of the events leaving a stage of a running weir.
    Tap(weir::tap_cli::TapArgs),
    /// Watch a running weir in the terminal: rates, lag, load, where backpressure starts.
    Top(weir::top_cli::TopArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            file,
            watch,
            admin_addr,
        } => weir::run::run(&file, watch, admin_addr),
        Command::Validate { file } => weir::validate::validate(&file),
        Command::Test {
            file,
            input,
            allow_failures,
        } => weir::test_steps::test(&file, &input, allow_failures),
        Command::Bench(args) => weir::bench::bench(args),
        Command::Functions(args) => weir::functions_cli::functions(args),
        Command::Replay {
            dead_letters,
            pipeline,
            checkpoint,
        } => weir::replay::replay(&dead_letters, &pipeline, checkpoint),
        Command::Tap(args) => weir::tap_cli::tap(args),
        Command::Top(args) => weir::top_cli::top(args),
    }
}
