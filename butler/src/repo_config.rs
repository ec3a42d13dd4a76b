//! Where a repository's registry is. A repository is a directory holding
//! its datastore (`datastore/`) and either its SQLite registry
//! (`registry.sqlite3`) or a registry configuration (`registry.yaml`)
//! naming a namespace (a schema) of a PostgreSQL database:
//!
//! ```yaml
//! backend: postgresql
//! url: postgresql://quanta@db.example.org:5432/survey
//! namespace: hsc_rc2
//! ```
//!
//! The configuration never holds a password: the connection finds it by
//! libpq's rules (`PGPASSWORD`, else `~/.pgpass` or `PGPASSFILE`), so the
//! file can be shared and world-readable. [`registry_location`] is the one
//! place that decides which backend a repository directory uses.

use std::io::Write;
use std::path::{Path, PathBuf};

use quanta_registry::RegistryLocation;
use serde::{Deserialize, Serialize};

use crate::butler::REGISTRY_FILE;
use crate::error::ButlerError;

/// The registry configuration of a repository whose registry is on a
/// database server.
pub const REGISTRY_CONFIG_FILE: &str = "registry.yaml";

/// The file a new configuration is written to before it is renamed into
/// place: a crash leaves at most this, which no command reads.
const REGISTRY_CONFIG_TEMP: &str = ".registry.yaml.tmp";

/// The registry of a new repository ([`crate::Butler::create_repo_on`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewRegistry {
    /// `registry.sqlite3` inside the repository directory.
    Sqlite,
    /// The schema `namespace` of the PostgreSQL database `url`.
    Postgres { url: String, namespace: String },
}

/// What `registry.yaml` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryConfig {
    backend: String,
    url: String,
    namespace: String,
}

fn repo_error(root: &Path, reason: impl Into<String>) -> ButlerError {
    ButlerError::Repo {
        repo: root.display().to_string(),
        reason: reason.into(),
    }
}

/// Where the registry of the repository at `root` is, read from what the
/// directory holds; an error naming what is missing or wrong when it is
/// not a repository.
pub fn registry_location(root: &Path) -> Result<RegistryLocation, ButlerError> {
    if !root.exists() {
        return Err(repo_error(root, "no such repo directory"));
    }
    if !root.is_dir() {
        return Err(repo_error(
            root,
            format!(
                "not a repo directory (a repo is a directory holding datastore/ and \
                 {REGISTRY_FILE} or {REGISTRY_CONFIG_FILE})"
            ),
        ));
    }
    let config = root.join(REGISTRY_CONFIG_FILE);
    let sqlite = root.join(REGISTRY_FILE);
    match (config.exists(), sqlite.exists()) {
        (true, true) => Err(repo_error(
            root,
            format!(
                "holds both {REGISTRY_FILE} and {REGISTRY_CONFIG_FILE}: which registry is the \
                 repository's is ambiguous; move the one that is not away"
            ),
        )),
        (true, false) => read_config(root, &config),
        (false, true) => Ok(RegistryLocation::Sqlite(sqlite)),
        (false, false) => Err(repo_error(
            root,
            format!(
                "not a quanta repo: no {REGISTRY_FILE} or {REGISTRY_CONFIG_FILE} (create one with \
                 `quanta repo create`)"
            ),
        )),
    }
}

fn read_config(root: &Path, path: &Path) -> Result<RegistryLocation, ButlerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ButlerError::Io {
        action: "read the registry configuration",
        path: path.to_path_buf(),
        source,
    })?;
    let config: RegistryConfig = serde_yaml_ng::from_str(&text).map_err(|e| {
        repo_error(
            root,
            format!(
                "{REGISTRY_CONFIG_FILE} is not a registry configuration ({e}); it holds \
                 `backend: postgresql`, `url:` and `namespace:`"
            ),
        )
    })?;
    if config.backend != "postgresql" {
        return Err(repo_error(
            root,
            format!(
                "{REGISTRY_CONFIG_FILE}: unknown backend `{}` (known: postgresql; a SQLite \
                 registry is the file {REGISTRY_FILE})",
                config.backend
            ),
        ));
    }
    check_postgres_url(&config.url)
        .map_err(|reason| repo_error(root, format!("{REGISTRY_CONFIG_FILE}: {reason}")))?;
    Ok(RegistryLocation::Postgres {
        url: config.url,
        namespace: config.namespace,
    })
}

/// Checks that `url` is a PostgreSQL URL a repository may keep:
/// `postgresql://[user@]host[:port]/database`, without a password (in the
/// user part or as a `password=` parameter). The reason it is not, or
/// `Ok`.
pub fn check_postgres_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    else {
        return Err(format!(
            "`{url}` is not a PostgreSQL URL: expected postgresql://user@host:port/database"
        ));
    };
    let (authority, query) = match rest.split_once('?') {
        Some((before, query)) => (before.split('/').next().unwrap_or(""), query),
        None => (rest.split('/').next().unwrap_or(""), ""),
    };
    let has_password_param = query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("password"));
    let has_password_in_user = authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'));
    if has_password_param || has_password_in_user {
        return Err(format!(
            "the registry URL `{}` holds a password, which the repository would keep in a \
             plain file: give the URL without it (postgresql://user@host:port/database) and the \
             password in PGPASSWORD or ~/.pgpass (host:port:database:user:password, mode 0600)",
            redact(url)
        ));
    }
    Ok(())
}

/// `url` with its password (if any) replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail: Vec<String> = tail
        .split('&')
        .map(|pair| match pair.split_once("password=") {
            Some((before, _)) if before.is_empty() || before.ends_with('?') => {
                format!("{before}password=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{scheme}://{authority}{}", tail.join("&"))
}

/// The namespace a repository at `root` gets when `repo create` is given
/// none: its directory's name made a valid schema name (lower case; any
/// character but a letter, digit or `_` becomes `_`; `r_` before a leading
/// digit or PostgreSQL's reserved `pg_`; at most 63 bytes), so
/// `/data/HSC-RC2` is `hsc_rc2`.
pub fn default_namespace(root: &Path) -> Result<String, ButlerError> {
    let name = std::fs::canonicalize(root)
        .ok()
        .or_else(|| Some(root.to_path_buf()))
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| {
            repo_error(
                root,
                "cannot name a namespace after this path; give one with --namespace",
            )
        })?;
    let mut ns: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ns.is_empty() || ns.starts_with(|c: char| c.is_ascii_digit()) || ns.starts_with("pg_") {
        ns.insert_str(0, "r_");
    }
    ns.truncate(63);
    Ok(ns)
}

/// Writes `registry.yaml` naming `url` and `namespace` into `root`
/// atomically: a temporary file, synced, renamed into place, and the
/// directory synced, so a repository either has its whole configuration
/// or none.
pub fn write_registry_config(root: &Path, url: &str, namespace: &str) -> Result<(), ButlerError> {
    let config = RegistryConfig {
        backend: "postgresql".into(),
        url: url.to_string(),
        namespace: namespace.to_string(),
    };
    let text = serde_yaml_ng::to_string(&config).expect("a registry configuration serializes");
    let temp = root.join(REGISTRY_CONFIG_TEMP);
    let io = |action: &'static str, path: PathBuf| {
        move |source| ButlerError::Io {
            action,
            path,
            source,
        }
    };
    let mut file = std::fs::File::create(&temp)
        .map_err(io("create the registry configuration", temp.clone()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write the registry configuration", temp.clone()))?;
    let path = root.join(REGISTRY_CONFIG_FILE);
    std::fs::rename(&temp, &path).map_err(io("rename into place", path.clone()))?;
    std::fs::File::open(root)
        .and_then(|dir| dir.sync_all())
        .map_err(io("sync the repository directory", root.to_path_buf()))
}

/// Whether a file name inside a repository is one of its registry's files
/// (the SQLite database and its companions, or the configuration).
pub(crate) fn is_registry_file_name(name: &str) -> bool {
    name.starts_with(REGISTRY_FILE) || name == REGISTRY_CONFIG_FILE || name == REGISTRY_CONFIG_TEMP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_a_password_is_refused_and_never_echoed() {
        for url in [
            "postgresql://quanta:s3cret@localhost:5432/db",
            "postgres://quanta:s3cret@localhost/db",
            "postgresql://quanta@localhost/db?password=s3cret",
            "postgresql://quanta@localhost/db?sslmode=disable&password=s3cret",
        ] {
            let reason = check_postgres_url(url).unwrap_err();
            assert!(reason.contains("PGPASSWORD"), "{reason}");
            assert!(!reason.contains("s3cret"), "{reason}");
        }
        for url in [
            "postgresql://quanta@localhost:5432/db",
            "postgresql://localhost/db",
            "postgresql://quanta@localhost/db?sslmode=disable",
        ] {
            assert_eq!(check_postgres_url(url), Ok(()), "{url}");
        }
        assert!(check_postgres_url("mysql://x@y/z")
            .unwrap_err()
            .contains("not a PostgreSQL URL"));
    }

    #[test]
    fn a_default_namespace_is_a_valid_schema_name() {
        let ns = |p: &str| default_namespace(Path::new(p)).unwrap();
        assert_eq!(ns("/no/such/HSC-RC2"), "hsc_rc2");
        assert_eq!(ns("/no/such/2024.repo"), "r_2024_repo");
        assert_eq!(ns("/no/such/pg_stuff"), "r_pg_stuff");
        assert_eq!(ns(&format!("/no/such/{}", "a".repeat(80))).len(), 63);
    }

    #[test]
    fn the_configuration_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        write_registry_config(dir.path(), "postgresql://q@h:5432/d", "ns").unwrap();
        assert!(!dir.path().join(REGISTRY_CONFIG_TEMP).exists());
        assert_eq!(
            registry_location(dir.path()).unwrap(),
            RegistryLocation::Postgres {
                url: "postgresql://q@h:5432/d".into(),
                namespace: "ns".into()
            }
        );
        std::fs::write(dir.path().join(REGISTRY_FILE), b"").unwrap();
        let e = registry_location(dir.path()).unwrap_err().to_string();
        assert!(e.contains("ambiguous"), "{e}");
    }
}
