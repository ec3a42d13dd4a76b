//! Repository commands: create, dimension records, dataset types, ingest,
//! collections, queries and read-only SQL (removals and `repo check` are in
//! `remove_cmds`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use quanta_butler::{Butler, IngestItem};
use quanta_core::{CollectionType, DataId, DatasetType, DimensionUniverse};
use quanta_datastore::{DatastoreConfig, InMemoryDataset, ReadParameters, TransferMode};
use quanta_registry::{parse_records_csv, parse_records_json, Binds, SqlValue};

use crate::output::{print_json, print_table};

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Create a new repository: a directory with a datastore and a SQLite
    /// registry, or with --registry a registry in a namespace (schema) of a
    /// PostgreSQL database, named by the directory's registry.yaml.
    Create {
        repo: PathBuf,
        /// A PostgreSQL database for the registry: postgresql://user@host:port/db,
        /// never with a password (give it in PGPASSWORD or ~/.pgpass).
        #[arg(long, value_name = "URL")]
        registry: Option<String>,
        /// The registry's namespace (schema) in that database (default: the
        /// repo directory's name made a schema name, e.g. HSC-RC2 → hsc_rc2).
        #[arg(long, requires = "registry")]
        namespace: Option<String>,
        /// A dimension universe YAML file (default: the built-in one, close to LSST's).
        #[arg(long)]
        universe: Option<PathBuf>,
        /// A datastore configuration JSON file (templates, fsync).
        #[arg(long)]
        datastore_config: Option<PathBuf>,
    },
    /// Show a repository's dimension universe.
    Universe { repo: PathBuf },
    /// Check that registry and datastore agree (files, sizes, checksums, orphans,
    /// interrupted removals); exit 1 when something is wrong.
    Check(crate::remove_cmds::CheckArgs),
    /// Give a database role a repository shared on PostgreSQL: it reads
    /// everything and writes the collections under u/<role>/ (administrator).
    Grant(crate::access_cmds::GrantRepoArgs),
    /// Upgrade a repository made by an older quanta to this one's registry
    /// schema (in one transaction; nothing to do when it is current).
    Migrate { repo: PathBuf },
}

#[derive(Subcommand)]
pub enum DimensionsCommand {
    /// Insert dimension records from JSON (keyed by element) or CSV (one element, with --element); all or nothing.
    Insert {
        repo: PathBuf,
        file: PathBuf,
        /// The element of a CSV file's records.
        #[arg(long)]
        element: Option<String>,
    },
    /// Print an element's records (regions as the JSON they were inserted as).
    Show {
        repo: PathBuf,
        element: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DatasetTypeCommand {
    /// Register a dataset type.
    Register {
        repo: PathBuf,
        name: String,
        #[arg(long, value_delimiter = ',')]
        dimensions: Vec<String>,
        #[arg(long)]
        storage_class: String,
        /// Datasets of this type are calibrations, found by validity range.
        #[arg(long)]
        calibration: bool,
    },
    /// List dataset types.
    List {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove a dataset type (refused while datasets of it exist).
    Remove { repo: PathBuf, name: String },
}

#[derive(Args)]
pub struct IngestArgs {
    repo: PathBuf,
    #[arg(long)]
    run: String,
    #[arg(long)]
    dataset_type: String,
    /// The data ID of the single FILE: k=v,k=v.
    #[arg(long, requires = "file", conflicts_with = "manifest")]
    data_id: Option<String>,
    /// CSV (`path,dim1,dim2,...` header) or JSON lines (`{"path":..., "data_id":{...}}`);
    /// relative paths are relative to the manifest's directory.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// copy, move, link (hard link), symlink, auto (hard link, else copy) or
    /// direct (the file stays where it is; the registry records its absolute
    /// path, and no removal ever deletes it). A move removes each source only
    /// after its dataset is registered; rerunning an interrupted ingest skips
    /// what is already registered with the same content.
    #[arg(long, default_value = "copy")]
    transfer: String,
    /// Register at most this many datasets per transaction; an interrupted
    /// ingest keeps what it committed, and a rerun skips it.
    #[arg(long, default_value_t = quanta_butler::DEFAULT_INGEST_COMMIT)]
    commit_every: std::num::NonZeroUsize,
    file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum CollectionCommand {
    /// Create a collection.
    Create {
        repo: PathBuf,
        name: String,
        /// RUN, TAGGED, CHAINED or CALIBRATION.
        #[arg(long = "type", default_value = "RUN")]
        collection_type: String,
        #[arg(long)]
        doc: Option<String>,
    },
    /// Set the children of a CHAINED collection (created if missing), in search order.
    Chain {
        repo: PathBuf,
        parent: String,
        #[arg(required = true)]
        children: Vec<String>,
    },
    /// Add datasets (by UUID) to a TAGGED collection.
    Tag {
        repo: PathBuf,
        collection: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Certify calibration datasets (by UUID) into a CALIBRATION collection for [begin, end) (MJD).
    Certify {
        repo: PathBuf,
        collection: String,
        #[arg(long, allow_hyphen_values = true)]
        begin: Option<f64>,
        #[arg(long, allow_hyphen_values = true)]
        end: Option<f64>,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List collections.
    List {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove a collection: a RUN with its datasets and files; TAGGED, CHAINED or CALIBRATION alone.
    Remove(crate::remove_cmds::RemoveCollectionArgs),
    /// Remove datasets from a TAGGED collection (the datasets stay).
    Untag(crate::remove_cmds::UntagArgs),
    /// Decertify calibrations over [begin, end), cutting validity ranges that overlap it.
    Decertify(crate::remove_cmds::DecertifyArgs),
    /// Let a database role write a collection (or every name under a prefix
    /// ending in `/`) of a repository shared on PostgreSQL (administrator).
    Grant(crate::access_cmds::GrantCollectionArgs),
    /// Take a collection grant back.
    Revoke(crate::access_cmds::GrantCollectionArgs),
    /// List the collection grants.
    Grants(crate::access_cmds::ListGrantsArgs),
}

#[derive(Args)]
pub struct QueryDatasetsArgs {
    repo: PathBuf,
    #[arg(long, value_delimiter = ',', required = true)]
    collections: Vec<String>,
    #[arg(long = "dataset-type", value_delimiter = ',')]
    dataset_types: Vec<String>,
    #[arg(long = "where", default_value = "")]
    where_clause: String,
    /// A bind parameter for the where clause: name=value.
    #[arg(long = "bind")]
    binds: Vec<String>,
    /// Every match in every collection, not only the first along the search path.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct QueryDataIdsArgs {
    repo: PathBuf,
    #[arg(long, value_delimiter = ',', required = true)]
    dimensions: Vec<String>,
    #[arg(long = "where", default_value = "")]
    where_clause: String,
    #[arg(long = "bind")]
    binds: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct GetArgs {
    repo: PathBuf,
    dataset_type: String,
    /// k=v,k=v
    #[arg(long)]
    data_id: String,
    #[arg(long, value_delimiter = ',', required = true)]
    collections: Vec<String>,
    /// Write the stored bytes to this file instead of printing (atomically; a path
    /// inside the repository is refused). With a component or read
    /// parameters, what was read, encoded by its storage class's formatter.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// A read parameter NAME=VALUE, repeatable: `bbox=x0,y0,x1,y1` (pixels,
    /// x1 and y1 exclusive) for images and exposures, `columns=X,Y` and
    /// `rows=START:END` for catalogs.
    #[arg(long = "parameters")]
    parameters: Vec<String>,
}

pub fn repo(cmd: RepoCommand) -> Result<ExitCode> {
    match cmd {
        RepoCommand::Create {
            repo,
            registry,
            namespace,
            universe,
            datastore_config,
        } => {
            let universe = match universe {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    DimensionUniverse::from_yaml(&text)
                        .with_context(|| path.display().to_string())?
                }
                None => DimensionUniverse::default_universe(),
            };
            let config = match datastore_config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text).with_context(|| path.display().to_string())?
                }
                None => DatastoreConfig::default(),
            };
            create_repo(&repo, registry, namespace, &universe, config)?;
        }
        RepoCommand::Universe { repo } => {
            let butler = crate::plugins::open_butler_read_only(&repo)?;
            print!("{}", butler.universe().source());
        }
        RepoCommand::Check(args) => return crate::remove_cmds::check(args),
        RepoCommand::Grant(args) => return crate::access_cmds::grant_repo(args),
        RepoCommand::Migrate { repo } => {
            let done = Butler::migrate_repo(&repo, &mut |holder| {
                eprintln!(
                    "waiting for {holder} to finish (registry writer lock of {})",
                    repo.display()
                )
            })?;
            if done.from == done.to {
                println!(
                    "{}: registry schema version {} is current",
                    repo.display(),
                    done.to
                );
            } else {
                println!(
                    "{}: registry schema version {} → {} ({} overlaps related, {} indexes built, \
                     {} foreign keys checked set-wise)",
                    repo.display(),
                    done.from,
                    done.to,
                    done.overlaps,
                    done.indexes,
                    done.foreign_keys
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `repo create`: on a SQLite registry, or in a namespace of the
/// PostgreSQL database `registry`.
fn create_repo(
    repo: &Path,
    registry: Option<String>,
    namespace: Option<String>,
    universe: &DimensionUniverse,
    config: DatastoreConfig,
) -> Result<()> {
    let Some(url) = registry else {
        Butler::create_repo(repo, universe, config)?;
        println!("created repo {}", repo.display());
        return Ok(());
    };
    quanta_butler::check_postgres_url(&url).map_err(anyhow::Error::msg)?;
    let namespace = match namespace {
        Some(ns) => ns,
        None => quanta_butler::default_namespace(repo)?,
    };
    let new = quanta_butler::NewRegistry::Postgres {
        url: url.clone(),
        namespace: namespace.clone(),
    };
    // Every failure here is the user's to fix (a server that is not
    // reachable at that URL, a role that may not create a schema, a taken
    // namespace): exit 2, with the server's reason.
    if let Err(e) = Butler::create_repo_on(repo, &new, universe, config) {
        bail!("cannot create repo {}: {e}", repo.display());
    }
    println!(
        "created repo {} (registry: namespace {namespace} of {url})",
        repo.display()
    );
    Ok(())
}

pub fn dimensions(cmd: DimensionsCommand) -> Result<ExitCode> {
    match cmd {
        DimensionsCommand::Insert {
            repo,
            file,
            element,
        } => insert_dimension_records(&repo, &file, element),
        DimensionsCommand::Show {
            repo,
            element,
            json,
        } => show_dimension_records(&repo, &element, json),
    }
}

fn show_dimension_records(repo: &Path, element: &str, json: bool) -> Result<ExitCode> {
    let butler = crate::plugins::open_butler_read_only(repo)?;
    let universe = butler.universe().clone();
    let Some(el) = universe.element(element) else {
        bail!("`{element}` is not an element of this repo's dimension universe");
    };
    let records = butler.registry().element_records(element)?;
    if json {
        print_json(&records)?;
        return Ok(ExitCode::SUCCESS);
    }
    let fields = el.record_fields(&universe);
    let header: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            fields
                .iter()
                .map(|f| match r.get(&f.name) {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                })
                .collect()
        })
        .collect();
    print_table(&header, &rows);
    Ok(ExitCode::SUCCESS)
}

fn insert_dimension_records(repo: &Path, file: &Path, element: Option<String>) -> Result<ExitCode> {
    let mut butler = crate::plugins::open_butler(repo)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let source = file.display().to_string();
    let is_csv = element.is_some()
        || file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let records = if is_csv {
        let Some(element) = element else {
            bail!("{source}: a CSV file holds records of one element; say which with --element");
        };
        let universe = butler.universe().clone();
        let el = universe
            .element(&element)
            .with_context(|| format!("`{element}` is not an element of this repo's universe"))?;
        parse_records_csv(&text, &source, el, &universe)?
    } else {
        parse_records_json(&text, &source)?
    };
    let n = butler
        .registry_mut()
        .insert_dimension_records(&records)
        .with_context(|| source.clone())?;
    println!("inserted {n} dimension records");
    Ok(ExitCode::SUCCESS)
}

pub fn dataset_type(cmd: DatasetTypeCommand) -> Result<ExitCode> {
    match cmd {
        DatasetTypeCommand::Register {
            repo,
            name,
            dimensions,
            storage_class,
            calibration,
        } => {
            let mut butler = crate::plugins::open_butler(&repo)?;
            let group = butler.universe().conform(&dimensions)?;
            let dt = DatasetType {
                name,
                dimensions: group,
                storage_class,
                is_calibration: calibration,
            };
            let created = butler.registry_mut().register_dataset_type(&dt)?;
            println!(
                "{} dataset type {dt}",
                if created {
                    "registered"
                } else {
                    "already registered:"
                }
            );
        }
        DatasetTypeCommand::Remove { repo, name } => {
            return crate::remove_cmds::remove_dataset_type(&repo, &name)
        }
        DatasetTypeCommand::List { repo, json } => {
            let butler = crate::plugins::open_butler_read_only(&repo)?;
            let types = butler.registry().list_dataset_types()?;
            if json {
                print_json(&types)?;
            } else {
                let rows: Vec<Vec<String>> = types
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.dimensions.to_string(),
                            t.storage_class.clone(),
                            if t.is_calibration {
                                "yes".into()
                            } else {
                                String::new()
                            },
                        ]
                    })
                    .collect();
                print_table(
                    &["name", "dimensions", "storage class", "calibration"],
                    &rows,
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ingest(args: IngestArgs) -> Result<ExitCode> {
    let mut butler = crate::plugins::open_butler(&args.repo)?;
    let mode: TransferMode = args.transfer.parse()?;
    let options = quanta_butler::IngestOptions {
        transfer: mode,
        commit_every: args.commit_every,
    };
    let summary = match (&args.manifest, &args.file, &args.data_id) {
        (Some(manifest), None, None) => {
            let manifest = quanta_butler::Manifest::new(manifest, butler.universe());
            butler.ingest(&args.run, &args.dataset_type, &manifest, options)?
        }
        (None, Some(file), Some(data_id)) => {
            let item = IngestItem {
                path: file.clone(),
                data_id: DataId::parse_cli(data_id, butler.universe())?,
            };
            butler.ingest(&args.run, &args.dataset_type, &vec![item], options)?
        }
        _ => bail!("give either FILE with --data-id, or --manifest FILE"),
    };
    print!(
        "ingested {} {} datasets into {}",
        summary.ingested, args.dataset_type, args.run
    );
    if summary.already_ingested == 0 {
        println!();
    } else {
        println!("; skipped {} already ingested", summary.already_ingested);
    }
    if summary.sources_not_removed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // The datasets are registered; only the move's last step is unfinished,
    // and a rerun of the same command finishes it.
    for (path, reason) in &summary.sources_not_removed {
        eprintln!(
            "error: could not remove moved source {}: {reason}",
            path.display()
        );
    }
    eprintln!(
        "error: {} sources of registered datasets were not removed; rerun the same ingest to remove them",
        summary.sources_not_removed.len()
    );
    Ok(ExitCode::from(1))
}

fn parse_uuid(text: &str) -> Result<quanta_core::Uuid> {
    quanta_core::Uuid::parse_str(text).with_context(|| format!("`{text}` is not a dataset UUID"))
}

pub fn collection(cmd: CollectionCommand) -> Result<ExitCode> {
    match cmd {
        CollectionCommand::Create {
            repo,
            name,
            collection_type,
            doc,
        } => {
            let t: CollectionType = collection_type.parse()?;
            let mut butler = crate::plugins::open_butler(&repo)?;
            let created = butler
                .registry_mut()
                .register_collection(&name, t, doc.as_deref())?;
            println!(
                "{} {t} collection {name}",
                if created {
                    "created"
                } else {
                    "already exists:"
                }
            );
        }
        CollectionCommand::Chain {
            repo,
            parent,
            children,
        } => {
            let mut butler = crate::plugins::open_butler(&repo)?;
            butler
                .registry_mut()
                .define_collection_chain(&parent, &children)?;
            println!("{parent} → {}", children.join(", "));
        }
        CollectionCommand::Tag {
            repo,
            collection,
            ids,
        } => {
            let mut butler = crate::plugins::open_butler(&repo)?;
            let ids = ids
                .iter()
                .map(|s| parse_uuid(s))
                .collect::<Result<Vec<_>>>()?;
            let n = butler.registry_mut().associate(&collection, &ids)?;
            println!("tagged {n} datasets into {collection}");
        }
        CollectionCommand::Certify {
            repo,
            collection,
            begin,
            end,
            ids,
        } => {
            let mut butler = crate::plugins::open_butler(&repo)?;
            let ids = ids
                .iter()
                .map(|s| parse_uuid(s))
                .collect::<Result<Vec<_>>>()?;
            butler.registry_mut().certify(
                &collection,
                &ids,
                begin.unwrap_or(f64::NEG_INFINITY),
                end.unwrap_or(f64::INFINITY),
            )?;
            println!("certified {} datasets into {collection}", ids.len());
        }
        CollectionCommand::Remove(args) => return crate::remove_cmds::remove_collection(args),
        CollectionCommand::Untag(args) => return crate::remove_cmds::untag(args),
        CollectionCommand::Decertify(args) => return crate::remove_cmds::decertify(args),
        CollectionCommand::Grant(args) => return crate::access_cmds::grant_collection(args),
        CollectionCommand::Revoke(args) => return crate::access_cmds::revoke_collection(args),
        CollectionCommand::Grants(args) => return crate::access_cmds::list_grants(args),
        CollectionCommand::List { repo, json } => {
            let butler = crate::plugins::open_butler_read_only(&repo)?;
            let collections = butler.registry().list_collections()?;
            if json {
                print_json(&collections)?;
            } else {
                let rows: Vec<Vec<String>> = collections
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.collection_type.to_string(),
                            c.children.join(", "),
                        ]
                    })
                    .collect();
                print_table(&["name", "type", "children"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `name=value` binds: an integer, else a float, else a string.
pub(crate) fn parse_binds(binds: &[String]) -> Result<Binds> {
    let mut out = Binds::new();
    for bind in binds {
        let (name, value) = bind
            .split_once('=')
            .with_context(|| format!("--bind `{bind}`: expected name=value"))?;
        let value = SqlValue::parse_cli(value);
        out.insert(name.trim().to_string(), value);
    }
    Ok(out)
}

pub fn query_datasets(args: QueryDatasetsArgs) -> Result<ExitCode> {
    let butler = crate::plugins::open_butler_read_only(&args.repo)?;
    let binds = parse_binds(&args.binds)?;
    // A component (`calexp.wcs`) is found as its parent and listed under
    // the name asked for.
    let mut parents = Vec::with_capacity(args.dataset_types.len());
    let mut as_component: Vec<(String, String)> = Vec::new();
    for name in &args.dataset_types {
        let (parent, component) = butler.registry().resolve_dataset_type(name)?;
        if component.is_some() {
            as_component.push((parent.name.clone(), name.clone()));
        }
        if !parents.contains(&parent.name) {
            parents.push(parent.name);
        }
    }
    let mut found = butler.registry().query_datasets(
        &parents,
        &args.collections,
        &args.where_clause,
        &binds,
        !args.all,
    )?;
    if !as_component.is_empty() {
        let mut listed = Vec::with_capacity(found.len());
        for f in found {
            let parent = &f.dataset_ref.dataset_type;
            let asked_parent = args.dataset_types.iter().any(|n| n == parent);
            for (_, name) in as_component.iter().filter(|(p, _)| p == parent) {
                let mut c = f.clone();
                c.dataset_ref.dataset_type = name.clone();
                listed.push(c);
            }
            if asked_parent {
                listed.push(f);
            }
        }
        found = listed;
    }
    found.sort_by(|a, b| {
        (&a.dataset_ref.dataset_type, &a.dataset_ref.data_id)
            .cmp(&(&b.dataset_ref.dataset_type, &b.dataset_ref.data_id))
    });
    if args.json {
        print_json(&found)?;
    } else {
        let rows: Vec<Vec<String>> = found
            .iter()
            .map(|f| {
                vec![
                    f.dataset_ref.dataset_type.clone(),
                    f.dataset_ref.run.clone(),
                    f.dataset_ref.id.to_string(),
                    f.dataset_ref.data_id.to_string(),
                    f.stored
                        .as_ref()
                        .map(|s| s.path.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["type", "run", "id", "data ID", "path"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn query_data_ids(args: QueryDataIdsArgs) -> Result<ExitCode> {
    let butler = crate::plugins::open_butler_read_only(&args.repo)?;
    let binds = parse_binds(&args.binds)?;
    let ids = butler
        .registry()
        .query_data_ids(&args.dimensions, &args.where_clause, &binds)?;
    if args.json {
        print_json(&ids)?;
    } else {
        let header: Vec<String> = ids
            .first()
            .map(|d| d.keys().map(str::to_string).collect())
            .unwrap_or_else(|| {
                butler
                    .universe()
                    .conform(&args.dimensions)
                    .map(|g| g.names)
                    .unwrap_or_default()
            });
        let rows: Vec<Vec<String>> = ids
            .iter()
            .map(|d| d.iter().map(|(_, v)| v.to_string()).collect())
            .collect();
        let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
        print_table(&header_refs, &rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// `quanta sql`'s default time limit: long enough for any sensible query
/// of a large registry, short enough that a runaway recursive CTE ends.
pub const DEFAULT_SQL_TIMEOUT_SECS: f64 = 300.0;

pub fn sql(repo: &Path, query: &str, json: bool, timeout_secs: f64) -> Result<ExitCode> {
    let limit = if timeout_secs == 0.0 {
        None
    } else {
        let t = timeout_secs;
        Some(
            std::time::Duration::try_from_secs_f64(t)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| {
                    format!("--timeout {t}: expected a number of seconds > 0 (0: no limit)")
                })?,
        )
    };
    let butler = crate::plugins::open_butler_read_only(repo)?;
    let (columns, rows) = butler.registry().sql_read_only_within(query, limit)?;
    if json {
        let objects: Vec<BTreeMap<&str, &serde_json::Value>> = rows
            .iter()
            .map(|row| columns.iter().map(String::as_str).zip(row).collect())
            .collect();
        print_json(&objects)?;
    } else {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "NULL".into(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        let header: Vec<&str> = columns.iter().map(String::as_str).collect();
        print_table(&header, &rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn get(args: GetArgs) -> Result<ExitCode> {
    let butler = crate::plugins::open_butler_read_only(&args.repo)?;
    let data_id = DataId::parse_cli(&args.data_id, butler.universe())?;
    let parameters = ReadParameters::parse(args.parameters.iter().map(String::as_str))
        .context("--parameters")?;
    if let Some(out) = args.output {
        butler.get_to_file_with(
            &args.dataset_type,
            &data_id,
            &args.collections,
            &parameters,
            &out,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let (parent, _, read_class) = butler.resolve_read(&args.dataset_type, &parameters)?;
    let obj = butler.get_with(&args.dataset_type, &data_id, &args.collections, &parameters)?;
    // The parent's formatter produced the value, so it can describe it.
    let formatters = butler.datastore().formatters();
    let described = [&parent.storage_class, &read_class]
        .into_iter()
        .filter_map(|sc| formatters.for_storage_class(sc).ok())
        .find_map(|f| f.describe(&obj));
    match (described, obj) {
        (Some(v), _) | (None, InMemoryDataset::Json(v)) => print_json(&v)?,
        (None, InMemoryDataset::Bytes(b)) => {
            println!("{} bytes (use --output FILE to save them)", b.len())
        }
        (None, other) => println!(
            "a {} dataset (use --output FILE to save its bytes)",
            other.kind()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
