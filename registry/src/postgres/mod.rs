//! The PostgreSQL backend: what only a database server has. Connecting by
//! libpq's conventions ([`connection`]) and PostgreSQL's half of the
//! registry's database interface ([`database`]): statements with `$N`
//! placeholders, values bound by the type the server infers for each
//! parameter, rows read by column type, errors classified by SQLSTATE.
//!
//! A `Registry` opens on PostgreSQL in a namespace (a schema) of a
//! database (`Registry::create_postgres`, `open_postgres`); everything but
//! merge's writer runs there (`registry/tests/backends.rs` runs one
//! scenario on both backends and compares).

pub(crate) mod connection;
pub(crate) mod database;
