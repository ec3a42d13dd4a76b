//! The PostgreSQL backend: what only a database server has. Connecting by
//! libpq's conventions ([`connection`]) and PostgreSQL's half of the
//! registry's database interface ([`database`]): statements with `$N`
//! placeholders, values bound by the type the server infers for each
//! parameter, rows read by column type, errors classified by SQLSTATE.
//!
//! A `Registry` opens on PostgreSQL in a namespace (a schema) of a
//! database (`Registry::create_postgres`, `open_postgres`); the region SQL
//! function is PL/pgSQL there ([`region_functions`]), and the
//! references the bulk writers fill (a dataset's dimension records, type
//! and RUN, a quantum's RUN, an input link's quantum) are set-wise
//! triggers ([`set_keys`]).
//! `registry/tests/backends.rs` runs the same scenarios on both backends
//! and compares.

pub(crate) mod connection;
pub(crate) mod database;
pub(crate) mod region_functions;
pub(crate) mod set_keys;
