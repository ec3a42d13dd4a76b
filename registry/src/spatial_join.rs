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
//! Execution ([`QueryBuilder::add_spatial_join`]) is two steps in one
//! statement: coarse, the two elements' skypix overlap tables matched on
//! their HEALPix cell (a DISTINCT subquery, so a pair sharing several cells
//! comes back once); exact, `quanta_region_overlaps(a.region, b.region)` on
//! the candidate pairs (registered on every connection, see
//! `region_sql.rs`). Cells cover each region conservatively, so the coarse
//! step never loses a pair and the exact step removes the false ones.

use quanta_core::{DimensionElement, DimensionGroup, DimensionUniverse};

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

impl QueryBuilder<'_> {
    /// Adds one planned spatial join to the query (whose dimensions must
    /// already be known, see [`QueryBuilder::dimension_value`]).
    pub(crate) fn add_spatial_join(&mut self, join: &SpatialJoin) -> Result<(), String> {
        match join {
            SpatialJoin::Materialized { element } => self.ensure_element(element).map(|_| ()),
            SpatialJoin::Overlap { left, right } => self.add_overlap_join(left, right),
        }
    }

    fn add_overlap_join(&mut self, left: &str, right: &str) -> Result<(), String> {
        let universe = self.universe;
        let element = |name: &str| {
            universe
                .element(name)
                .ok_or_else(|| format!("unknown dimension element `{name}`"))
        };
        let (l, r) = (element(left)?, element(right)?);
        let l_dims: Vec<&str> = l.identifying_dimensions().collect();
        let r_dims: Vec<&str> = r.identifying_dimensions().collect();
        // The coarse step: pairs of records sharing a sky pixel.
        let mut select: Vec<String> = l_dims.iter().map(|d| format!("a.{}", quote(d))).collect();
        let mut on = vec!["a.skypix = b.skypix".to_string()];
        for d in &r_dims {
            if l_dims.contains(d) {
                on.push(format!("a.{q} = b.{q}", q = quote(d)));
            } else {
                select.push(format!("b.{}", quote(d)));
            }
        }
        let alias = format!("s{}", self.from.len() + self.leading.len());
        self.leading.push(format!(
            "(SELECT DISTINCT {} FROM {} AS a JOIN {} AS b ON {}) AS {alias}",
            select.join(", "),
            quote(&skypix_overlap_table(l)),
            quote(&skypix_overlap_table(r)),
            on.join(" AND ")
        ));
        let mut dims = l_dims.clone();
        dims.extend(r_dims.iter().filter(|d| !l_dims.contains(d)));
        for d in dims {
            let value = self.dimension_value(d)?;
            self.conditions
                .push(format!("{alias}.{} = {value}", quote(d)));
        }
        // The exact step, on the candidates.
        let region = |e: &DimensionElement| {
            e.region_field()
                .map(|f| quote(&f.name))
                .ok_or_else(|| format!("`{}` has no region", e.name))
        };
        let (l_region, r_region) = (region(l)?, region(r)?);
        let l_alias = self.ensure_element(left)?;
        let r_alias = self.ensure_element(right)?;
        self.conditions.push(format!(
            "quanta_region_overlaps({l_alias}.{l_region}, {r_alias}.{r_region})"
        ));
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
