//! Spatial joins: how a query over dimensions of two spatial families
//! (observations: `visit`, `visit_detector`; the skymap: `tract`, `patch`)
//! relates them, which no shared dimension can.
//!
//! Planning ([`plan_spatial_joins`]) picks, per family, the most specific
//! element with a region that the query's dimensions identify
//! (`visit_detector` when `detector` is present, else `visit`; `patch`, else
//! `tract`), and joins every pair of families by region overlap. A
//! materialized join element relating the two families (`visit_patch_overlap`)
//! wins when the query's dimensions cover it and it has records.
//!
//! Execution ([`OverlapPairs::compute`]) happens before the query runs:
//! coarse, the two elements' skypix overlap tables matched on their HEALPix
//! cell through SQL lookups (records named by their integer `region_id`);
//! then, in Rust and per left record in parallel, its candidates are made
//! distinct (a pair sharing several cells comes back once per cell) and
//! refined exactly with [`Region::overlaps`]. The surviving pairs become a TEMP table on each connection
//! that runs the query ([`OverlapPairs::install`]), which the query joins
//! like a materialized join element ([`QueryBuilder::add_spatial_join`]).
//! Cells cover each region conservatively, so the coarse step never loses a
//! pair and the exact step removes the false ones.
//!
//! Measured (benches/spatial/README.md): the same two steps inside the
//! statement, as a DISTINCT subquery and `quanta_region_overlaps` per row,
//! cost more than the rest of a coadd preflight ten times over; SQLite
//! de-duplicated millions of candidate rows in a temp B-tree, and evaluated
//! the exact test once per row of the joined datasets rather than per pair.

use std::collections::HashMap;
use std::sync::Arc;

use quanta_spatial::Region;
use rayon::prelude::*;
use rusqlite::Connection;

use quanta_core::{DimensionElement, DimensionGroup, DimensionUniverse, REGION_ID_COLUMN};

use crate::error::{RegistryError, Result};
use crate::query::QueryBuilder;
use crate::schema::{quote, skypix_overlap_table};

/// How two spatial families are related in one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpatialJoin {
    /// By region overlap of these two elements (names).
    Overlap { left: String, right: String },
    /// Through the records of this join element.
    Materialized { element: String },
}

/// The spatial joins a query over `dims` needs. `has_records` tells whether
/// a (materialized join) element's table has any rows.
pub(crate) fn plan_spatial_joins(
    universe: &DimensionUniverse,
    dims: &DimensionGroup,
    has_records: &mut dyn FnMut(&str) -> bool,
) -> Vec<SpatialJoin> {
    let chosen = most_specific_per_family(universe, dims);
    let mut plan = Vec::new();
    for (i, left) in chosen.iter().enumerate() {
        for right in &chosen[i + 1..] {
            let materialized = universe.elements().iter().find(|j| {
                relates(universe, j, left, right)
                    && j.required_closure.iter().all(|d| dims.contains(d))
                    && has_records(&j.name)
            });
            plan.push(match materialized {
                Some(j) => SpatialJoin::Materialized {
                    element: j.name.clone(),
                },
                None => SpatialJoin::Overlap {
                    left: left.name.clone(),
                    right: right.name.clone(),
                },
            });
        }
    }
    plan
}

/// Per spatial family (in universe order), the element with a region that
/// `dims` identify and that identifies the most dimensions; families with
/// none are left out.
fn most_specific_per_family<'u>(
    universe: &'u DimensionUniverse,
    dims: &DimensionGroup,
) -> Vec<&'u DimensionElement> {
    let mut chosen: Vec<&DimensionElement> = Vec::new();
    for element in universe.spatial_elements() {
        if !element.identifying_dimensions().all(|d| dims.contains(d)) {
            continue;
        }
        let size = |e: &DimensionElement| e.identifying_dimensions().count();
        match chosen.iter_mut().find(|c| c.spatial == element.spatial) {
            Some(best) if size(element) > size(best) => *best = element,
            Some(_) => {}
            None => chosen.push(element),
        }
    }
    chosen
}

/// Whether join element `j` (no key, no region) relates the families of
/// `left` and `right`: it requires a dimension of each family.
fn relates(
    universe: &DimensionUniverse,
    j: &DimensionElement,
    left: &DimensionElement,
    right: &DimensionElement,
) -> bool {
    let in_family = |family: &Option<String>| {
        j.required_closure
            .iter()
            .any(|d| universe.element(d).is_some_and(|e| e.spatial == *family))
    };
    !j.is_dimension()
        && j.has_records
        && j.spatial.is_none()
        && in_family(&left.spatial)
        && in_family(&right.spatial)
}

/// Pairs per INSERT statement when a TEMP table of pairs is filled (two
/// parameters each, well under SQLite's limit of 32,766).
const PAIRS_PER_INSERT: usize = 500;

/// The pairs of records (by `region_id`) of two elements whose regions
/// overlap, computed once per query; shared by the threads that read the
/// query in parts, each of which installs it on its own connection.
#[derive(Debug, Clone)]
pub(crate) struct OverlapPairs {
    /// The TEMP table that [`OverlapPairs::install`] fills: `(l, r)`.
    pub(crate) table: String,
    pub(crate) left: String,
    pub(crate) right: String,
    pairs: Arc<Vec<(i64, i64)>>,
}

impl OverlapPairs {
    /// The overlapping pairs of `left` and `right` records, sorted: coarse
    /// in SQL through the skypix tables, then, per left record in
    /// parallel, its distinct candidates tested exactly.
    pub(crate) fn compute(
        conn: &Connection,
        left: &DimensionElement,
        right: &DimensionElement,
    ) -> Result<Self> {
        let mut left_cells = skypix_rows(conn, left)?;
        let right_by_cell = records_in_cells(conn, right, &left_cells)?;
        // Grouped by left record: its cells' right records are its
        // candidates, made distinct here rather than over the whole join.
        left_cells.par_sort_unstable_by_key(|&(cell, l)| (l, cell));
        let groups: Vec<&[(i64, i64)]> = left_cells.chunk_by(|a, b| a.1 == b.1).collect();
        let l_regions = regions_of(
            conn,
            left,
            &groups.iter().map(|g| g[0].1).collect::<Vec<_>>(),
        )?;
        let mut r_ids: Vec<i64> = right_by_cell.values().flatten().copied().collect();
        r_ids.par_sort_unstable();
        r_ids.dedup();
        let r_regions = &regions_of(conn, right, &r_ids)?;
        let pairs: Vec<(i64, i64)> = groups
            .into_par_iter()
            .flat_map_iter(|group| {
                let l = group[0].1;
                let mut candidates: Vec<i64> = group
                    .iter()
                    .filter_map(|(cell, _)| right_by_cell.get(cell))
                    .flatten()
                    .copied()
                    .collect();
                candidates.sort_unstable();
                candidates.dedup();
                let region = l_regions.get(l);
                candidates.into_iter().filter_map(move |r| {
                    let overlaps =
                        matches!((region, r_regions.get(r)), (Some(a), Some(b)) if a.overlaps(b));
                    overlaps.then_some((l, r))
                })
            })
            .collect();
        Ok(Self {
            table: format!("overlap_{}__{}", left.name, right.name),
            left: left.name.clone(),
            right: right.name.clone(),
            pairs: Arc::new(pairs),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }

    /// (Re)creates the TEMP table on `conn` and fills it. A TEMP table
    /// lives in the connection's own temporary database, never in the
    /// registry file, so this is allowed on a `query_only` connection:
    /// the pragma is lifted for these statements and restored.
    pub(crate) fn install(&self, conn: &Connection) -> Result<()> {
        let query_only: bool = conn.pragma_query_value(None, "query_only", |r| r.get(0))?;
        if query_only {
            conn.pragma_update(None, "query_only", false)?;
        }
        let filled = self.fill(conn);
        if query_only {
            conn.pragma_update(None, "query_only", true)?;
        }
        filled
    }

    fn fill(&self, conn: &Connection) -> Result<()> {
        let table = quote(&self.table);
        conn.pragma_update(Some("temp"), "temp_store", "MEMORY")?;
        // A savepoint works inside the caller's transaction and outside
        // one, and makes the inserts one transaction of the temp database.
        conn.execute_batch(&format!(
            "SAVEPOINT overlap_pairs;
             CREATE TEMP TABLE IF NOT EXISTS {table} (
               l INTEGER NOT NULL, r INTEGER NOT NULL, PRIMARY KEY (l, r)
             ) WITHOUT ROWID;
             DELETE FROM temp.{table};"
        ))?;
        let inserted = (|| -> Result<()> {
            // Many rows per statement: one step instead of one per pair.
            let insert = |n: usize| {
                let rows = vec!["(?, ?)"; n].join(", ");
                conn.prepare(&format!("INSERT INTO temp.{table} (l, r) VALUES {rows}"))
            };
            let mut full = insert(PAIRS_PER_INSERT)?;
            for chunk in self.pairs.chunks(PAIRS_PER_INSERT) {
                let values = chunk.iter().flat_map(|&(l, r)| [l, r]);
                if chunk.len() == PAIRS_PER_INSERT {
                    full.execute(rusqlite::params_from_iter(values))?;
                } else {
                    insert(chunk.len())?.execute(rusqlite::params_from_iter(values))?;
                }
            }
            Ok(())
        })();
        match inserted {
            Ok(()) => conn.execute_batch("RELEASE overlap_pairs")?,
            Err(e) => {
                conn.execute_batch("ROLLBACK TO overlap_pairs; RELEASE overlap_pairs")?;
                return Err(e);
            }
        }
        Ok(())
    }
}

/// An element's skypix rows, `(cell, region_id)`, in the table's key order
/// (by cell).
fn skypix_rows(conn: &Connection, element: &DimensionElement) -> Result<Vec<(i64, i64)>> {
    let mut scan = conn.prepare(&format!(
        "SELECT skypix, region_id FROM {}",
        quote(&skypix_overlap_table(element))
    ))?;
    let mut out = Vec::new();
    let mut rows = scan.query([])?;
    while let Some(row) = rows.next()? {
        out.push((row.get(0)?, row.get(1)?));
    }
    Ok(out)
}

/// The coarse step: for each cell of `cells` (sorted by cell), the
/// `element` records whose cover has it. One indexed lookup per distinct
/// cell, in cell order: a survey's visits touch a small part of a
/// whole-sky skymap's cells, so this reads far less than the whole table.
fn records_in_cells(
    conn: &Connection,
    element: &DimensionElement,
    cells: &[(i64, i64)],
) -> Result<HashMap<i64, Vec<i64>>> {
    let mut lookup = conn.prepare(&format!(
        "SELECT region_id FROM {} WHERE skypix = ?1",
        quote(&skypix_overlap_table(element))
    ))?;
    let mut out = HashMap::new();
    for group in cells.chunk_by(|a, b| a.0 == b.0) {
        let cell = group[0].0;
        let mut records = Vec::new();
        let mut rows = lookup.query([cell])?;
        while let Some(row) = rows.next()? {
            records.push(row.get(0)?);
        }
        if !records.is_empty() {
            out.insert(cell, records);
        }
    }
    Ok(out)
}

/// Decoded regions by `region_id`, sorted by id.
struct RegionsById(Vec<(i64, Region)>);

impl RegionsById {
    fn get(&self, id: i64) -> Option<&Region> {
        self.0
            .binary_search_by_key(&id, |(i, _)| *i)
            .ok()
            .map(|k| &self.0[k].1)
    }
}

/// The decoded regions of `element`'s records `wanted` (sorted, distinct).
fn regions_of(
    conn: &Connection,
    element: &DimensionElement,
    wanted: &[i64],
) -> Result<RegionsById> {
    let field = element
        .region_field()
        .ok_or_else(|| RegistryError::Invalid(format!("`{}` has no region", element.name)))?;
    let (column, table, id) = (
        quote(&field.name),
        quote(&element.name),
        quote(REGION_ID_COLUMN),
    );
    // Ids run from 1 up, so the largest is about the table's size.
    let largest: i64 = conn.query_row(
        &format!("SELECT coalesce(max({id}), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?;
    let mut blobs: Vec<(i64, Vec<u8>)> = Vec::with_capacity(wanted.len());
    if (wanted.len() as i64) * 4 < largest {
        // A few: looked up, in id order (forwards through the B-tree); a
        // survey's detectors touch a small part of a whole-sky skymap.
        let mut stmt = conn.prepare(&format!(
            "SELECT {column} FROM {table} WHERE {id} = ?1 AND {column} IS NOT NULL"
        ))?;
        for &region_id in wanted {
            let mut rows = stmt.query([region_id])?;
            if let Some(row) = rows.next()? {
                blobs.push((region_id, row.get(0)?));
            }
        }
    } else {
        let mut stmt = conn.prepare(&format!(
            "SELECT {id}, {column} FROM {table} WHERE {column} IS NOT NULL"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let region_id: i64 = row.get(0)?;
            if wanted.binary_search(&region_id).is_ok() {
                blobs.push((region_id, row.get(1)?));
            }
        }
    }
    blobs
        .into_par_iter()
        .map(|(id, blob)| match Region::decode(&blob) {
            Ok(region) => Ok((id, region)),
            Err(e) => Err(RegistryError::Invalid(format!(
                "`{}` record with region_id {id}: its stored region is unreadable ({e})",
                element.name
            ))),
        })
        .collect::<Result<_>>()
        .map(RegionsById)
}

impl QueryBuilder<'_> {
    /// Adds one planned spatial join to the query (whose dimensions must
    /// already be known, see [`QueryBuilder::dimension_value`]); an overlap
    /// join needs its pairs, computed and installed on the connection that
    /// will run the query.
    pub(crate) fn add_spatial_join(
        &mut self,
        join: &SpatialJoin,
        pairs: Option<&OverlapPairs>,
    ) -> std::result::Result<(), String> {
        match (join, pairs) {
            (SpatialJoin::Materialized { element }, _) => self.ensure_element(element).map(|_| ()),
            (SpatialJoin::Overlap { .. }, Some(pairs)) => self.add_overlap_join(pairs),
            (SpatialJoin::Overlap { left, right }, None) => Err(format!(
                "the overlaps of `{left}` and `{right}` were not computed"
            )),
        }
    }

    /// Installs the overlap pairs the query reads on `conn`, which is
    /// about to run it.
    pub(crate) fn install_overlaps(&self, conn: &Connection) -> Result<()> {
        self.overlaps
            .iter()
            .try_for_each(|pairs| pairs.install(conn))
    }

    fn add_overlap_join(&mut self, pairs: &OverlapPairs) -> std::result::Result<(), String> {
        let l_alias = self.ensure_element(&pairs.left)?;
        let r_alias = self.ensure_element(&pairs.right)?;
        let alias = format!("s{}", self.from.len() + self.leading.len());
        // Leading: the pairs drive the loop, each a rowid lookup per side.
        self.leading
            .push(format!("temp.{} AS {alias}", quote(&pairs.table)));
        let id = quote(REGION_ID_COLUMN);
        self.conditions.push(format!("{l_alias}.{id} = {alias}.l"));
        self.conditions.push(format!("{r_alias}.{id} = {alias}.r"));
        self.overlaps.push(pairs.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dims: &[&str], materialized: bool) -> Vec<SpatialJoin> {
        let u = DimensionUniverse::default_universe();
        let group = u.conform(dims).unwrap();
        plan_spatial_joins(&u, &group, &mut |_| materialized)
    }

    fn overlap(left: &str, right: &str) -> SpatialJoin {
        SpatialJoin::Overlap {
            left: left.into(),
            right: right.into(),
        }
    }

    #[test]
    fn the_most_specific_elements_of_each_family_are_joined() {
        assert_eq!(
            plan(&["visit", "detector", "patch"], false),
            vec![overlap("visit_detector", "patch")]
        );
        assert_eq!(
            plan(&["visit", "patch"], false),
            vec![overlap("visit", "patch")]
        );
        assert_eq!(
            plan(&["visit", "tract"], false),
            vec![overlap("visit", "tract")]
        );
        assert_eq!(
            plan(&["visit", "detector", "tract"], false),
            vec![overlap("visit_detector", "tract")]
        );
    }

    #[test]
    fn one_family_needs_no_join() {
        assert!(plan(&["visit", "detector"], false).is_empty());
        assert!(plan(&["patch"], false).is_empty());
        assert!(plan(&["exposure", "detector", "patch"], false).is_empty());
    }

    #[test]
    fn a_materialized_join_element_with_records_wins() {
        assert_eq!(
            plan(&["visit", "patch"], true),
            vec![SpatialJoin::Materialized {
                element: "visit_patch_overlap".into()
            }]
        );
        // visit_patch_overlap needs visit and patch both in the query.
        assert_eq!(
            plan(&["visit", "tract"], true),
            vec![overlap("visit", "tract")]
        );
    }
}
