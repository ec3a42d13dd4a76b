//! Who may write what in a registry shared on a PostgreSQL server: each
//! user connects as their own role and writes only the collections under
//! `u/<role>/` and those an administrator granted them (a collection's
//! name, or a prefix ending in `/`). The server enforces it with row-level
//! security on every table whose rows belong to a collection, so raw SQL
//! cannot get around it; the registry's owner (the role that created it,
//! the administrator) is not subject to the policies.
//!
//! Owns: the policy DDL, the grant table, and the administrator's calls
//! (give a role access to the registry, grant and revoke collections). Must
//! not: create or drop roles (the server's administrator does), or decide
//! anything on the client that the server does not enforce. A SQLite
//! registry is one user's file: its access is the file system's, and these
//! calls say so.

use crate::error::{RegistryError, Result};
use crate::registry::Registry;
use crate::schema::quote;

/// Tables whose rows belong to a collection, with the policy condition
/// that says whether the current role may write a row (SQL over the row's
/// columns).
const OWNED_TABLES: [(&str, &str); 11] = [
    ("collection", "quanta_may_write(name)"),
    ("collection_chain", "quanta_may_write_id(parent_id)"),
    ("dataset", "quanta_may_write_id(run_id)"),
    ("dataset_tags", "quanta_may_write_id(collection_id)"),
    ("dataset_calibs", "quanta_may_write_id(collection_id)"),
    ("quantum", "quanta_may_write_id(run_id)"),
    (
        "quantum_input",
        "quanta_may_write_id((SELECT q.run_id FROM quantum q WHERE q.id = quantum_id))",
    ),
    ("run_provenance", "quanta_may_write_id(run_id)"),
    ("removal_run", "quanta_may_write_id(run_id)"),
    (
        "dataset_trash",
        "quanta_may_write_id((SELECT d.run_id FROM dataset d WHERE d.id = dataset_id))",
    ),
    ("removed_dataset", "quanta_may_write(run)"),
];

/// Tables only the administrator writes: the registry's metadata and the
/// grants themselves.
const ADMIN_TABLES: [&str; 2] = ["quanta_meta", "collection_grant"];

/// The grant table, the two functions the policies call, and the policies
/// (PostgreSQL only; run after every other table exists). The functions
/// keep the search path they were made with, so a policy evaluated in
/// another role's session finds the registry's tables.
pub(crate) fn access_ddl() -> String {
    let mut ddl = String::from(
        r#"
CREATE TABLE IF NOT EXISTS collection_grant (
  -- A collection's name, or a prefix ending in '/' (every name under it).
  prefix TEXT NOT NULL,
  role TEXT NOT NULL,
  PRIMARY KEY (prefix, role)
);
CREATE OR REPLACE FUNCTION quanta_may_write(collection_name TEXT) RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
  SELECT starts_with(collection_name, 'u/' || current_user || '/')
      OR EXISTS (SELECT 1 FROM collection_grant g
                 WHERE g.role = current_user
                   AND (g.prefix = collection_name
                        OR (right(g.prefix, 1) = '/' AND starts_with(collection_name, g.prefix))))
$$;
CREATE OR REPLACE FUNCTION quanta_may_write_id(collection_id BIGINT) RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
  SELECT coalesce((SELECT quanta_may_write(c.name) FROM collection c WHERE c.id = collection_id), false)
$$;
"#,
    );
    // Dropped first: a policy has no IF NOT EXISTS, and the DDL runs again
    // on an existing registry.
    for (table, may_write) in OWNED_TABLES {
        ddl.push_str(&format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n"));
        for (policy, rule) in [
            ("quanta_read", "FOR SELECT USING (true)".to_string()),
            (
                "quanta_insert",
                format!("FOR INSERT WITH CHECK ({may_write})"),
            ),
            (
                "quanta_update",
                format!("FOR UPDATE USING ({may_write}) WITH CHECK ({may_write})"),
            ),
            ("quanta_delete", format!("FOR DELETE USING ({may_write})")),
        ] {
            ddl.push_str(&format!(
                "DROP POLICY IF EXISTS {policy} ON {table};\n\
                 CREATE POLICY {policy} ON {table} {rule};\n"
            ));
        }
    }
    ddl
}

impl Registry {
    /// Refuses on a SQLite registry, whose access is its file's.
    fn shared_namespace(&self, what: &str) -> Result<String> {
        match self.location() {
            crate::RegistryLocation::Postgres { namespace, .. } => Ok(namespace.clone()),
            crate::RegistryLocation::Sqlite(path) => Err(RegistryError::Invalid(format!(
                "{}: {what} is for a registry shared on a PostgreSQL server; a SQLite \
                 registry's access is its file's permissions",
                path.display()
            ))),
        }
    }

    /// Lets the database role `role` use this registry (administrator
    /// only): read everything, write the shared tables (dimension records,
    /// dataset types) and, through the policies, its own collections.
    pub fn grant_access(&self, role: &str) -> Result<()> {
        let namespace = self.shared_namespace("granting access")?;
        let (ns, role) = (quote(&namespace), quote_role(role)?);
        let mut sql = format!(
            "GRANT USAGE ON SCHEMA {ns} TO {role};\n\
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {ns} TO {role};\n\
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA {ns} TO {role};\n"
        );
        for table in ADMIN_TABLES {
            sql.push_str(&format!(
                "REVOKE INSERT, UPDATE, DELETE ON {ns}.{table} FROM {role};\n"
            ));
        }
        let tx = self.db.transaction()?;
        tx.execute_batch(&sql)?;
        tx.commit()
    }

    /// Lets `role` write the collection `prefix` (a name, or every name
    /// under a prefix ending in `/`): administrator only, as the grant
    /// table is theirs. Granting twice is a no-op.
    pub fn grant_collection(&self, prefix: &str, role: &str) -> Result<()> {
        self.shared_namespace("granting a collection")?;
        check_grant(prefix, role)?;
        self.db.execute(
            "INSERT INTO collection_grant (prefix, role) VALUES (?1, ?2) \
             ON CONFLICT (prefix, role) DO NOTHING",
            &[&prefix, &role],
        )?;
        Ok(())
    }

    /// Takes back a grant; whether there was one.
    pub fn revoke_collection(&self, prefix: &str, role: &str) -> Result<bool> {
        self.shared_namespace("revoking a collection")?;
        Ok(self.db.execute(
            "DELETE FROM collection_grant WHERE prefix = ?1 AND role = ?2",
            &[&prefix, &role],
        )? > 0)
    }

    /// The grants, as (prefix, role), sorted.
    pub fn collection_grants(&self) -> Result<Vec<(String, String)>> {
        self.shared_namespace("listing grants")?;
        self.db.query_rows(
            "SELECT prefix, role FROM collection_grant ORDER BY prefix, role",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}

/// A role name as an identifier: quoted, and only of the characters a
/// role made by `CREATE ROLE name` without quotes has.
fn quote_role(role: &str) -> Result<String> {
    if !quanta_core::dimensions::is_safe_identifier(role) || role.len() > 63 {
        return Err(RegistryError::Invalid(format!(
            "role `{role}`: a role name here is lower-case letters, digits and `_`, \
             not starting with a digit, at most 63 bytes"
        )));
    }
    Ok(quote(role))
}

fn check_grant(prefix: &str, role: &str) -> Result<()> {
    quote_role(role)?;
    if prefix.is_empty() || prefix == "/" {
        return Err(RegistryError::Invalid(
            "a grant names a collection, or a prefix ending in `/`; not every collection".into(),
        ));
    }
    Ok(())
}
