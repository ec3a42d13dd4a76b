//! The SQLite backend: what only an embedded SQLite file has. Opening,
//! tuning and checkpointing connections ([`connection`]), SQLite's errors
//! classified for callers ([`error`]), values bound through rusqlite
//! ([`value`]), the region SQL functions registered on each connection
//! ([`region_functions`]), SQLite's allocator ([`alloc`]) and the
//! copy-free statement of the merge's hot path ([`static_statement`]).
//!
//! SQLite's half of the registry's database interface is [`database`];
//! the modules not yet on that interface run their statements on the
//! rusqlite connection directly. The SQL they write is in the [`Dialect`]
//! common to both backends where it can be.
//!
//! [`Dialect`]: crate::dialect::Dialect

pub(crate) mod alloc;
mod connection;
pub(crate) mod database;
mod error;
pub(crate) mod region_functions;
pub(crate) mod static_statement;
pub(crate) mod value;

pub(crate) use connection::{
    create, open, read_for_scan, run_read_only, set_durable_commits, with_scan_cache, BulkWriting,
};
#[cfg(test)]
pub(crate) use connection::{PAGE_SIZE, SCAN_CACHE_KIB};
