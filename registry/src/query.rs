//! Set-based queries: data IDs and datasets constrained by a `--where`
//! expression, compiled to one parameterised SQL statement each.
//!
//! The builder joins the dimension tables a query needs: those of the
//! requested dimensions, and, for implied dimensions (`band`) or metadata
//! (`exposure.exposure_time`) that the expression mentions, the elements
//! that lead to them (exposure → physical_filter → band).

use std::collections::{BTreeMap, HashMap};

use crate::collections::Membership;
use crate::datasets::{data_id_from_key, DatastoreRecord, FoundDataset};
use crate::dialect::{Dialect, Parameters};
use crate::error::{RegistryError, Result};
use crate::expr::{self, ColumnResolver, Identifier, ResolvedColumn, SkyPixel, SkyPixelRegion};
use crate::registry::Registry;
use crate::schema::{key_column, quote, references, skypix_overlap_table};
use crate::spatial_join::{most_specific_per_family, plan_spatial_joins};
use crate::value::SqlValue;
use quanta_core::{
    DataId, DataIdValue, DatasetRef, DimensionUniverse, FieldType, REGION_ID_COLUMN,
};

/// Values for `:name` bind parameters of a `--where` expression.
pub type Binds = HashMap<String, SqlValue>;

/// Incrementally joins dimension tables and tracks, for every dimension
/// whose value the query knows, the SQL expression that yields it.
pub(crate) struct QueryBuilder<'u> {
    pub(crate) universe: &'u DimensionUniverse,
    pub(crate) from: Vec<String>,
    pub(crate) conditions: Vec<String>,
    /// The statement's parameters, numbered in its dialect.
    pub(crate) params: Parameters,
    pub(crate) values: BTreeMap<String, String>,
    pub(crate) aliases: BTreeMap<String, String>,
    /// The overlap tables the query's spatial joins read.
    pub(crate) overlap_tables: Vec<String>,
}

impl<'u> QueryBuilder<'u> {
    pub(crate) fn new(universe: &'u DimensionUniverse, dialect: Dialect) -> Self {
        Self {
            universe,
            from: Vec::new(),
            conditions: Vec::new(),
            params: Parameters::new(dialect),
            values: BTreeMap::new(),
            aliases: BTreeMap::new(),
            overlap_tables: Vec::new(),
        }
    }

    /// The FROM clause.
    pub(crate) fn sql_from(&self) -> String {
        self.from.join(", ")
    }

    /// Joins an element's table (once), tying its required dimensions to the
    /// values already known and making its key and implied values known.
    pub(crate) fn ensure_element(&mut self, name: &str) -> std::result::Result<String, String> {
        if let Some(alias) = self.aliases.get(name) {
            return Ok(alias.clone());
        }
        let element = self
            .universe
            .element(name)
            .ok_or_else(|| format!("unknown dimension element `{name}`"))?;
        if !element.has_records {
            return Err(format!("`{name}` has no records of its own"));
        }
        // A required dimension this table has a foreign key to is read from
        // its own column: the key proves the dimension's record exists, so
        // joining that record's table would only cost lookups per row.
        // The others are joined first.
        for dim in &element.required_closure {
            if !self.values.contains_key(dim) && !references(self.universe, element, dim) {
                self.dimension_value(dim)?;
            }
        }
        let alias = format!("t{}", self.aliases.len());
        self.from.push(format!("{} AS {alias}", quote(name)));
        for dim in &element.required_closure {
            let column = format!("{alias}.{}", quote(dim));
            match self.values.get(dim) {
                Some(v) => self.conditions.push(format!("{column} = {v}")),
                None => {
                    self.values.insert(dim.clone(), column);
                }
            }
        }
        if let Some(key) = key_column(element) {
            let column = format!("{alias}.{}", quote(key));
            match self.values.get(name) {
                Some(v) => self.conditions.push(format!("{column} = {v}")),
                None => {
                    self.values.insert(name.to_string(), column);
                }
            }
        }
        for dim in &element.implies {
            let column = format!("{alias}.{}", quote(dim));
            match self.values.get(dim) {
                Some(v) => self.conditions.push(format!("{column} = {v}")),
                None => {
                    self.values.insert(dim.clone(), column);
                }
            }
        }
        self.aliases.insert(name.to_string(), alias.clone());
        Ok(alias)
    }

    /// Makes every dimension of `group` known, most specific first: an
    /// element's table then supplies the dimensions it requires (see
    /// [`Self::ensure_element`]), so `instrument` is read from `visit`
    /// rather than joined for its own sake.
    pub(crate) fn join_dimensions(
        &mut self,
        group: &quanta_core::DimensionGroup,
    ) -> std::result::Result<(), String> {
        for dim in group.names.iter().rev() {
            self.dimension_value(dim)?;
        }
        Ok(())
    }

    /// Joins the tables of `group`'s dimensions that imply others, so that
    /// their implied values (`visit` → physical_filter, day_obs) are known
    /// even where [`Self::join_dimensions`] read the dimension from another
    /// table: data IDs then expand the same whichever table supplied it.
    pub(crate) fn join_implying(
        &mut self,
        group: &quanta_core::DimensionGroup,
    ) -> std::result::Result<(), String> {
        for dim in &group.names {
            let implies = self
                .universe
                .element(dim)
                .is_some_and(|e| e.has_records && !e.implies.is_empty());
            if implies {
                self.ensure_element(dim)?;
            }
        }
        Ok(())
    }

    /// The SQL expression for a dimension's value, joining what is needed to
    /// reach it: first through elements whose values are known and imply it,
    /// then, for a dimension unrelated to the query so far, its own table.
    pub(crate) fn dimension_value(&mut self, dim: &str) -> std::result::Result<String, String> {
        if let Some(v) = self.values.get(dim) {
            return Ok(v.clone());
        }
        self.universe
            .dimension(dim)
            .map_err(|_| format!("unknown dimension `{dim}`"))?;
        if let Some(path) = self.implication_path(dim) {
            for element in path {
                self.ensure_element(&element)?;
            }
            if let Some(v) = self.values.get(dim) {
                return Ok(v.clone());
            }
        }
        let element = self.universe.dimension(dim).map_err(|e| e.to_string())?;
        if element.has_records {
            self.ensure_element(dim)?;
            return Ok(self.values[dim].clone());
        }
        // A dimension without records (band): reach it through any element
        // that implies it.
        let implier = self
            .universe
            .elements()
            .iter()
            .find(|e| e.implies.iter().any(|i| i == dim) && e.has_records)
            .map(|e| e.name.clone())
            .ok_or_else(|| format!("no element provides values for `{dim}`"))?;
        self.ensure_element(&implier)?;
        Ok(self.values[dim].clone())
    }

    /// A chain of elements, starting from one whose value is known, through
    /// `implies` links, whose last element implies `target`.
    pub(crate) fn implication_path(&self, target: &str) -> Option<Vec<String>> {
        let mut queue: std::collections::VecDeque<Vec<String>> = self
            .values
            .keys()
            .filter(|d| self.universe.element(d).is_some_and(|e| e.has_records))
            .map(|d| vec![d.clone()])
            .collect();
        let mut seen: Vec<String> = self.values.keys().cloned().collect();
        while let Some(path) = queue.pop_front() {
            let last = self.universe.element(path.last()?)?;
            if last.implies.iter().any(|i| i == target) {
                return Some(path);
            }
            for next in &last.implies {
                if seen.contains(next) {
                    continue;
                }
                seen.push(next.clone());
                if self.universe.element(next).is_some_and(|e| e.has_records) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    queue.push_back(longer);
                }
            }
        }
        None
    }

    pub(crate) fn resolve_identifier(
        &mut self,
        ident: &Identifier,
    ) -> std::result::Result<ResolvedColumn, String> {
        match &ident.element {
            None => {
                let element = self.universe.dimension(&ident.name).map_err(|_| {
                    format!(
                        "unknown dimension `{}` (metadata fields are written element.field)",
                        ident.name
                    )
                })?;
                let field_type = element
                    .key
                    .as_ref()
                    .map(|k| k.field_type)
                    .unwrap_or(FieldType::String);
                Ok(ResolvedColumn {
                    sql: self.dimension_value(&ident.name)?,
                    field_type,
                })
            }
            Some(element_name) => {
                let element = self
                    .universe
                    .element(element_name)
                    .ok_or_else(|| format!("unknown dimension element `{element_name}`"))?;
                if key_column(element) == Some(ident.name.as_str()) {
                    return Ok(ResolvedColumn {
                        sql: self.dimension_value(element_name)?,
                        field_type: self.universe.key_type(element_name),
                    });
                }
                if element.required_closure.contains(&ident.name)
                    || element.implies.contains(&ident.name)
                {
                    self.ensure_element(element_name)?;
                    return Ok(ResolvedColumn {
                        sql: self.dimension_value(&ident.name)?,
                        field_type: self.universe.key_type(&ident.name),
                    });
                }
                let field = element
                    .metadata
                    .iter()
                    .find(|f| f.name == ident.name)
                    .ok_or_else(|| {
                        format!(
                            "`{}` is not a field of `{element_name}` (fields: {})",
                            ident.name,
                            element
                                .record_fields(self.universe)
                                .iter()
                                .map(|f| f.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?;
                let alias = self.ensure_element(element_name)?;
                Ok(ResolvedColumn {
                    sql: format!("{alias}.{}", quote(&field.name)),
                    field_type: field.field_type,
                })
            }
        }
    }

    /// The HEALPix level of a bare `healpix<N>` that is no dimension of
    /// the universe (`N` at most the deepest level regions index at).
    fn sky_pixel_level(&self, ident: &Identifier) -> Option<u8> {
        if ident.element.is_some() || self.universe.dimension(&ident.name).is_ok() {
            return None;
        }
        let level: u8 = ident.name.strip_prefix("healpix")?.parse().ok()?;
        (level <= quanta_spatial::HEALPIX_MAX_LEVEL).then_some(level)
    }

    /// A sky pixel against the regions of the query: per spatial family,
    /// the most specific element with a region its dimensions identify.
    fn resolve_sky_pixel(
        &mut self,
        ident: &Identifier,
        level: u8,
    ) -> std::result::Result<SkyPixel, String> {
        let known: Vec<String> = self.values.keys().cloned().collect();
        let elements = most_specific_per_family(self.universe, &|d| known.iter().any(|k| k == d));
        if elements.is_empty() {
            let spatial: Vec<&str> = self
                .universe
                .spatial_elements()
                .map(|e| e.name.as_str())
                .collect();
            return Err(format!(
                "`{}` matches the regions of the query's data IDs, and these have none \
                 (elements with regions: {})",
                ident.name,
                spatial.join(", ")
            ));
        }
        let mut regions = Vec::new();
        for element in elements {
            let field = element
                .region_field()
                .ok_or_else(|| format!("`{}` has no region", element.name))?;
            let alias = self.ensure_element(&element.name)?;
            regions.push(SkyPixelRegion {
                skypix_table: quote(&skypix_overlap_table(element)),
                region_id: format!("{alias}.{}", quote(REGION_ID_COLUMN)),
                region: format!("{alias}.{}", quote(&field.name)),
            });
        }
        Ok(SkyPixel {
            level,
            index_level: self.universe.skypix_level,
            regions,
        })
    }

    /// Parses and compiles `where_text`, joining what it references, and
    /// adds it to the conditions.
    pub(crate) fn add_where(&mut self, where_text: &str, binds: &Binds) -> Result<()> {
        let Some(parsed) = expr::parse(where_text)? else {
            return Ok(());
        };
        // Resolve every identifier first (joins happen here, in a stable
        // order), then compile against the memoized resolutions.
        let mut resolved: Vec<Resolution> = Vec::new();
        for ident in parsed.identifiers() {
            let (column, sky_pixel) = match self.sky_pixel_level(&ident) {
                Some(level) => match self.resolve_sky_pixel(&ident, level) {
                    // Never pasted: the compiler matches a sky pixel itself.
                    Ok(pixel) => (
                        Ok(ResolvedColumn {
                            sql: "NULL".into(),
                            field_type: FieldType::Int,
                        }),
                        Some(pixel),
                    ),
                    Err(e) => (Err(e), None),
                },
                None => (self.resolve_identifier(&ident), None),
            };
            resolved.push((ident, column, sky_pixel));
        }
        type Resolution = (
            Identifier,
            std::result::Result<ResolvedColumn, String>,
            Option<SkyPixel>,
        );
        struct Memo<'a>(&'a [Resolution]);
        impl Memo<'_> {
            fn find(&self, ident: &Identifier) -> Option<&Resolution> {
                self.0
                    .iter()
                    .find(|(i, ..)| i.element == ident.element && i.name == ident.name)
            }
        }
        impl ColumnResolver for Memo<'_> {
            fn resolve(&self, ident: &Identifier) -> std::result::Result<ResolvedColumn, String> {
                self.find(ident)
                    .map(|(_, r, _)| r.clone())
                    .unwrap_or_else(|| Err(format!("unresolved identifier `{}`", ident.name)))
            }

            fn sky_pixel(&self, ident: &Identifier) -> Option<SkyPixel> {
                self.find(ident).and_then(|(.., p)| p.clone())
            }
        }
        let compiled = expr::compile_into(&parsed, &Memo(&resolved), binds, &mut self.params)?;
        self.conditions.push(format!("({compiled})"));
        Ok(())
    }

    pub(crate) fn where_sql(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        }
    }
}

fn sql_to_data_id_value(v: SqlValue) -> Result<DataIdValue> {
    match v {
        SqlValue::Integer(i) => Ok(DataIdValue::Int(i)),
        SqlValue::Text(s) => Ok(DataIdValue::from(s)),
        other => Err(RegistryError::Invalid(format!(
            "unexpected data ID value {other:?}"
        ))),
    }
}

impl Registry {
    /// Joins the spatial families `dims` span (see [`crate::spatial_join`])
    /// into a query whose dimension values are already known.
    pub(crate) fn add_spatial_joins(
        &self,
        builder: &mut QueryBuilder<'_>,
        dims: &quanta_core::DimensionGroup,
    ) -> Result<()> {
        let mut has_records = |element: &str| {
            let sql = format!("SELECT 1 FROM {} LIMIT 1", quote(element));
            matches!(self.db.query_row(&sql, &[], |_| Ok(())), Ok(Some(())))
        };
        for join in plan_spatial_joins(&self.universe, dims, &mut has_records) {
            tracing::debug!(?join, "spatial join");
            builder
                .add_spatial_join(&join)
                .map_err(RegistryError::Invalid)?;
        }
        Ok(())
    }

    /// Distinct data IDs over `dimensions` (plus the dimensions they
    /// require) that have records and satisfy `where_text`, in key order.
    pub fn query_data_ids(
        &self,
        dimensions: &[String],
        where_text: &str,
        binds: &Binds,
    ) -> Result<Vec<DataId>> {
        let group = self.universe.conform(dimensions)?;
        let mut builder = QueryBuilder::new(&self.universe, self.dialect());
        // Spatial joins first: their elements (`visit_detector`) then supply
        // the dimensions they require.
        self.add_spatial_joins(&mut builder, &group)?;
        builder
            .join_dimensions(&group)
            .map_err(RegistryError::Invalid)?;
        builder.add_where(where_text, binds)?;
        let columns: Vec<String> = group.iter().map(|d| builder.values[d].clone()).collect();
        let sql = format!(
            "SELECT DISTINCT {} FROM {}{} ORDER BY {}",
            columns.join(", "),
            builder.sql_from(),
            builder.where_sql(),
            (1..=columns.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracing::debug!(%sql, "query_data_ids");
        self.db.query_rows(&sql, &builder.params.bound(), |row| {
            let mut data_id = DataId::empty();
            for (i, dim) in group.iter().enumerate() {
                data_id.insert(dim, sql_to_data_id_value(row.get(i)?)?);
            }
            Ok(data_id)
        })
    }

    /// Datasets of the given types (all registered types when empty) in
    /// `collections` matching `where_text`. With `find_first`, only the first
    /// dataset of each type and data ID along the search path is returned
    /// (CALIBRATION collections are then skipped: they need a time).
    pub fn query_datasets(
        &self,
        dataset_types: &[String],
        collections: &[String],
        where_text: &str,
        binds: &Binds,
        find_first: bool,
    ) -> Result<Vec<FoundDataset>> {
        let types = if dataset_types.is_empty() {
            self.list_dataset_types()?
        } else {
            dataset_types
                .iter()
                .map(|t| self.dataset_type_required(t))
                .collect::<Result<Vec<_>>>()?
        };
        let search_path = self.resolve_search_path(collections)?;
        let mut out = Vec::new();
        for dt in &types {
            let type_id = self.dataset_type_id(&dt.name)?;
            // rank → dataset; keyed by data ID for find-first.
            let mut best: BTreeMap<String, (usize, FoundDataset)> = BTreeMap::new();
            for (rank, collection) in search_path.iter().enumerate() {
                let Some(membership) = Membership::of(collection.collection_type) else {
                    continue;
                };
                // Find-first has no time to pick one certification by.
                if find_first && membership.validity.is_some() {
                    continue;
                }
                let mut builder = QueryBuilder::new(&self.universe, self.dialect());
                builder.from.push(membership.from.into());
                builder.from.push("collection AS run".into());
                builder.conditions.push("run.id = d.run_id".into());
                let member = membership.conditions(&mut builder.params, type_id, collection.id);
                builder.conditions.push(member);
                for dim in dt.dimensions.iter() {
                    builder
                        .values
                        .insert(dim.to_string(), format!("d.{}", quote(dim)));
                }
                let membership_tables = builder.from.len();
                builder.add_where(where_text, binds)?;
                // A dataset is one row of a RUN or TAGGED membership, and
                // the RUN is joined by its key: only a calibration's
                // validity ranges, or the tables a `where` joins (an
                // overlap join is not one-to-one), can repeat it. The
                // comparison of every column of consecutive rows that
                // DISTINCT costs was a fifth of a whole RUN's query.
                let where_joins = builder.from.len() > membership_tables;
                let distinct = if membership.may_repeat || where_joins {
                    "DISTINCT "
                } else {
                    ""
                };
                let sql = format!(
                    "SELECT {distinct}d.id, d.data_id, run.name, d.path, d.formatter, d.size, d.checksum \
                     FROM {}{} ORDER BY d.data_id",
                    builder.sql_from(),
                    builder.where_sql()
                );
                tracing::debug!(%sql, "query_datasets");
                self.db.for_each_row(&sql, &builder.params.bound(), |row| {
                    // Borrowed: a String per dataset only where find-first
                    // keeps it as a key.
                    let key = row.get_str(1)?.ok_or_else(|| {
                        RegistryError::Invalid("a dataset row without a data ID".into())
                    })?;
                    if find_first && best.contains_key(key) {
                        return Ok(true);
                    }
                    let path: Option<String> = row.get(3)?;
                    let stored = match path {
                        Some(path) => Some(DatastoreRecord {
                            path,
                            formatter: row.get(4)?,
                            size: row.get::<i64>(5)? as u64,
                            checksum: row.get(6)?,
                        }),
                        None => None,
                    };
                    let found = FoundDataset {
                        dataset_ref: DatasetRef {
                            id: row.get(0)?,
                            dataset_type: dt.name.clone(),
                            data_id: data_id_from_key(&dt.dimensions.names, key)?,
                            run: row.get(2)?,
                        },
                        collection: collection.name.clone(),
                        stored,
                    };
                    if find_first {
                        best.insert(key.to_string(), (rank, found));
                    } else {
                        out.push(found);
                    }
                    Ok(true)
                })?;
            }
            out.extend(best.into_values().map(|(_, f)| f));
        }
        Ok(out)
    }
}
