//! Who may write what in a repository whose registry is shared on a
//! PostgreSQL server: `repo grant` gives a database role the repository,
//! `collection grant`/`revoke`/`grants` manage which collections beyond
//! `u/<role>/` a role may write. The server enforces them (see
//! `quanta_registry`'s access module); these commands are the
//! administrator's, who created the repository.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::output::{print_json, print_table};

#[derive(Args)]
pub struct GrantRepoArgs {
    repo: PathBuf,
    /// The database role (lower-case letters, digits, `_`).
    role: String,
}

#[derive(Args)]
pub struct GrantCollectionArgs {
    repo: PathBuf,
    /// A collection's name, or a prefix ending in `/` for every name under it.
    collection: String,
    /// The database role.
    role: String,
}

#[derive(Args)]
pub struct ListGrantsArgs {
    repo: PathBuf,
    #[arg(long)]
    json: bool,
}

/// `quanta repo grant REPO ROLE`.
pub fn grant_repo(args: GrantRepoArgs) -> Result<ExitCode> {
    let butler = crate::plugins::open_butler(&args.repo)?;
    butler.registry().grant_access(&args.role)?;
    println!(
        "role {} may now read {} and write the collections under u/{}/",
        args.role,
        args.repo.display(),
        args.role
    );
    Ok(ExitCode::SUCCESS)
}

/// `quanta collection grant REPO COLLECTION ROLE`.
pub fn grant_collection(args: GrantCollectionArgs) -> Result<ExitCode> {
    let butler = crate::plugins::open_butler(&args.repo)?;
    butler
        .registry()
        .grant_collection(&args.collection, &args.role)?;
    println!("role {} may write {}", args.role, args.collection);
    Ok(ExitCode::SUCCESS)
}

/// `quanta collection revoke REPO COLLECTION ROLE`.
pub fn revoke_collection(args: GrantCollectionArgs) -> Result<ExitCode> {
    let butler = crate::plugins::open_butler(&args.repo)?;
    if butler
        .registry()
        .revoke_collection(&args.collection, &args.role)?
    {
        println!(
            "revoked: role {} may no longer write {}",
            args.role, args.collection
        );
    } else {
        println!("role {} had no grant of {}", args.role, args.collection);
    }
    Ok(ExitCode::SUCCESS)
}

/// `quanta collection grants REPO`.
pub fn list_grants(args: ListGrantsArgs) -> Result<ExitCode> {
    let butler = crate::plugins::open_butler_read_only(&args.repo)?;
    let grants = butler.registry().collection_grants()?;
    if args.json {
        let grants: Vec<serde_json::Value> = grants
            .iter()
            .map(|(collection, role)| serde_json::json!({"collection": collection, "role": role}))
            .collect();
        print_json(&grants)?;
    } else {
        let rows: Vec<Vec<String>> = grants
            .into_iter()
            .map(|(collection, role)| vec![collection, role])
            .collect();
        print_table(&["collection", "role"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}
