//! `export` and `import` in the LSST export format. The format, the
//! mapping of storage classes and the import protocol live in
//! `quanta_butler::transfers`; this is parsing and output.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Args;
use quanta_butler::{ExportOptions, ExportTransfer, ImportOptions, ImportSummary};
use quanta_datastore::TransferMode;

use crate::output::print_json;
use crate::repo_cmds::parse_binds;

#[derive(Args)]
pub struct ExportArgs {
    repo: PathBuf,
    /// The export directory (created; must not hold an export.yaml yet).
    out: PathBuf,
    /// Collections to export (CHAINED with their children; the RUNs of the datasets come along).
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
    /// copy, link (hard link), symlink, or none (paths stay relative to
    /// this repo's datastore: the export is then not self-contained).
    #[arg(long, default_value = "copy")]
    transfer: String,
    /// Carry the provenance of the datasets (the quanta that produced them)
    /// in quanta-extras.json; `quanta import` restores it.
    #[arg(long)]
    with_provenance: bool,
    #[arg(long)]
    json: bool,
}

/// Which datasets of a repository: collections, types, where clause.
#[derive(Args)]
pub struct QueryArgs {
    /// Collections to search (CHAINED with their children).
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
}

impl QueryArgs {
    fn options(self, transfer: ExportTransfer, with_provenance: bool) -> Result<ExportOptions> {
        Ok(ExportOptions {
            binds: parse_binds(&self.binds)?,
            collections: self.collections,
            dataset_types: self.dataset_types,
            where_text: self.where_clause,
            transfer,
            with_provenance,
        })
    }
}

#[derive(Args)]
pub struct TransferArgs {
    /// The source repository (read only).
    src: PathBuf,
    /// The destination repository (must exist).
    dst: PathBuf,
    #[command(flatten)]
    query: QueryArgs,
    /// copy, link (hard link) or symlink (to the source datastore's files).
    #[arg(long, default_value = "copy")]
    transfer: String,
    /// Carry the provenance of the datasets (the quanta that produced them).
    #[arg(long)]
    with_provenance: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RetrieveArgs {
    repo: PathBuf,
    /// The directory the files go to (created), at their datastore-relative paths.
    dest: PathBuf,
    #[command(flatten)]
    query: QueryArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    repo: PathBuf,
    /// An export directory holding export.yaml (from quanta or `butler export`).
    dir: PathBuf,
    /// copy, link (hard link), symlink, auto (hard link, else copy), or
    /// direct (files stay where they are, recorded by absolute path).
    #[arg(long, default_value = "copy")]
    transfer: String,
    #[arg(long)]
    json: bool,
}

pub fn export(args: ExportArgs) -> Result<ExitCode> {
    let transfer: ExportTransfer = args.transfer.parse().map_err(|e: String| anyhow!(e))?;
    let binds = parse_binds(&args.binds)?;
    let butler = crate::plugins::open_butler_read_only(&args.repo)?;
    let summary = butler.export(
        &args.out,
        &ExportOptions {
            collections: args.collections,
            dataset_types: args.dataset_types,
            where_text: args.where_clause,
            binds,
            transfer,
            with_provenance: args.with_provenance,
        },
    )?;
    if args.json {
        print_json(&summary)?;
    } else {
        println!(
            "exported {} datasets, {} dimension records, {} collections to {}",
            summary.datasets,
            summary.records,
            summary.collections,
            args.out.display()
        );
        if summary.without_file > 0 {
            println!("left out {} datasets without a file", summary.without_file);
        }
        if summary.not_self_contained {
            println!("files not transferred: paths are relative to the source datastore root");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn import(args: ImportArgs) -> Result<ExitCode> {
    let transfer: TransferMode = args.transfer.parse()?;
    let mut butler = crate::plugins::open_butler(&args.repo)?;
    let summary = butler.import(&args.dir, ImportOptions::new(transfer))?;
    if args.json {
        print_json(&summary)?;
    } else {
        print_import_summary("imported", &summary);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_import_summary(verb: &str, summary: &ImportSummary) {
    let s = &summary.stats;
    println!(
        "{verb} {} datasets ({} already present), {} files, {} dimension records, {} dataset types, {} collections, {} associations",
        s.datasets, s.datasets_present, summary.files, s.records, s.dataset_types, s.collections, s.associations
    );
    if summary.files_present > 0 {
        println!(
            "kept {} files a killed earlier run had put in place (verified)",
            summary.files_present
        );
    }
    if s.quanta > 0 {
        println!("restored the provenance of {} quanta", s.quanta);
    }
    for field in &summary.dropped_fields {
        println!("dropped record field {field}: not in this repo's universe");
    }
}

pub fn transfer(args: TransferArgs) -> Result<ExitCode> {
    let mode: TransferMode = args.transfer.parse()?;
    // Not direct either: the destination would record files another
    // repository's removals delete.
    if matches!(
        mode,
        TransferMode::Move | TransferMode::Auto | TransferMode::Direct
    ) {
        return Err(anyhow!(
            "transfer mode `{}`: expected copy, link or symlink",
            args.transfer
        ));
    }
    let options = args
        .query
        .options(ExportTransfer::None, args.with_provenance)?;
    let source = crate::plugins::open_butler_read_only(&args.src)?;
    let mut dest = crate::plugins::open_butler(&args.dst)?;
    let summary = dest.transfer_from(&source, &options, mode)?;
    if args.json {
        print_json(&summary)?;
    } else {
        print_import_summary("transferred", &summary.import);
        if summary.without_file > 0 {
            println!("left out {} datasets without a file", summary.without_file);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn retrieve(args: RetrieveArgs) -> Result<ExitCode> {
    let options = args.query.options(ExportTransfer::None, false)?;
    let butler = crate::plugins::open_butler_read_only(&args.repo)?;
    let summary = butler.retrieve(&args.dest, &options)?;
    if args.json {
        print_json(&summary)?;
    } else {
        for f in &summary.files {
            println!(
                "{} {}",
                if f.copied { "copied " } else { "present" },
                args.dest.join(&f.path).display()
            );
        }
        println!(
            "retrieved {} files ({} already present) into {}",
            summary.copied,
            summary.already_present,
            args.dest.display()
        );
        if summary.without_file > 0 {
            println!("{} datasets have no file", summary.without_file);
        }
    }
    Ok(ExitCode::SUCCESS)
}
