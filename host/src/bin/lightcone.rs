//! The `lightcone` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lightcone_host::cli;

/// The server's allocator (why: the workspace manifest, beside the dependency).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "lightcone", version, about = "Lightcone: a database that is also its own server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SpacetimeDB's HTTP and WebSocket API) on a data directory.
    Start(cli::StartArgs),
    /// Verify a database's commit log and replay it in memory (read-only), printing tables,
    /// row counts, offsets and replay speed.
    Replay {
        /// The database's data directory (or its `log` directory).
        data_dir: PathBuf,
        /// Replay only up to and including this transaction offset (point in time).
        #[arg(long, value_name = "TX_OFFSET")]
        until: Option<u64>,
    },
    #[command(flatten)]
    Client(cli::Command),
}

/// What is logged (to stderr) unless `RUST_LOG` says otherwise: for the server, Lightcone's own
/// `info` lines — each database's recovery and the log's I/O path, snapshots, module updates —
/// and every crate's warnings; for the other commands, warnings only.
const SERVER_LOG_FILTER: &str =
    "warn,lightcone=info,lightcone_host=info,lightcone_wal=info,lightcone_snapshot=info";
const CLIENT_LOG_FILTER: &str = "warn";

fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // `try_init` fails only if a subscriber is installed already: then that one logs.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(if matches!(cli.command, Command::Start(_)) {
        SERVER_LOG_FILTER
    } else {
        CLIENT_LOG_FILTER
    });
    let result = match cli.command {
        Command::Replay { data_dir, until } => replay(&data_dir, until),
        Command::Start(args) => cli::run_start(args).map_err(|e| e.to_string()),
        Command::Client(command) => cli::run(command).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn replay(data_dir: &std::path::Path, until: Option<u64>) -> Result<(), String> {
    let bar = ProgressBar::hidden();
    let result = lightcone_host::replay::run_replay(data_dir, until, |done, total| {
        if bar.is_hidden() && total >= 1_000 {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} transactions ({per_sec}, eta {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = result.map_err(|e| e.to_string())?;
    print!("{}", report.render());
    Ok(())
}
