//! Connecting to a PostgreSQL server by libpq's conventions: the URL names
//! the server, database and role, never a password; the password comes
//! from `PGPASSWORD`, else the password file (`PGPASSFILE`, else
//! `~/.pgpass`), which the `postgres` crate does not read by itself.

use std::path::PathBuf;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::error::{DatabaseError, DatabaseErrorKind, RegistryError, Result};

/// How long a connection attempt waits for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the server `url` (`postgresql://[user@]host:port/db`).
/// Without a user in the URL, as libpq: `PGUSER`, else the login name, so
/// that one repository shared by several people (its `registry.yaml`
/// naming no user) connects each as their own role.
pub(crate) fn connect(url: &str) -> Result<Client> {
    let mut config: postgres::Config = url.parse().map_err(|e| {
        RegistryError::Invalid(format!("`{url}` is not a PostgreSQL connection URL: {e}"))
    })?;
    if config.get_user().is_none() {
        let user = ["PGUSER", "USER", "LOGNAME"]
            .iter()
            .find_map(|var| std::env::var(var).ok().filter(|u| !u.is_empty()))
            .ok_or_else(|| {
                RegistryError::Invalid(format!(
                    "`{url}` names no user, and neither PGUSER nor USER is set: \
                     give one as postgresql://user@host:port/database or in PGUSER"
                ))
            })?;
        config.user(&user);
    }
    if config.get_password().is_none() {
        if let Some(password) = libpq_password(&config) {
            config.password(password);
        }
    }
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .connect(NoTls)
        .map_err(|e| {
            DatabaseError::new(
                DatabaseErrorKind::Unavailable,
                format!("cannot connect to {url}: {}", with_causes(&e)),
            )
            .into()
        })
}

/// An error and its causes: the driver's own message alone is only "db
/// error" or "error connecting to server".
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

/// The password libpq would use for `config`'s connection: `PGPASSWORD`,
/// else the first matching line (`host:port:database:user:password`, `*`
/// matching anything, `\` escaping) of the password file.
fn libpq_password(config: &postgres::Config) -> Option<String> {
    if let Ok(password) = std::env::var("PGPASSWORD") {
        return Some(password);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user()?.to_string();
    let database = config.get_dbname().map_or(user.clone(), str::to_string);
    password_in(&text, &[host, port, database, user])
}

/// The password of the first line of a password file whose first four
/// fields match `wanted` (host, port, database, user).
fn password_in(text: &str, wanted: &[String; 4]) -> Option<String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(pgpass_fields)
        .find(|fields| {
            fields.len() == 5
                && wanted
                    .iter()
                    .zip(fields)
                    .all(|(want, field)| field == "*" || field == want)
        })
        .map(|mut fields| fields.remove(4))
}

fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("starts with one field");
        match c {
            '\\' => field.extend(chars.next()),
            ':' => fields.push(String::new()),
            c => field.push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_password_file_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    other:5432:db:me:no\n\
                    localhost:*:db:me:first\\:part\n\
                    *:*:*:*:fallback\n";
        let wanted = |host: &str| {
            [
                host.to_string(),
                "5432".to_string(),
                "db".to_string(),
                "me".to_string(),
            ]
        };
        assert_eq!(
            password_in(text, &wanted("localhost")).as_deref(),
            Some("first:part")
        );
        assert_eq!(
            password_in(text, &wanted("elsewhere")).as_deref(),
            Some("fallback")
        );
        assert_eq!(password_in("a:b:c\n", &wanted("localhost")), None);
    }
}
