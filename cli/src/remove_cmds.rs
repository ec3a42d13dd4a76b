//! Removal and repository checking: `remove-runs`, `prune-datasets`,
//! `collection remove | untag | decertify`, `dataset-type remove` and
//! `repo check`. The protocol and its guarantees live in
//! `quanta_butler::remove` and `quanta_butler::check`; this is parsing and
//! output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use quanta_butler::{CheckOptions, CheckReport, DatasetSelection, PruneMode, RemovalSummary};
use quanta_core::DataId;

use crate::output::print_json;
use crate::repo_cmds::parse_binds;

#[derive(Args)]
pub struct RemoveRunsArgs {
    repo: PathBuf,
    /// The RUN collections to remove, with every dataset (and file) they own.
    #[arg(required = true)]
    runs: Vec<String>,
    /// Also remove a RUN from the CHAINED collections that name it (refused otherwise).
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["unstore", "purge"])))]
pub struct PruneDatasetsArgs {
    repo: PathBuf,
    /// Collections to search, in order (CHAINED expanded).
    #[arg(long, value_delimiter = ',', required = true)]
    collections: Vec<String>,
    /// Dataset types (every type when absent).
    #[arg(long = "dataset-type", value_delimiter = ',')]
    dataset_types: Vec<String>,
    #[arg(long = "where", default_value = "")]
    where_clause: String,
    /// A bind parameter for the where clause: name=value.
    #[arg(long = "bind")]
    binds: Vec<String>,
    /// Every match in every collection, not only the first along the search path.
    #[arg(long)]
    find_all: bool,
    /// Remove the files only; the datasets stay registered without a file.
    #[arg(long)]
    unstore: bool,
    /// Remove the datasets from the registry (every collection) and their files.
    #[arg(long)]
    purge: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RemoveCollectionArgs {
    repo: PathBuf,
    name: String,
    /// Also remove it from the CHAINED collections that name it (refused otherwise).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct UntagArgs {
    repo: PathBuf,
    /// The TAGGED collection.
    collection: String,
    #[arg(long = "dataset-type", value_delimiter = ',', required = true)]
    dataset_types: Vec<String>,
    #[arg(long = "where", default_value = "")]
    where_clause: String,
    #[arg(long = "bind")]
    binds: Vec<String>,
}

#[derive(Args)]
pub struct DecertifyArgs {
    repo: PathBuf,
    /// The CALIBRATION collection.
    collection: String,
    #[arg(long)]
    dataset_type: String,
    /// Start of the range to decertify (MJD; unbounded when absent).
    #[arg(long, allow_hyphen_values = true)]
    begin: Option<f64>,
    /// End of the range, exclusive (MJD; unbounded when absent).
    #[arg(long, allow_hyphen_values = true)]
    end: Option<f64>,
    /// Only these data IDs (k=v,k=v; repeat for more); every data ID when absent.
    #[arg(long = "data-id")]
    data_ids: Vec<String>,
}

#[derive(Args)]
pub struct CheckArgs {
    repo: PathBuf,
    /// Compare file sizes only, without reading the files.
    #[arg(long)]
    fast: bool,
    /// Finish interrupted removals and move orphans to datastore/.quarantine/repo-check/.
    #[arg(long)]
    repair: bool,
    #[arg(long)]
    json: bool,
}

fn print_summary(summary: &RemovalSummary, json: bool) -> Result<()> {
    if json {
        return print_json(summary);
    }
    let mut parts = Vec::new();
    if !summary.runs.is_empty() {
        parts.push(format!("removed RUN {}", summary.runs.join(", ")));
    }
    parts.push(format!("{} datasets removed", summary.datasets_removed));
    if summary.datasets_unstored > 0 {
        parts.push(format!("{} unstored", summary.datasets_unstored));
    }
    if summary.quanta_removed > 0 {
        parts.push(format!("{} quanta removed", summary.quanta_removed));
    }
    parts.push(format!("{} files removed", summary.files_removed));
    if summary.files_already_gone > 0 {
        parts.push(format!(
            "{} already gone (an interrupted removal finished)",
            summary.files_already_gone
        ));
    }
    if summary.files_left_in_place > 0 {
        parts.push(format!(
            "{} direct files left in place (not the datastore's)",
            summary.files_left_in_place
        ));
    }
    println!("{}", parts.join("; "));
    Ok(())
}

pub fn remove_runs(args: RemoveRunsArgs) -> Result<ExitCode> {
    let mut butler = crate::plugins::open_butler(&args.repo)?;
    let summary = butler.remove_runs(&args.runs, args.force)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn prune_datasets(args: PruneDatasetsArgs) -> Result<ExitCode> {
    let mode = match (args.unstore, args.purge) {
        (true, false) => PruneMode::Unstore,
        (false, true) => PruneMode::Purge,
        _ => bail!("give exactly one of --unstore and --purge"),
    };
    let binds = parse_binds(&args.binds)?;
    let mut butler = crate::plugins::open_butler(&args.repo)?;
    let summary = butler.prune_datasets(
        &DatasetSelection {
            collections: &args.collections,
            dataset_types: &args.dataset_types,
            where_text: &args.where_clause,
            binds: &binds,
            find_all: args.find_all,
        },
        mode,
    )?;
    if !args.json {
        print!("{} datasets matched; ", summary.matched);
    }
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn remove_collection(args: RemoveCollectionArgs) -> Result<ExitCode> {
    let mut butler = crate::plugins::open_butler(&args.repo)?;
    let (kind, summary) = butler.remove_collection(&args.name, args.force)?;
    if kind == quanta_core::CollectionType::Run {
        print_summary(&summary, false)?;
    } else {
        println!("removed {kind} collection {}", args.name);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn untag(args: UntagArgs) -> Result<ExitCode> {
    let binds = parse_binds(&args.binds)?;
    let mut butler = crate::plugins::open_butler(&args.repo)?;
    let n = butler.untag(
        &args.collection,
        &DatasetSelection {
            collections: &[],
            dataset_types: &args.dataset_types,
            where_text: &args.where_clause,
            binds: &binds,
            find_all: true,
        },
    )?;
    println!("untagged {n} datasets from {}", args.collection);
    Ok(ExitCode::SUCCESS)
}

pub fn decertify(args: DecertifyArgs) -> Result<ExitCode> {
    let mut butler = crate::plugins::open_butler(&args.repo)?;
    let data_ids = args
        .data_ids
        .iter()
        .map(|text| DataId::parse_cli(text, butler.universe()))
        .collect::<Result<Vec<_>, _>>()?;
    let stats = butler.registry_mut().decertify(
        &args.collection,
        &args.dataset_type,
        args.begin.unwrap_or(f64::NEG_INFINITY),
        args.end.unwrap_or(f64::INFINITY),
        &data_ids,
    )?;
    println!(
        "decertified {} validity ranges of {} in {}; {} parts outside the range stay certified",
        stats.ranges_removed, args.dataset_type, args.collection, stats.parts_kept
    );
    Ok(ExitCode::SUCCESS)
}

pub fn remove_dataset_type(repo: &Path, name: &str) -> Result<ExitCode> {
    let mut butler = crate::plugins::open_butler(repo)?;
    butler.registry_mut().remove_dataset_type(name)?;
    println!("removed dataset type {name}");
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 when nothing is wrong (or, with --repair, nothing is left
/// wrong), 1 otherwise.
pub fn check(args: CheckArgs) -> Result<ExitCode> {
    let mut butler = if args.repair {
        crate::plugins::open_butler(&args.repo)?
    } else {
        crate::plugins::open_butler_read_only(&args.repo)?
    };
    let report = butler.check(CheckOptions {
        fast: args.fast,
        repair: args.repair,
    })?;
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report, args.fast);
    }
    Ok(if report.problems_left() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(report: &CheckReport, fast: bool) {
    for bad in &report.bad_files {
        println!("registered file {}: {}", bad.path, bad.problem);
    }
    let pending = &report.pending_removals;
    if !pending.is_empty() {
        let finished = if report.removals_finished.is_some() {
            " (finished)"
        } else {
            " (finish it with --repair, or rerun the removal)"
        };
        println!(
            "interrupted removal: {} RUNs ({}), {} datasets{finished}",
            pending.runs.len(),
            pending.runs.join(", "),
            pending.datasets
        );
    }
    let moved = report.orphans_moved > 0;
    for orphan in &report.orphans {
        println!(
            "orphan file {orphan}{}",
            if moved {
                " (moved to .quarantine/repo-check/)"
            } else {
                ""
            }
        );
    }
    println!(
        "checked {} registered files ({}); {} problems found, {} left",
        report.files_checked,
        if fast {
            "sizes only"
        } else {
            "size and BLAKE3"
        },
        report.problems_found(),
        report.problems_left()
    );
}
