//! The registry schema in its PostgreSQL form ([`full_ddl`] with
//! [`Dialect::Postgres`]) on a real PostgreSQL server: the same tables,
//! columns and indexes as a real SQLite registry, and the server enforcing
//! keys, foreign keys and the calibration validity rule.
//!
//! Runs when `QUANTA_POSTGRES_URL` names a server (`ci/postgres/start.sh`
//! starts one and prints its URL); skipped with a message otherwise, unless
//! `QUANTA_REQUIRE_POSTGRES=1`, which makes a missing URL or an unreachable
//! server a failure (CI sets it). The password, as with libpq, comes from
//! the URL, else `PGPASSWORD`, else the password file (`PGPASSFILE`, else
//! `~/.pgpass`): the `postgres` crate reads neither by itself.
//!
//! Each test works in a schema of its own (`test_<random>`), dropped at the
//! end even when the test fails, so tests run in parallel and leave the
//! database as they found it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use postgres::error::SqlState;
use postgres::{Client, NoTls};
use quanta_core::DimensionUniverse;
use quanta_registry::schema::{full_ddl, overlap_table, skypix_overlap_table};
use quanta_registry::{Dialect, Registry};
use uuid::Uuid;

/// A schema of its own on the test server, with the search path set to it
/// (then `public`, where ci/postgres/start.sh created btree_gist).
struct TestSchema {
    client: Client,
    name: String,
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        if let Err(e) = self.client.batch_execute(&drop) {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// The test server's schema, or `None` (after saying why) when no server
/// is configured and none is required.
fn test_schema() -> Option<TestSchema> {
    let required = std::env::var("QUANTA_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let url = std::env::var("QUANTA_POSTGRES_URL").unwrap_or_default();
    if url.is_empty() {
        let why = "QUANTA_POSTGRES_URL is not set (ci/postgres/start.sh prints it)";
        assert!(!required, "QUANTA_REQUIRE_POSTGRES=1 but {why}");
        eprintln!("skipped: {why}");
        return None;
    }
    let mut client = match connect(&url) {
        Ok(client) => client,
        Err(e) if required => panic!("cannot connect to {url}: {e}"),
        Err(e) => {
            eprintln!("skipped: cannot connect to {url}: {e}");
            return None;
        }
    };
    let name = format!("test_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{name}\"; SET search_path TO \"{name}\", public"
        ))
        .expect("creating the test schema");
    Some(TestSchema { client, name })
}

fn connect(url: &str) -> Result<Client, String> {
    let mut config: postgres::Config = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    if config.get_password().is_none() {
        if let Some(password) = libpq_password(&config) {
            config.password(password);
        }
    }
    config
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect(NoTls)
        .map_err(|e| with_causes(&e))
}

/// An error and its causes: the driver's own message alone is only "db
/// error" or "error connecting to server".
fn with_causes(error: &dyn std::error::Error) -> String {
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
    let wanted = [host, port, database, user];
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
        match c {
            '\\' => fields.last_mut().unwrap().extend(chars.next()),
            ':' => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// Creates the registry's tables for `universe` in the test schema.
fn apply_schema(client: &mut Client, universe: &DimensionUniverse) {
    for statement in full_ddl(universe, Dialect::Postgres) {
        if let Err(e) = client.batch_execute(&statement) {
            panic!("{e:?}\nin:\n{statement}");
        }
    }
}

/// The SQLSTATE of a statement that must fail.
fn refused(result: Result<u64, postgres::Error>) -> SqlState {
    match result {
        Ok(n) => panic!("accepted ({n} rows) where a refusal was expected"),
        Err(e) => e
            .code()
            .cloned()
            .unwrap_or_else(|| panic!("refused without an SQLSTATE: {e}")),
    }
}

/// A RUN and a CALIBRATION collection, a calibration dataset type and one
/// dataset of it in the RUN: (calibration collection id, type id,
/// dataset id).
fn one_calibration_dataset(client: &mut Client) -> (i64, i64, Uuid) {
    let id = |client: &mut Client, sql: &str| -> i64 { client.query_one(sql, &[]).unwrap().get(0) };
    let run = id(
        client,
        "INSERT INTO collection (name, type) VALUES ('run', 'RUN') RETURNING id",
    );
    let calib = id(
        client,
        "INSERT INTO collection (name, type) VALUES ('calib', 'CALIBRATION') RETURNING id",
    );
    let type_id = id(
        client,
        "INSERT INTO dataset_type (name, dimensions, storage_class, is_calibration) \
         VALUES ('bias', '[]', 'Json', TRUE) RETURNING id",
    );
    let dataset = Uuid::new_v4();
    client
        .execute(
            "INSERT INTO dataset (id, dataset_type_id, run_id, data_id) VALUES ($1, $2, $3, '{}')",
            &[&dataset, &type_id, &run],
        )
        .unwrap();
    (calib, type_id, dataset)
}

#[test]
fn every_sqlite_table_column_and_index_exists_in_postgres() {
    let Some(mut pg) = test_schema() else { return };
    let universe = DimensionUniverse::default_universe();
    apply_schema(&mut pg.client, &universe);
    // Every statement may run again: an older registry's writer creates
    // the removal tables if they are missing.
    apply_schema(&mut pg.client, &universe);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.sqlite3");
    drop(Registry::create(&path, &universe).unwrap());
    let sqlite = rusqlite::Connection::open(&path).unwrap();
    let strings = |sql: &str| -> BTreeSet<String> {
        let mut stmt = sqlite.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let sqlite_columns = strings(
        "SELECT m.name || '.' || c.name FROM sqlite_master m, pragma_table_info(m.name) c \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
    );
    // Named indexes only: SQLite's automatic ones back PRIMARY KEY and
    // UNIQUE constraints, which PostgreSQL backs with indexes of its own
    // naming.
    let sqlite_indexes =
        strings("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'");
    let pg_strings = |client: &mut Client, sql: &str| -> BTreeSet<String> {
        let rows = client.query(sql, &[&pg.name]).unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    };
    let client = &mut pg.client;
    let mut pg_columns = pg_strings(
        client,
        "SELECT c.table_name || '.' || c.column_name FROM information_schema.columns c \
         JOIN information_schema.tables t USING (table_schema, table_name) \
         WHERE c.table_schema = $1 AND t.table_type = 'BASE TABLE'",
    );
    // The grants of a registry shared by several roles: PostgreSQL's alone.
    pg_columns.retain(|c| !c.starts_with("collection_grant."));
    let pg_indexes = pg_strings(
        client,
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1",
    );
    assert_eq!(sqlite_columns, pg_columns, "tables and columns differ");
    let missing: Vec<_> = sqlite_indexes.difference(&pg_indexes).collect();
    assert!(
        missing.is_empty(),
        "indexes missing in PostgreSQL: {missing:?}"
    );
    // The tables themselves, as the issue names them, from both catalogs.
    let sqlite_tables = strings("SELECT name FROM sqlite_master WHERE type = 'table'");
    let mut pg_tables = pg_strings(
        client,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
    );
    assert!(pg_tables.remove("collection_grant"));
    assert_eq!(sqlite_tables, pg_tables);
    assert!(pg_tables.len() > 30, "{pg_tables:?}");
}

#[test]
fn dataset_quantum_and_bundle_ids_are_native_uuids() {
    let Some(mut pg) = test_schema() else { return };
    apply_schema(&mut pg.client, &DimensionUniverse::default_universe());
    let uuid_columns: BTreeSet<String> = pg
        .client
        .query(
            "SELECT table_name || '.' || column_name FROM information_schema.columns \
             WHERE table_schema = $1 AND data_type = 'uuid'",
            &[&pg.name],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: BTreeSet<String> = [
        "dataset.id",
        "dataset.producer",
        "dataset_calibs.dataset_id",
        "dataset_tags.dataset_id",
        "dataset_trash.dataset_id",
        "quantum.bundle_id",
        "quantum.id",
        "quantum_input.dataset_id",
        "quantum_input.quantum_id",
        "removed_dataset.id",
        "removed_dataset.producer",
        "run_provenance.bundle_id",
    ]
    .map(String::from)
    .into();
    assert_eq!(uuid_columns, expected);
    // A dataset id goes in and comes back as a uuid::Uuid.
    let (_, _, dataset) = one_calibration_dataset(&mut pg.client);
    let row = pg.client.query_one("SELECT id FROM dataset", &[]).unwrap();
    assert_eq!(row.get::<_, Uuid>(0), dataset);
}

#[test]
fn keys_and_foreign_keys_are_enforced_by_the_server() {
    let Some(mut pg) = test_schema() else { return };
    apply_schema(&mut pg.client, &DimensionUniverse::default_universe());
    let c = &mut pg.client;
    let meta = "INSERT INTO quanta_meta (key, value) VALUES ('schema_version', '6')";
    c.execute(meta, &[]).unwrap();
    assert_eq!(refused(c.execute(meta, &[])), SqlState::UNIQUE_VIOLATION);

    // Identity keys: the server numbers collections, and a key written
    // explicitly (BY DEFAULT) is refused again if it is taken.
    let ids: Vec<i64> = ["a", "b"]
        .iter()
        .map(|name| {
            c.query_one(
                "INSERT INTO collection (name, type) VALUES ($1, 'RUN') RETURNING id",
                &[name],
            )
            .unwrap()
            .get(0)
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(
        refused(c.execute(
            "INSERT INTO collection (id, name, type) VALUES ($1, 'c', 'RUN')",
            &[&ids[0]],
        )),
        SqlState::UNIQUE_VIOLATION
    );
    assert_eq!(
        refused(c.execute(
            "INSERT INTO collection (name, type) VALUES ('d', 'FOLDER')",
            &[]
        )),
        SqlState::CHECK_VIOLATION
    );

    // Foreign keys: to a static table, and between dimension tables.
    let missing_run: i64 = ids[1] + 1000;
    assert_eq!(
        refused(c.execute(
            "INSERT INTO collection_chain (parent_id, position, child_id) VALUES ($1, 0, $2)",
            &[&ids[0], &missing_run],
        )),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    assert_eq!(
        refused(c.execute(
            "INSERT INTO \"detector\" (\"instrument\", \"id\") VALUES ('NoCam', 1)",
            &[]
        )),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    c.execute("INSERT INTO \"instrument\" (\"name\") VALUES ('Cam')", &[])
        .unwrap();
    c.execute(
        "INSERT INTO \"detector\" (\"instrument\", \"id\") VALUES ('Cam', 1)",
        &[],
    )
    .unwrap();
    assert_eq!(
        refused(c.execute(
            "INSERT INTO \"detector\" (\"instrument\", \"id\") VALUES ('Cam', 1)",
            &[]
        )),
        SqlState::UNIQUE_VIOLATION
    );
    // A dataset naming a detector record that does not exist.
    let (_, type_id, _) = one_calibration_dataset(c);
    assert_eq!(
        refused(c.execute(
            "INSERT INTO dataset (id, dataset_type_id, run_id, data_id, \"instrument\", \"detector\") \
             VALUES ($1, $2, $3, 'x', 'Cam', 2)",
            &[&Uuid::new_v4(), &type_id, &ids[0]],
        )),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    // The dimension keys of `dataset` are checked per statement: one
    // missing record among many refuses the whole statement.
    let insert_detectors = |c: &mut Client, detectors: &str| {
        c.execute(
            &format!(
                "INSERT INTO dataset (id, dataset_type_id, run_id, data_id, \"instrument\", \"detector\") \
                 SELECT gen_random_uuid(), $1, $2, 'd' || d, 'Cam', d FROM unnest(ARRAY[{detectors}]) d"
            ),
            &[&type_id, &ids[0]],
        )
    };
    c.execute(
        "INSERT INTO \"detector\" (\"instrument\", \"id\") VALUES ('Cam', 3), ('Cam', 4)",
        &[],
    )
    .unwrap();
    assert_eq!(
        refused(insert_detectors(c, "1, 3, 4, 2")),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    assert_eq!(insert_detectors(c, "1, 3").unwrap(), 2);
    // An update that names a missing record is refused too.
    assert_eq!(
        refused(c.execute(
            "UPDATE dataset SET \"detector\" = 9 WHERE \"detector\" = 3",
            &[]
        )),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    // A record a dataset names cannot be removed or rekeyed; one no
    // dataset names can.
    for statement in [
        "DELETE FROM \"detector\" WHERE \"id\" IN (3, 4)",
        "UPDATE \"detector\" SET \"id\" = 5 WHERE \"id\" = 1",
    ] {
        assert_eq!(
            refused(c.execute(statement, &[])),
            SqlState::FOREIGN_KEY_VIOLATION,
            "{statement}"
        );
    }
    assert_eq!(
        c.execute("DELETE FROM \"detector\" WHERE \"id\" = 4", &[])
            .unwrap(),
        1
    );
}

/// The references the bulk writers fill (a dataset's type and RUN, a
/// quantum's RUN, an input link's quantum) are checked per statement, not
/// by foreign keys, with a foreign key's outcomes: a missing parent
/// refuses the statement, a parent that rows name cannot be removed, and
/// a quantum's input links go with it.
#[test]
fn bulk_references_are_checked_per_statement_and_input_links_cascade() {
    let Some(mut pg) = test_schema() else { return };
    apply_schema(&mut pg.client, &DimensionUniverse::default_universe());
    let c = &mut pg.client;
    let (calib, type_id, dataset) = one_calibration_dataset(c);
    let run: i64 = c
        .query_one("SELECT run_id FROM dataset WHERE id = $1", &[&dataset])
        .unwrap()
        .get(0);
    let keys: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid IN \
             (to_regclass('dataset'), to_regclass('quantum'), to_regclass('quantum_input'))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(keys, 0, "per-row foreign keys left");
    let missing = run + calib + 1000;
    let insert_dataset = |c: &mut Client, type_id: i64, run: i64| {
        c.execute(
            "INSERT INTO dataset (id, dataset_type_id, run_id, data_id) \
             SELECT gen_random_uuid(), $1, $2, 'd' || n FROM generate_series(1, 3) n",
            &[&type_id, &run],
        )
    };
    for (t, r) in [(type_id + 1000, run), (type_id, missing)] {
        assert_eq!(
            refused(insert_dataset(c, t, r)),
            SqlState::FOREIGN_KEY_VIOLATION
        );
    }
    let insert_quantum = |c: &mut Client, id: Uuid, run: i64| {
        c.execute(
            "INSERT INTO quantum (id, run_id, bundle_id, task_label, data_id, status, attempts) \
             VALUES ($1, $2, gen_random_uuid(), 'isr', '{}', 'succeeded', 1)",
            &[&id, &run],
        )
    };
    let quantum = Uuid::new_v4();
    assert_eq!(
        refused(insert_quantum(c, quantum, missing)),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    assert_eq!(insert_quantum(c, quantum, run).unwrap(), 1);
    let insert_input = |c: &mut Client, quantum: Uuid| {
        c.execute(
            "INSERT INTO quantum_input (quantum_id, dataset_id, connection) VALUES ($1, $2, 'raw')",
            &[&quantum, &dataset],
        )
    };
    assert_eq!(
        refused(insert_input(c, Uuid::new_v4())),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    assert_eq!(insert_input(c, quantum).unwrap(), 1);
    // Parents that rows name stay; the dataset type and RUN too once the
    // quantum is gone, as long as the dataset is there.
    for statement in [
        "DELETE FROM collection WHERE type = 'RUN'",
        "UPDATE collection SET id = id + 100 WHERE type = 'RUN'",
        "DELETE FROM dataset_type",
        "UPDATE quantum SET id = gen_random_uuid()",
    ] {
        assert_eq!(
            refused(c.execute(statement, &[])),
            SqlState::FOREIGN_KEY_VIOLATION,
            "{statement}"
        );
    }
    assert_eq!(c.execute("DELETE FROM quantum", &[]).unwrap(), 1);
    let inputs: i64 = c
        .query_one("SELECT count(*) FROM quantum_input", &[])
        .unwrap()
        .get(0);
    assert_eq!(inputs, 0, "the input link outlived its quantum");
    assert_eq!(
        refused(c.execute("DELETE FROM collection WHERE type = 'RUN'", &[])),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    // An update that keeps the key is allowed.
    assert_eq!(
        c.execute("UPDATE collection SET doc = 'x' WHERE id = $1", &[&run])
            .unwrap(),
        1
    );
    assert_eq!(c.execute("DELETE FROM dataset", &[]).unwrap(), 1);
    assert_eq!(
        c.execute("DELETE FROM collection WHERE type = 'RUN'", &[])
            .unwrap(),
        1
    );
    assert_eq!(c.execute("DELETE FROM dataset_type", &[]).unwrap(), 1);
}

#[test]
fn calibration_validity_ranges_may_touch_but_not_overlap() {
    let Some(mut pg) = test_schema() else { return };
    apply_schema(&mut pg.client, &DimensionUniverse::default_universe());
    let c = &mut pg.client;
    let (calib, type_id, dataset) = one_calibration_dataset(c);
    let certify = |c: &mut Client, data_id: &str, begin: f64, end: f64| {
        c.execute(
            "INSERT INTO dataset_calibs \
             (collection_id, dataset_id, dataset_type_id, data_id, valid_begin, valid_end) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&calib, &dataset, &type_id, &data_id, &begin, &end],
        )
    };
    certify(c, "d1", 60_000.0, 60_010.0).unwrap();
    // [a, b) then [b, c): adjacent, accepted.
    certify(c, "d1", 60_010.0, 60_020.0).unwrap();
    certify(c, "d1", 59_990.0, 60_000.0).unwrap();
    for (begin, end) in [
        (60_005.0, 60_015.0),
        (60_000.0, 60_010.0),
        (60_019.5, 60_030.0),
    ] {
        assert_eq!(
            refused(certify(c, "d1", begin, end)),
            SqlState::EXCLUSION_VIOLATION,
            "[{begin}, {end})"
        );
    }
    // Another data ID's ranges are its own.
    certify(c, "d2", 60_005.0, 60_015.0).unwrap();
    // Open ends are infinities, and still exclude what they cover.
    certify(c, "d1", 60_020.0, f64::INFINITY).unwrap();
    certify(c, "d1", f64::NEG_INFINITY, 59_990.0).unwrap();
    assert_eq!(
        refused(certify(c, "d1", 70_000.0, 70_001.0)),
        SqlState::EXCLUSION_VIOLATION
    );
    // An empty or reversed range is refused before the exclusion.
    assert_eq!(
        refused(certify(c, "d3", 5.0, 5.0)),
        SqlState::CHECK_VIOLATION
    );
    let rows: i64 = c
        .query_one("SELECT count(*) FROM dataset_calibs", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 6);
}

/// The skymap and coadd side of the universe: every element with a region
/// has its skypix overlap table, every pair of spatial families its
/// overlap table and index, and region ids are numbered by the server.
#[test]
fn regions_get_their_overlap_tables_and_server_numbered_ids() {
    let Some(mut pg) = test_schema() else { return };
    let universe = DimensionUniverse::default_universe();
    apply_schema(&mut pg.client, &universe);
    let c = &mut pg.client;
    let tables: BTreeSet<String> = c
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            &[&pg.name],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let spatial: Vec<_> = universe
        .elements()
        .iter()
        .filter(|e| e.region_field().is_some())
        .collect();
    assert!(spatial.len() >= 4, "tract, patch, visit, visit_detector");
    for element in &spatial {
        assert!(
            tables.contains(&skypix_overlap_table(element)),
            "{}",
            element.name
        );
    }
    let pairs = universe.spatial_pairs();
    assert!(!pairs.is_empty());
    for (left, right) in pairs {
        let table = overlap_table(left, right);
        assert!(tables.contains(&table), "{table}");
        let index = format!("{table}_r");
        let found = c
            .query_opt(
                "SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND indexname = $2",
                &[&pg.name, &index],
            )
            .unwrap();
        assert!(found.is_some(), "no index {index}");
    }

    c.batch_execute(
        "INSERT INTO \"skymap\" (\"name\") VALUES ('grid');
         INSERT INTO \"tract\" (\"skymap\", \"id\", \"region\") VALUES ('grid', 0, '\\x0102')",
    )
    .unwrap();
    let patch_ids: Vec<i64> = (0..2_i64)
        .map(|patch| {
            c.query_one(
                "INSERT INTO \"patch\" (\"skymap\", \"tract\", \"id\", \"region\") \
                 VALUES ('grid', 0, $1, $2) RETURNING \"region_id\"",
                &[&patch, &vec![7_u8, 8, 9]],
            )
            .unwrap()
            .get(0)
        })
        .collect();
    assert_ne!(patch_ids[0], patch_ids[1]);
    let region: Vec<u8> = c
        .query_one(
            "SELECT \"region\" FROM \"patch\" WHERE \"region_id\" = $1",
            &[&patch_ids[0]],
        )
        .unwrap()
        .get(0);
    assert_eq!(region, [7, 8, 9]);
    // The record's key stays unique beside the region id.
    assert_eq!(
        refused(c.execute(
            "INSERT INTO \"patch\" (\"skymap\", \"tract\", \"id\") VALUES ('grid', 0, 1)",
            &[]
        )),
        SqlState::UNIQUE_VIOLATION
    );
    let skypix = "INSERT INTO \"patch_skypix_overlap\" (skypix, region_id) VALUES (786431, $1)";
    c.execute(skypix, &[&patch_ids[0]]).unwrap();
    assert_eq!(
        refused(c.execute(skypix, &[&patch_ids[0]])),
        SqlState::UNIQUE_VIOLATION
    );
}

/// A universe's boolean metadata is a PostgreSQL boolean: the `--where`
/// compiler tests it as one (`Dialect::is_true`).
#[test]
fn boolean_metadata_is_a_native_boolean() {
    let Some(mut pg) = test_schema() else { return };
    let yaml = quanta_core::dimensions::DEFAULT_UNIVERSE_YAML.replace(
        "      - {name: exposure_time, type: float}\n      - {name: observation_type",
        "      - {name: can_see_sky, type: bool}\n      - {name: exposure_time, type: float}\n      - {name: observation_type",
    );
    assert_ne!(yaml, quanta_core::dimensions::DEFAULT_UNIVERSE_YAML);
    let universe = DimensionUniverse::from_yaml(&yaml).unwrap();
    apply_schema(&mut pg.client, &universe);
    let row = pg
        .client
        .query_one(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'exposure' AND column_name = 'can_see_sky'",
            &[&pg.name],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "boolean");
}

/// The set-wise dimension keys of `dataset` lock what they check, as a
/// foreign key does: a delete of a record that an uncommitted insert names
/// waits for that insert (here: runs out of its lock timeout) and is then
/// refused; an insert naming a record whose delete is uncommitted waits
/// for the delete and is then refused.
#[test]
fn dataset_keys_and_record_deletes_wait_for_each_other() {
    let Some(mut pg) = test_schema() else { return };
    apply_schema(&mut pg.client, &DimensionUniverse::default_universe());
    let url = std::env::var("QUANTA_POSTGRES_URL").unwrap();
    let mut other = connect(&url).unwrap();
    other
        .batch_execute(&format!(
            "SET search_path TO \"{}\", public; SET lock_timeout = '300ms'",
            pg.name
        ))
        .unwrap();
    let a = &mut pg.client;
    a.batch_execute(
        "INSERT INTO \"instrument\" (\"name\") VALUES ('Cam'); \
         INSERT INTO \"detector\" (\"instrument\", \"id\") VALUES ('Cam', 1), ('Cam', 2); \
         INSERT INTO collection (name, type) VALUES ('run', 'RUN'); \
         INSERT INTO dataset_type (name, dimensions, storage_class, is_calibration) \
         VALUES ('flat', '[]', 'Json', FALSE)",
    )
    .unwrap();
    let insert = |c: &mut Client, detector: i64| {
        c.execute(
            "INSERT INTO dataset (id, dataset_type_id, run_id, data_id, \"instrument\", \"detector\") \
             SELECT $1, t.id, c.id, $2, 'Cam', $3 FROM dataset_type t, collection c",
            &[&Uuid::new_v4(), &format!("d{detector}"), &detector],
        )
    };
    // An uncommitted insert holds its records.
    a.batch_execute("BEGIN").unwrap();
    assert_eq!(insert(a, 1).unwrap(), 1);
    let delete_1 = "DELETE FROM \"detector\" WHERE \"id\" = 1";
    assert_eq!(
        refused(other.execute(delete_1, &[])),
        SqlState::LOCK_NOT_AVAILABLE
    );
    a.batch_execute("COMMIT").unwrap();
    assert_eq!(
        refused(other.execute(delete_1, &[])),
        SqlState::FOREIGN_KEY_VIOLATION
    );
    // An uncommitted delete holds its record from new datasets.
    other
        .batch_execute("BEGIN; DELETE FROM \"detector\" WHERE \"id\" = 2")
        .unwrap();
    a.batch_execute("SET lock_timeout = '300ms'").unwrap();
    assert_eq!(refused(insert(a, 2)), SqlState::LOCK_NOT_AVAILABLE);
    other.batch_execute("COMMIT").unwrap();
    assert_eq!(refused(insert(a, 2)), SqlState::FOREIGN_KEY_VIOLATION);
    let left: Vec<(i64, i64)> = a
        .query(
            "SELECT (SELECT count(*) FROM dataset), (SELECT count(*) FROM \"detector\")",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, vec![(1, 1)]);
}
