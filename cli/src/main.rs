//! The `quanta` binary: argument parsing, output formatting and logging
//! set-up over the quanta libraries. Logic lives in the libraries.
//!
//! Exit codes: 0 success, 1 a failure of the work (some quanta failed, some
//! files did not verify), 2 bad input or usage.

mod output;
mod repo_cmds;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "quanta", version, about = "Batch execution of astronomy pipelines on a Gen3-Butler-style data repository")]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or inspect repositories.
    #[command(subcommand)]
    Repo(repo_cmds::RepoCommand),
    /// Insert dimension records.
    #[command(subcommand)]
    Dimensions(repo_cmds::DimensionsCommand),
    /// Register or list dataset types.
    #[command(subcommand, name = "dataset-type")]
    DatasetType(repo_cmds::DatasetTypeCommand),
    /// Ingest existing files as datasets.
    Ingest(repo_cmds::IngestArgs),
    /// Create, chain and list collections.
    #[command(subcommand)]
    Collection(repo_cmds::CollectionCommand),
    /// Query datasets in collections.
    #[command(name = "query-datasets")]
    QueryDatasets(repo_cmds::QueryDatasetsArgs),
    /// Query data IDs over dimensions.
    #[command(name = "query-data-ids")]
    QueryDataIds(repo_cmds::QueryDataIdsArgs),
    /// Run a read-only SQL SELECT against the registry.
    Sql {
        repo: PathBuf,
        query: String,
        #[arg(long)]
        json: bool,
    },
    /// Read a dataset back and print it (JSON datasets) or write its bytes.
    Get(repo_cmds::GetArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(2),
            };
        }
    };
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Repo(cmd) => repo_cmds::repo(cmd),
        Command::Dimensions(cmd) => repo_cmds::dimensions(cmd),
        Command::DatasetType(cmd) => repo_cmds::dataset_type(cmd),
        Command::Ingest(args) => repo_cmds::ingest(args),
        Command::Collection(cmd) => repo_cmds::collection(cmd),
        Command::QueryDatasets(args) => repo_cmds::query_datasets(args),
        Command::QueryDataIds(args) => repo_cmds::query_data_ids(args),
        Command::Sql { repo, query, json } => repo_cmds::sql(&repo, &query, json),
        Command::Get(args) => repo_cmds::get(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
