//! The `quanta` binary: argument parsing, output formatting and logging
//! set-up over the quanta libraries. Logic lives in the libraries.
//!
//! Exit codes: 0 success, 1 a failure of the work (some quanta failed, some
//! files did not verify, a full disk, a registry locked too long), 2 bad
//! input or usage. An error is classified here, at the edge, from the typed
//! errors in its chain ([`exit_code_of`]).

mod access_cmds;
mod alloc;
mod batch_cmds;
mod demo;
mod exec_cmds;
mod merge_cmds;
mod output;
mod plugins;
mod preflight_cmds;
mod remove_cmds;
mod repo_cmds;
mod run_quantum;
mod skymap_cmds;
mod transfer_cmds;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: alloc::QuantaAllocator = alloc::QuantaAllocator;

#[derive(Parser)]
#[command(
    name = "quanta",
    version,
    about = "Batch execution of astronomy pipelines on a Gen3-Butler-style data repository"
)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole flow on an embedded default: a temp repo, the reference workload, preflight, run, merge.
    Demo(demo::DemoArgs),
    /// Create or inspect repositories.
    #[command(subcommand)]
    Repo(repo_cmds::RepoCommand),
    /// Insert dimension records.
    #[command(subcommand)]
    Dimensions(repo_cmds::DimensionsCommand),
    /// Register a skymap (its tracts and patches, with regions).
    #[command(subcommand)]
    Skymap(skymap_cmds::SkymapCommand),
    /// Register or list dataset types.
    #[command(subcommand, name = "dataset-type")]
    DatasetType(repo_cmds::DatasetTypeCommand),
    /// Ingest existing files as datasets.
    Ingest(repo_cmds::IngestArgs),
    /// Export datasets with their metadata as an LSST export directory (export.yaml).
    Export(transfer_cmds::ExportArgs),
    /// Import an LSST export directory (from quanta or `butler export`), all or nothing.
    Import(transfer_cmds::ImportArgs),
    /// Transfer datasets with their metadata from one repository into another (export + import in memory).
    Transfer(transfer_cmds::TransferArgs),
    /// Copy the files of a query's datasets out of the datastore, keeping its relative layout.
    Retrieve(transfer_cmds::RetrieveArgs),
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
        /// Interrupt the query after this many seconds (0: no limit).
        #[arg(long, allow_negative_numbers = true, default_value_t = repo_cmds::DEFAULT_SQL_TIMEOUT_SECS)]
        timeout: f64,
    },
    /// Remove RUN collections with their datasets, files, quanta and provenance (crash-safe).
    #[command(name = "remove-runs")]
    RemoveRuns(remove_cmds::RemoveRunsArgs),
    /// Remove the files (--unstore) or the datasets (--purge) a dataset query finds (crash-safe).
    #[command(name = "prune-datasets")]
    PruneDatasets(remove_cmds::PruneDatasetsArgs),
    /// Read a dataset back and print it (JSON datasets) or write its bytes.
    Get(repo_cmds::GetArgs),
    /// Build the quantum graph of a pipeline and write it as a bundle.
    Preflight(preflight_cmds::PreflightArgs),
    /// Inspect a bundle: show (verifies it), dot.
    #[command(subcommand)]
    Bundle(preflight_cmds::BundleCommand),
    /// Execute a whole bundle on this machine (resumable).
    Run(exec_cmds::RunArgs),
    /// Run one quantum directly against the repository (outputs into a RUN, provenance recorded).
    #[command(name = "run-quantum")]
    RunQuantum(run_quantum::RunQuantumArgs),
    /// Execute one batch job's quanta of a bundle (a cluster or a list).
    Worker(exec_cmds::WorkerArgs),
    /// Fold a bundle's journals into the registry: verify outputs, register datasets and provenance.
    Merge(merge_cmds::MergeArgs),
    /// Per-task progress of a bundle from its journals alone (no database).
    Status(merge_cmds::StatusArgs),
    /// The quanta and inputs a dataset came from (or, with --downstream, what was made from it).
    Provenance(merge_cmds::ProvenanceArgs),
    /// Per-task counts, timing and failures of a merged RUN.
    Report(merge_cmds::ReportArgs),
    /// Submit a bundle's clusters to a batch system (Slurm job arrays + a final merge job).
    Submit(batch_cmds::SubmitArgs),
    /// Cancel every batch job of a bundle's submission.
    Cancel(batch_cmds::CancelArgs),
    /// Resubmit what has not succeeded (more memory after out-of-memory; deterministic failures stay).
    Restart(batch_cmds::RestartArgs),
}

impl Command {
    /// Whether the command only reads and prints: its output is the whole
    /// of its work, so a reader that stops reading (`quanta provenance … |
    /// head`) ends it the Unix way, by SIGPIPE, as it ends `ls` or `grep`.
    /// Commands that write keep Rust's ignored SIGPIPE: they talk to child
    /// processes over pipes (task interpreters, batch systems), where a
    /// closed pipe is an error to handle, not a reason to die mid-write.
    fn only_reads(&self) -> bool {
        use repo_cmds::{CollectionCommand, DatasetTypeCommand, DimensionsCommand, RepoCommand};
        match self {
            Command::Repo(cmd) => matches!(cmd, RepoCommand::Universe { .. }),
            Command::Dimensions(cmd) => matches!(cmd, DimensionsCommand::Show { .. }),
            Command::DatasetType(cmd) => matches!(cmd, DatasetTypeCommand::List { .. }),
            Command::Collection(cmd) => {
                matches!(
                    cmd,
                    CollectionCommand::List { .. } | CollectionCommand::Grants(_)
                )
            }
            Command::QueryDatasets(_)
            | Command::QueryDataIds(_)
            | Command::Sql { .. }
            | Command::Get(_)
            | Command::Bundle(_)
            | Command::Status(_)
            | Command::Provenance(_)
            | Command::Report(_) => true,
            Command::Demo(_)
            | Command::Skymap(_)
            | Command::Ingest(_)
            | Command::Export(_)
            | Command::Import(_)
            | Command::Transfer(_)
            | Command::Retrieve(_)
            | Command::RemoveRuns(_)
            | Command::PruneDatasets(_)
            | Command::Preflight(_)
            | Command::Run(_)
            | Command::RunQuantum(_)
            | Command::Worker(_)
            | Command::Merge(_)
            | Command::Submit(_)
            | Command::Cancel(_)
            | Command::Restart(_) => false,
        }
    }

    /// Commands that hold a plan of every dataset in memory and place or
    /// link a file per dataset: gigabytes of small allocations made, freed
    /// and made again. With the kernel's transparent huge pages (which
    /// mimalloc asks for) each fault on freed-and-returned memory zeroes
    /// 2 MiB, a quarter of these commands' time at 10^6 datasets
    /// (benches/transfer/README.md). The graph-building commands keep
    /// huge pages: preflight is ~10% slower without them.
    fn churns_memory(&self) -> bool {
        matches!(
            self,
            Command::Export(_) | Command::Import(_) | Command::Transfer(_)
        )
    }
}

/// Restores the default action of SIGPIPE (see [`Command::only_reads`]).
fn die_on_closed_stdout() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no
    // handler; nothing else in the process has touched SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    init_logging(cli.verbose);
    if cli.command.only_reads() {
        die_on_closed_stdout();
    }
    if cli.command.churns_memory() {
        alloc::without_transparent_huge_pages();
    }
    let result = match cli.command {
        Command::Demo(args) => demo::demo(args),
        Command::Repo(cmd) => repo_cmds::repo(cmd),
        Command::Dimensions(cmd) => repo_cmds::dimensions(cmd),
        Command::Skymap(cmd) => skymap_cmds::skymap(cmd),
        Command::DatasetType(cmd) => repo_cmds::dataset_type(cmd),
        Command::Ingest(args) => repo_cmds::ingest(args),
        Command::Collection(cmd) => repo_cmds::collection(cmd),
        Command::QueryDatasets(args) => repo_cmds::query_datasets(args),
        Command::QueryDataIds(args) => repo_cmds::query_data_ids(args),
        Command::Sql {
            repo,
            query,
            json,
            timeout,
        } => repo_cmds::sql(&repo, &query, json, timeout),
        Command::RemoveRuns(args) => remove_cmds::remove_runs(args),
        Command::Export(args) => transfer_cmds::export(args),
        Command::Import(args) => transfer_cmds::import(args),
        Command::Transfer(args) => transfer_cmds::transfer(args),
        Command::Retrieve(args) => transfer_cmds::retrieve(args),
        Command::PruneDatasets(args) => remove_cmds::prune_datasets(args),
        Command::Get(args) => repo_cmds::get(args),
        Command::Preflight(args) => preflight_cmds::preflight(args),
        Command::Bundle(cmd) => preflight_cmds::bundle(cmd),
        Command::Run(args) => exec_cmds::run(args),
        Command::Worker(args) => exec_cmds::worker(args),
        Command::RunQuantum(args) => run_quantum::run_quantum(args),
        Command::Merge(args) => merge_cmds::merge(args),
        Command::Status(args) => merge_cmds::status(args),
        Command::Provenance(args) => merge_cmds::provenance(args),
        Command::Report(args) => merge_cmds::report(args),
        Command::Submit(args) => batch_cmds::submit(args),
        Command::Cancel(args) => batch_cmds::cancel(args),
        Command::Restart(args) => batch_cmds::restart(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::from(exit_code_of(&e))
        }
    }
}

/// The error with its causes, each said once: a library error's message
/// often already includes its source's (`could not write X: No space left
/// on device`), which `{:#}` would print a second time.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// The registry error a library error wraps: `#[error(transparent)]`
/// wrappers hide it from the chain of sources.
fn registry_error<'e>(
    cause: &'e (dyn std::error::Error + 'static),
) -> Option<&'e quanta_registry::RegistryError> {
    use quanta_butler::{ButlerError, MergeError};
    use quanta_preflight::PreflightError;
    let of_butler = |b: &'e ButlerError| match b {
        ButlerError::Registry(r) => Some(r),
        _ => None,
    };
    if let Some(r) = cause.downcast_ref::<quanta_registry::RegistryError>() {
        return Some(r);
    }
    if let Some(b) = cause.downcast_ref::<ButlerError>() {
        return of_butler(b);
    }
    if let Some(t) = cause.downcast_ref::<quanta_butler::TransferError>() {
        return match t {
            quanta_butler::TransferError::Registry(r) => Some(r),
            quanta_butler::TransferError::Butler(b) => of_butler(b),
            _ => None,
        };
    }
    if let Some(m) = cause.downcast_ref::<MergeError>() {
        return match m {
            MergeError::Registry(r) => Some(r),
            MergeError::Butler(b) => of_butler(b),
            _ => None,
        };
    }
    match cause.downcast_ref::<PreflightError>()? {
        PreflightError::Registry(r) => Some(r),
        PreflightError::Butler(b) => of_butler(b),
        _ => None,
    }
}

/// 1 for a failure of the work (a busy or locked registry, a full disk, an
/// I/O error, a time limit), 2 for bad input or usage: decided from the
/// typed errors in the chain, bad input when none says otherwise.
fn exit_code_of(e: &anyhow::Error) -> u8 {
    use std::io::ErrorKind;
    let work_failure = e.chain().any(|cause| {
        if let Some(t) = cause.downcast_ref::<quanta_butler::TransferError>() {
            if let Some(work) = t.is_work_failure() {
                return work;
            }
        }
        if let Some(r) = registry_error(cause) {
            return r.is_work_failure();
        }
        // A journal that changed while the command read it (replaced by
        // another process): nothing the user gave was wrong, a rerun reads
        // it afresh.
        if let Some(quanta_butler::MergeError::Journal(j)) =
            cause.downcast_ref::<quanta_butler::MergeError>()
        {
            return matches!(j, quanta_core::JournalError::Changed { .. });
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            // Errors that name a bad path or file the user gave are input.
            return !matches!(
                io.kind(),
                ErrorKind::NotFound
                    | ErrorKind::PermissionDenied
                    | ErrorKind::AlreadyExists
                    | ErrorKind::InvalidInput
                    | ErrorKind::InvalidData
                    | ErrorKind::UnexpectedEof
            );
        }
        false
    });
    if work_failure {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> quanta_registry::RegistryError {
        quanta_registry::DatabaseError::new(
            quanta_registry::DatabaseErrorKind::Busy,
            "database is locked",
        )
        .into()
    }

    #[test]
    fn failures_of_the_work_exit_1_and_bad_input_2() {
        use std::io::{Error, ErrorKind};
        let full = anyhow::Error::new(Error::new(ErrorKind::StorageFull, "disk full"))
            .context("writing the bundle");
        assert_eq!(exit_code_of(&full), 1);
        let missing = anyhow::Error::new(Error::new(ErrorKind::NotFound, "no such file"));
        assert_eq!(exit_code_of(&missing), 2);
        // Behind `#[error(transparent)]` wrappers too.
        let wrapped =
            quanta_butler::MergeError::Butler(quanta_butler::ButlerError::Registry(busy()));
        assert_eq!(exit_code_of(&anyhow::Error::new(wrapped)), 1);
        let preflight = quanta_preflight::PreflightError::Registry(busy());
        assert_eq!(exit_code_of(&anyhow::Error::new(preflight)), 1);
        let bad = quanta_preflight::PreflightError::Invalid("bad pipeline".into());
        assert_eq!(exit_code_of(&anyhow::Error::new(bad)), 2);
        let changed = quanta_butler::MergeError::Journal(quanta_core::JournalError::Changed {
            path: "w.journal".into(),
            offset: 12,
            detail: "a record checksum mismatch".into(),
        });
        assert_eq!(exit_code_of(&anyhow::Error::new(changed)), 1);
        let not_journal =
            quanta_butler::MergeError::Journal(quanta_core::JournalError::NotAJournal {
                path: "w.journal".into(),
                reason: "the file is empty".into(),
            });
        assert_eq!(exit_code_of(&anyhow::Error::new(not_journal)), 2);
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let e = anyhow::Error::new(io).context("could not write `x`: No space left on device");
        assert_eq!(
            error_text(&e),
            "could not write `x`: No space left on device"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}
