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
//! The overlaps themselves are kept at insert ([`record_overlaps`]): when
//! records with regions are inserted, their pairs with every record of each
//! element of another family go into that pair of elements' overlap table
//! (`patch__visit_detector_overlap (l, r)`, region ids, sides in universe
//! order). Coarse, through
//! SQL: the other element's records in each sky pixel the new records
//! touch (its skypix table, keyed by cell). Exact, in Rust and per new
//! record in parallel: its distinct candidates tested with
//! [`Region::overlaps`] (closed regions: touching counts). Cells cover each
//! region conservatively, so the coarse step never loses a pair and the
//! exact step removes the false ones. A query joins the overlap table like
//! a materialized join element ([`QueryBuilder::add_spatial_join`]).
//!
//! Measured (benches/spatial/README.md): the same two steps inside the
//! query, as a DISTINCT subquery over the skypix tables and an SQL
//! function per row, cost more than the rest of a coadd preflight ten times
//! over; computed per query in Rust they were still a fifth of it.

use std::collections::HashMap;

use quanta_core::{DimensionElement, DimensionGroup, DimensionUniverse, REGION_ID_COLUMN};
use quanta_spatial::Region;
use rayon::prelude::*;

use crate::database::{Database, Param};
use crate::error::{RegistryError, Result};
use crate::query::QueryBuilder;
use crate::schema::{overlap_table, quote, skypix_overlap_table};

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
    let chosen = most_specific_per_family(universe, &|d| dims.contains(d));
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
/// the dimensions `known` accepts identify and that identifies the most
/// dimensions; families with none are left out.
pub(crate) fn most_specific_per_family<'u>(
    universe: &'u DimensionUniverse,
    known: &dyn Fn(&str) -> bool,
) -> Vec<&'u DimensionElement> {
    let mut chosen: Vec<&DimensionElement> = Vec::new();
    for element in universe.spatial_elements() {
        if !element.identifying_dimensions().all(known) {
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

/// Rows per INSERT statement when overlap pairs are written (two
/// parameters each, well under SQLite's limit of 32,766).
const PAIRS_PER_INSERT: usize = 500;

/// Records just inserted into one element with regions: what
/// [`record_overlaps`] relates to the records of other families.
pub(crate) struct NewRegions<'e> {
    pub(crate) element: &'e DimensionElement,
    /// `(cell, region_id)`, sorted.
    pub(crate) cells: Vec<(i64, i64)>,
    pub(crate) regions: RegionsById,
}

/// Writes the overlaps of `new` records with every record of each element
/// of another spatial family into their overlap tables, inside the
/// caller's transaction.
pub(crate) fn record_overlaps(
    db: &Database,
    universe: &DimensionUniverse,
    new: &NewRegions<'_>,
) -> Result<()> {
    for (left, right) in universe.spatial_pairs() {
        let (other, new_is_left) = if left.name == new.element.name {
            (right, true)
        } else if right.name == new.element.name {
            (left, false)
        } else {
            continue;
        };
        let mut pairs = overlaps_with(db, new, other)?;
        if !new_is_left {
            pairs.iter_mut().for_each(|p| *p = (p.1, p.0));
            pairs.par_sort_unstable();
        }
        insert_pairs(db, &overlap_table(left, right), &pairs)?;
    }
    Ok(())
}

/// Fills the overlap table of `left` and `right` from every record of
/// both (a registry made before overlaps were kept at insert, see
/// `crate::migrate`), inside the caller's transaction.
pub(crate) fn fill_overlap_table(
    db: &Database,
    left: &DimensionElement,
    right: &DimensionElement,
) -> Result<usize> {
    let cells: Vec<(i64, i64)> = db.query_rows(
        &format!(
            "SELECT skypix, region_id FROM {} ORDER BY skypix, region_id",
            quote(&skypix_overlap_table(left))
        ),
        &[],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let mut ids: Vec<i64> = cells.iter().map(|&(_, id)| id).collect();
    ids.par_sort_unstable();
    ids.dedup();
    let every = NewRegions {
        element: left,
        regions: regions_of(db, left, &ids)?,
        cells,
    };
    let pairs = overlaps_with(db, &every, right)?;
    insert_pairs(db, &overlap_table(left, right), &pairs)?;
    Ok(pairs.len())
}

/// `(new record, other record)` region-id pairs whose regions overlap,
/// sorted.
fn overlaps_with(
    db: &Database,
    new: &NewRegions<'_>,
    other: &DimensionElement,
) -> Result<Vec<(i64, i64)>> {
    let other_table = quote(&skypix_overlap_table(other));
    let other_is_empty = db
        .query_row(&format!("SELECT 1 FROM {other_table} LIMIT 1"), &[], |_| {
            Ok(())
        })?
        .is_none();
    if other_is_empty {
        // A skymap registered before any visit: nothing to look up.
        return Ok(Vec::new());
    }
    let other_by_cell = records_in_cells(db, other, &new.cells)?;
    if other_by_cell.is_empty() {
        return Ok(Vec::new());
    }
    let mut other_ids: Vec<i64> = other_by_cell.values().flatten().copied().collect();
    other_ids.par_sort_unstable();
    other_ids.dedup();
    let other_regions = &regions_of(db, other, &other_ids)?;
    // Grouped by new record: its cells' records are its candidates, made
    // distinct per record rather than over the whole join.
    let mut by_record = new.cells.clone();
    by_record.par_sort_unstable_by_key(|&(cell, id)| (id, cell));
    let groups: Vec<&[(i64, i64)]> = by_record.chunk_by(|a, b| a.1 == b.1).collect();
    Ok(groups
        .into_par_iter()
        .flat_map_iter(|group| {
            let id = group[0].1;
            let mut candidates: Vec<i64> = group
                .iter()
                .filter_map(|(cell, _)| other_by_cell.get(cell))
                .flatten()
                .copied()
                .collect();
            candidates.sort_unstable();
            candidates.dedup();
            let region = new.regions.get(id);
            candidates.into_iter().filter_map(move |o| {
                let overlaps =
                    matches!((region, other_regions.get(o)), (Some(a), Some(b)) if a.overlaps(b));
                overlaps.then_some((id, o))
            })
        })
        .collect())
}

/// Appends `pairs` to an overlap table, many rows per statement.
fn insert_pairs(db: &Database, table: &str, pairs: &[(i64, i64)]) -> Result<()> {
    let insert = |n: usize| {
        let rows: Vec<String> = (0..n)
            .map(|i| format!("(?{}, ?{})", 2 * i + 1, 2 * i + 2))
            .collect();
        db.prepare(&format!(
            "INSERT INTO {} (l, r) VALUES {}",
            quote(table),
            rows.join(", ")
        ))
    };
    let mut full = insert(PAIRS_PER_INSERT)?;
    for chunk in pairs.chunks(PAIRS_PER_INSERT) {
        let values: Vec<&dyn Param> = chunk
            .iter()
            .flat_map(|(l, r)| [l as &dyn Param, r as &dyn Param])
            .collect();
        if chunk.len() == PAIRS_PER_INSERT {
            full.execute(&values)?;
        } else {
            insert(chunk.len())?.execute(&values)?;
        }
    }
    Ok(())
}

/// The coarse step: for each cell of `cells` (sorted by cell), the
/// `element` records whose cover has it. One indexed lookup per distinct
/// cell, in cell order: new records touch a small part of the sky, so this
/// reads far less than the whole table.
fn records_in_cells(
    db: &Database,
    element: &DimensionElement,
    cells: &[(i64, i64)],
) -> Result<HashMap<i64, Vec<i64>>> {
    let mut lookup = db.prepare(&format!(
        "SELECT region_id FROM {} WHERE skypix = ?1",
        quote(&skypix_overlap_table(element))
    ))?;
    let mut out = HashMap::new();
    for group in cells.chunk_by(|a, b| a.0 == b.0) {
        let cell = group[0].0;
        let records: Vec<i64> = lookup.query_rows(&[&cell], |row| row.get(0))?;
        if !records.is_empty() {
            out.insert(cell, records);
        }
    }
    Ok(out)
}

/// Decoded regions by `region_id`, sorted by id.
pub(crate) struct RegionsById(pub(crate) Vec<(i64, Region)>);

impl RegionsById {
    fn get(&self, id: i64) -> Option<&Region> {
        self.0
            .binary_search_by_key(&id, |(i, _)| *i)
            .ok()
            .map(|k| &self.0[k].1)
    }
}

/// The decoded regions of `element`'s records `wanted` (sorted, distinct).
fn regions_of(db: &Database, element: &DimensionElement, wanted: &[i64]) -> Result<RegionsById> {
    let field = element
        .region_field()
        .ok_or_else(|| RegistryError::Invalid(format!("`{}` has no region", element.name)))?;
    let (column, table, id) = (
        quote(&field.name),
        quote(&element.name),
        quote(REGION_ID_COLUMN),
    );
    // Ids run from 1 up, so the largest is about the table's size.
    let largest: i64 = db
        .query_row(
            &format!("SELECT coalesce(max({id}), 0) FROM {table}"),
            &[],
            |r| r.get(0),
        )?
        .unwrap_or(0);
    let mut blobs: Vec<(i64, Vec<u8>)> = Vec::with_capacity(wanted.len());
    if (wanted.len() as i64) * 4 < largest {
        // A few: looked up, in id order (forwards through the B-tree); a
        // survey's detectors touch a small part of a whole-sky skymap.
        let mut stmt = db.prepare(&format!(
            "SELECT {column} FROM {table} WHERE {id} = ?1 AND {column} IS NOT NULL"
        ))?;
        for &region_id in wanted {
            stmt.for_each_row(&[&region_id], |row| {
                blobs.push((region_id, row.get(0)?));
                Ok(false)
            })?;
        }
    } else {
        db.for_each_row(
            &format!("SELECT {id}, {column} FROM {table} WHERE {column} IS NOT NULL"),
            &[],
            |row| {
                let region_id: i64 = row.get(0)?;
                if wanted.binary_search(&region_id).is_ok() {
                    blobs.push((region_id, row.get(1)?));
                }
                Ok(true)
            },
        )?;
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
    /// already be known, see [`QueryBuilder::dimension_value`]).
    pub(crate) fn add_spatial_join(
        &mut self,
        join: &SpatialJoin,
    ) -> std::result::Result<(), String> {
        match join {
            SpatialJoin::Materialized { element } => self.ensure_element(element).map(|_| ()),
            SpatialJoin::Overlap { left, right } => self.add_overlap_join(left, right),
        }
    }

    fn add_overlap_join(&mut self, left: &str, right: &str) -> std::result::Result<(), String> {
        let element = |name: &str| {
            self.universe
                .element(name)
                .ok_or_else(|| format!("unknown dimension element `{name}`"))
        };
        // The table's sides are in universe order, which need not be the
        // plan's order of families.
        let (a, b) = (element(left)?, element(right)?);
        let (first, second) = match self.universe.spatial_pairs().into_iter().find(|(l, r)| {
            (l.name == a.name && r.name == b.name) || (l.name == b.name && r.name == a.name)
        }) {
            Some((l, r)) => (l.name.clone(), r.name.clone()),
            None => return Err(format!("`{left}` and `{right}` keep no overlaps")),
        };
        let table = overlap_table(element(&first)?, element(&second)?);
        let l_alias = self.ensure_element(&first)?;
        let r_alias = self.ensure_element(&second)?;
        let alias = format!("s{}", self.from.len());
        self.from.push(format!("{} AS {alias}", quote(&table)));
        let id = quote(REGION_ID_COLUMN);
        self.conditions.push(format!("{l_alias}.{id} = {alias}.l"));
        self.conditions.push(format!("{r_alias}.{id} = {alias}.r"));
        self.overlap_tables.push(table);
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
