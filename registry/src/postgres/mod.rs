//! The PostgreSQL backend: what only a database server has. Connecting by
//! libpq's conventions ([`connection`]) and PostgreSQL's half of the
//! registry's database interface ([`database`]): statements with `$N`
//! placeholders, values bound by the type the server infers for each
//! parameter, rows read by column type, errors classified by SQLSTATE.
//!
//! So far the interface runs on PostgreSQL (tested on a real server,
//! `registry/tests/postgres_database.rs`); a `Registry` does not yet (see
//! `crate::database`).

pub(crate) mod connection;
pub(crate) mod database;
