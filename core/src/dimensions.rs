//! The dimension universe: which dimensions exist, how they depend on one
//! another, and which metadata their records carry.

use std::collections::BTreeSet;

type NameIndex = foldhash::HashMap<String, usize>;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// The built-in universe, close to LSST's (see the file for what each key means).
pub const DEFAULT_UNIVERSE_YAML: &str = include_str!("default_universe.yaml");

/// The type of a key or metadata column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Int,
    String,
    Float,
    Bool,
    /// A region of the sky (`quanta_spatial::Region`): JSON
    /// `{"polygon": [[ra, dec], ...]}` or `{"circle": ...}` in records,
    /// a compact blob in the registry. Metadata only, never a key.
    Region,
}

impl FieldType {
    pub fn sql_type(self) -> &'static str {
        match self {
            FieldType::Int | FieldType::Bool => "INTEGER",
            FieldType::String => "TEXT",
            FieldType::Float => "REAL",
            FieldType::Region => "BLOB",
        }
    }
}

/// A named, typed column of a dimension element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
}

/// One element of the universe: a dimension (with a key of its own) or a join
/// element (keyed only by the dimensions it requires).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimensionElement {
    pub name: String,
    /// The element's own key; `None` for join elements.
    pub key: Option<FieldSpec>,
    /// Direct required dimensions, as configured.
    pub requires: Vec<String>,
    /// Direct implied dimensions, as configured.
    pub implies: Vec<String>,
    pub metadata: Vec<FieldSpec>,
    /// `false` for dimensions such as `band` whose values come from the
    /// element that implies them.
    pub has_records: bool,
    /// Required dimensions closed transitively, in universe order. These are
    /// the leading primary-key columns of the element's table.
    pub required_closure: Vec<String>,
    /// The spatial family of an element with a region (`observation` for
    /// visit and visit_detector, `skymap` for tract and patch): queries
    /// over dimensions of two families are joined by region overlap.
    pub spatial: Option<String>,
}

impl DimensionElement {
    pub fn is_dimension(&self) -> bool {
        self.key.is_some()
    }

    /// The element's region field (at most one; only elements with a
    /// spatial family have one).
    pub fn region_field(&self) -> Option<&FieldSpec> {
        self.metadata
            .iter()
            .find(|f| f.field_type == FieldType::Region)
    }

    /// The dimensions whose values identify one record: the required
    /// closure, then the element itself for a dimension.
    pub fn identifying_dimensions(&self) -> impl Iterator<Item = &str> {
        self.required_closure
            .iter()
            .map(String::as_str)
            .chain(self.key.is_some().then_some(self.name.as_str()))
    }

    /// The columns of a record, in table order: required dimension keys, the
    /// element's own key, implied dimensions, then metadata.
    pub fn record_fields(&self, universe: &DimensionUniverse) -> Vec<FieldSpec> {
        let mut fields = Vec::new();
        for dim in &self.required_closure {
            fields.push(FieldSpec {
                name: dim.clone(),
                field_type: universe.key_type(dim),
            });
        }
        if let Some(key) = &self.key {
            fields.push(key.clone());
        }
        for dim in &self.implies {
            fields.push(FieldSpec {
                name: dim.clone(),
                field_type: universe.key_type(dim),
            });
        }
        fields.extend(self.metadata.iter().cloned());
        fields
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UniverseFile {
    version: u32,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    skypix: Option<SkypixFile>,
    elements: serde_yaml_ng::Mapping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkypixFile {
    healpix_level: u8,
}

/// The deepest HEALPix level a universe may index regions at (indices fit
/// an SQLite INTEGER, and finer cells only multiply the rows).
pub const MAX_SKYPIX_LEVEL: u8 = 24;

/// The level regions are pixelized at when a universe with regions does not
/// say (HEALPix level 8: cells of about 0.23°, the size of a detector or a
/// patch).
pub const DEFAULT_SKYPIX_LEVEL: u8 = 8;

fn default_namespace() -> String {
    "quanta".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ElementFile {
    key: Option<FieldSpec>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    implies: Vec<String>,
    #[serde(default)]
    metadata: Vec<FieldSpec>,
    #[serde(default = "yes")]
    has_records: bool,
    #[serde(default)]
    join: bool,
    #[serde(default)]
    spatial: Option<String>,
}

fn yes() -> bool {
    true
}

/// The configured set of dimensions and join elements of a repository.
///
/// Element order is the order of the configuration file, which must list an
/// element after everything it depends on; that order is also the canonical
/// order of keys in a [`crate::DataId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionUniverse {
    pub version: u32,
    pub namespace: String,
    /// The HEALPix (nested) level every region is pixelized at for the
    /// coarse step of spatial joins.
    pub skypix_level: u8,
    elements: Vec<DimensionElement>,
    /// Element name → position. Hashed: the registry's bulk insert looks
    /// dimensions up by name for every dataset.
    index: NameIndex,
    /// The YAML text the universe was loaded from (stored in the registry so a
    /// repo is self-describing).
    source: String,
}

/// The registry column that numbers the records of an element with a
/// region (an integer the spatial index refers to instead of the record's
/// key); reserved as a field name in such elements.
pub const REGION_ID_COLUMN: &str = "region_id";

/// Identifiers become SQL table and column names, so they are restricted to a
/// safe alphabet when the universe is loaded (they are also always quoted).
pub fn is_safe_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

impl DimensionUniverse {
    pub fn default_universe() -> Self {
        Self::from_yaml(DEFAULT_UNIVERSE_YAML).expect("the built-in universe is valid")
    }

    pub fn from_yaml(text: &str) -> Result<Self, CoreError> {
        let file: UniverseFile =
            serde_yaml_ng::from_str(text).map_err(|e| CoreError::universe_yaml(&e))?;
        let mut elements: Vec<DimensionElement> = Vec::new();
        let mut index = NameIndex::default();
        for (name, body) in file.elements {
            let name = name
                .as_str()
                .ok_or_else(|| CoreError::Universe("element names must be strings".into()))?
                .to_string();
            let spec: ElementFile = serde_yaml_ng::from_value(body)
                .map_err(|e| CoreError::Universe(format!("element `{name}`: {e}")))?;
            let element = Self::build_element(&name, spec, &elements, &index)?;
            index.insert(name, elements.len());
            elements.push(element);
        }
        let skypix_level = match file.skypix {
            Some(s) if s.healpix_level > MAX_SKYPIX_LEVEL => {
                return Err(CoreError::Universe(format!(
                    "skypix: healpix_level {} is deeper than {MAX_SKYPIX_LEVEL}",
                    s.healpix_level
                )))
            }
            Some(s) => s.healpix_level,
            None => DEFAULT_SKYPIX_LEVEL,
        };
        Ok(Self {
            version: file.version,
            namespace: file.namespace,
            skypix_level,
            elements,
            index,
            source: text.to_string(),
        })
    }

    fn build_element(
        name: &str,
        spec: ElementFile,
        earlier: &[DimensionElement],
        index: &NameIndex,
    ) -> Result<DimensionElement, CoreError> {
        let bad = |msg: String| CoreError::Universe(format!("element `{name}`: {msg}"));
        if !is_safe_identifier(name) {
            return Err(bad("names must match [a-z_][a-z0-9_]*".into()));
        }
        if index.contains_key(name) {
            return Err(bad("defined twice".into()));
        }
        if spec.join == spec.key.is_some() {
            return Err(bad(
                "a dimension needs a `key`; a join element (`join: true`) has none".into(),
            ));
        }
        let lookup = |dep: &str| -> Result<&DimensionElement, CoreError> {
            match index.get(dep) {
                Some(&i) if earlier[i].is_dimension() => Ok(&earlier[i]),
                Some(_) => Err(bad(format!("`{dep}` is a join element, not a dimension"))),
                None => Err(bad(format!(
                    "depends on `{dep}`, which is not defined before it"
                ))),
            }
        };
        let mut required = BTreeSet::new();
        for dep in &spec.requires {
            let parent = lookup(dep)?;
            required.extend(parent.required_closure.iter().map(|d| index[d]));
            required.insert(index[dep]);
        }
        for dep in &spec.implies {
            lookup(dep)?;
        }
        let mut seen = BTreeSet::new();
        let regions = spec
            .metadata
            .iter()
            .filter(|f| f.field_type == FieldType::Region)
            .count();
        if spec
            .key
            .as_ref()
            .is_some_and(|k| k.field_type == FieldType::Region)
        {
            return Err(bad("a region cannot be a key".into()));
        }
        match (&spec.spatial, regions) {
            (None, 0) | (Some(_), 1) => {}
            (Some(family), 0) => {
                return Err(bad(format!(
                    "`spatial: {family}` needs a metadata field of type region"
                )))
            }
            (None, 1) => {
                return Err(bad(
                    "a region field needs the element's spatial family (`spatial: NAME`)".into(),
                ))
            }
            _ => return Err(bad("at most one region field per element".into())),
        }
        if let Some(family) = &spec.spatial {
            if !is_safe_identifier(family) {
                return Err(bad(format!(
                    "spatial family `{family}`: names must match [a-z_][a-z0-9_]*"
                )));
            }
            if !spec.has_records {
                return Err(bad("an element without records cannot have a region".into()));
            }
        }
        for field in spec.key.iter().chain(&spec.metadata) {
            if spec.spatial.is_some() && field.name == REGION_ID_COLUMN {
                return Err(bad(format!(
                    "field `{REGION_ID_COLUMN}` is reserved in an element with a region"
                )));
            }
            if !is_safe_identifier(&field.name) {
                return Err(bad(format!(
                    "field `{}`: names must match [a-z_][a-z0-9_]*",
                    field.name
                )));
            }
            if !seen.insert(field.name.clone())
                || spec.requires.contains(&field.name)
                || spec.implies.contains(&field.name)
            {
                return Err(bad(format!("field `{}` is defined twice", field.name)));
            }
        }
        Ok(DimensionElement {
            name: name.to_string(),
            key: spec.key,
            requires: spec.requires,
            implies: spec.implies,
            metadata: spec.metadata,
            has_records: spec.has_records,
            spatial: spec.spatial,
            required_closure: required
                .into_iter()
                .map(|i| earlier[i].name.clone())
                .collect(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// A digest of the universe definition, recorded in bundles so that a
    /// bundle is never used against a repo of another universe.
    pub fn digest(&self) -> String {
        let canonical = format!("{:?}{}", self.elements, self.skypix_level);
        format!("{:016x}", crate::hash::xxh3_64(canonical.as_bytes()))
    }

    pub fn elements(&self) -> &[DimensionElement] {
        &self.elements
    }

    pub fn dimensions(&self) -> impl Iterator<Item = &DimensionElement> {
        self.elements.iter().filter(|e| e.is_dimension())
    }

    /// The spatial families with an element that `dims` identify (all its
    /// identifying dimensions are in `dims`), in universe order.
    pub fn spatial_families_of(&self, dims: &DimensionGroup) -> Vec<&str> {
        let mut families: Vec<&str> = Vec::new();
        for e in self.spatial_elements() {
            let family = e.spatial.as_deref().unwrap_or_default();
            if e.identifying_dimensions().all(|d| dims.contains(d)) && !families.contains(&family) {
                families.push(family);
            }
        }
        families
    }

    /// Whether data on `a` and on `b` can be related by region overlap:
    /// each identifies an element of a different spatial family.
    pub fn spatially_related(&self, a: &DimensionGroup, b: &DimensionGroup) -> bool {
        let (fa, fb) = (self.spatial_families_of(a), self.spatial_families_of(b));
        fa.iter().any(|x| fb.iter().any(|y| x != y))
    }

    /// Elements that carry a region, in universe order.
    pub fn spatial_elements(&self) -> impl Iterator<Item = &DimensionElement> {
        self.elements.iter().filter(|e| e.spatial.is_some())
    }

    /// Every pair of elements with regions in different spatial families,
    /// the earlier in universe order first (`(patch, visit_detector)` in the
    /// default universe):
    /// the pairs whose overlaps the registry keeps.
    pub fn spatial_pairs(&self) -> Vec<(&DimensionElement, &DimensionElement)> {
        let spatial: Vec<&DimensionElement> = self.spatial_elements().collect();
        let mut pairs = Vec::new();
        for (i, a) in spatial.iter().enumerate() {
            for b in &spatial[i + 1..] {
                if a.spatial != b.spatial {
                    pairs.push((*a, *b));
                }
            }
        }
        pairs
    }

    pub fn element(&self, name: &str) -> Option<&DimensionElement> {
        self.index.get(name).map(|&i| &self.elements[i])
    }

    pub fn dimension(&self, name: &str) -> Result<&DimensionElement, CoreError> {
        match self.element(name) {
            Some(e) if e.is_dimension() => Ok(e),
            _ => Err(CoreError::UnknownDimension(name.to_string())),
        }
    }

    /// Position of an element in universe order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The type of a dimension's key value. Panics only if `dim` is not a
    /// dimension, which callers have checked.
    pub fn key_type(&self, dim: &str) -> FieldType {
        self.element(dim)
            .and_then(|e| e.key.as_ref())
            .map(|k| k.field_type)
            .unwrap_or(FieldType::String)
    }

    /// The minimal set of dimensions that identifies data labelled by `dims`:
    /// the dimensions themselves plus everything they require, in universe
    /// order. Unknown names are an error.
    pub fn conform<S: AsRef<str>>(&self, dims: &[S]) -> Result<DimensionGroup, CoreError> {
        let mut set = BTreeSet::new();
        for d in dims {
            let element = self.dimension(d.as_ref())?;
            set.insert(self.index[&element.name]);
            set.extend(element.required_closure.iter().map(|r| self.index[r]));
        }
        Ok(DimensionGroup {
            names: set
                .into_iter()
                .map(|i| self.elements[i].name.clone())
                .collect(),
        })
    }

    /// Everything `group` determines: its dimensions plus, transitively, the
    /// dimensions they imply (exposure → physical_filter → band), in order.
    pub fn implied_closure(&self, group: &DimensionGroup) -> Vec<String> {
        let mut set: BTreeSet<usize> = group.names.iter().map(|n| self.index[n]).collect();
        let mut stack: Vec<usize> = set.iter().copied().collect();
        while let Some(i) = stack.pop() {
            let element = &self.elements[i];
            for dep in element.implies.iter().chain(&element.required_closure) {
                let j = self.index[dep];
                if set.insert(j) {
                    stack.push(j);
                }
            }
        }
        set.into_iter()
            .map(|i| self.elements[i].name.clone())
            .collect()
    }
}

/// A set of dimensions, closed under `requires`, in universe order: the key
/// set of a [`crate::DataId`] for a dataset type or a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct DimensionGroup {
    pub names: Vec<String>,
}

impl DimensionGroup {
    pub fn contains(&self, dim: &str) -> bool {
        self.names.iter().any(|n| n == dim)
    }

    pub fn is_subset_of(&self, other: &DimensionGroup) -> bool {
        self.names.iter().all(|n| other.contains(n))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl std::fmt::Display for DimensionGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}", self.names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_universe_has_lsst_structure() {
        let u = DimensionUniverse::default_universe();
        let exposure = u.dimension("exposure").unwrap();
        assert_eq!(exposure.required_closure, vec!["instrument"]);
        assert_eq!(
            exposure.implies,
            vec!["physical_filter", "group", "day_obs"]
        );
        let patch = u.dimension("patch").unwrap();
        assert_eq!(patch.required_closure, vec!["skymap", "tract"]);
        assert!(!u.dimension("band").unwrap().has_records);
        assert!(u.dimension("visit_detector").is_err());
        assert!(!u.element("visit_patch_overlap").unwrap().is_dimension());
        assert_eq!(u.skypix_level, DEFAULT_SKYPIX_LEVEL);
        let spatial: Vec<_> = u.spatial_elements().map(|e| e.name.as_str()).collect();
        assert_eq!(spatial, ["visit", "tract", "patch", "visit_detector"]);
    }

    #[test]
    fn spatial_families_relate_observations_and_the_skymap() {
        let u = DimensionUniverse::default_universe();
        let g = |dims: &[&str]| u.conform(dims).unwrap();
        assert_eq!(
            u.spatial_families_of(&g(&["visit", "detector"])),
            ["observation"]
        );
        assert_eq!(u.spatial_families_of(&g(&["patch"])), ["skymap"]);
        assert!(u
            .spatial_families_of(&g(&["exposure", "detector"]))
            .is_empty());
        assert!(u.spatially_related(&g(&["visit", "detector"]), &g(&["patch", "band"])));
        assert!(!u.spatially_related(&g(&["visit"]), &g(&["visit", "detector"])));
        assert!(!u.spatially_related(&g(&["exposure"]), &g(&["patch"])));
    }

    #[test]
    fn regions_need_a_family_and_families_need_a_region() {
        let base = "version: 1\nelements:\n  a:\n    key: {name: id, type: int}\n";
        let no_family = format!("{base}    metadata: [{{name: region, type: region}}]\n");
        let err = DimensionUniverse::from_yaml(&no_family)
            .unwrap_err()
            .to_string();
        assert!(err.contains("spatial family"), "{err}");
        let no_region = format!("{base}    spatial: sky\n");
        let err = DimensionUniverse::from_yaml(&no_region)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs a metadata field of type region"),
            "{err}"
        );
        let deep = "version: 1\nskypix: {healpix_level: 30}\nelements:\n  a:\n    key: {name: id, type: int}\n";
        let err = DimensionUniverse::from_yaml(deep).unwrap_err().to_string();
        assert!(err.contains("healpix_level 30"), "{err}");
    }

    #[test]
    fn conform_adds_required_and_orders() {
        let u = DimensionUniverse::default_universe();
        let g = u.conform(&["detector", "exposure"]).unwrap();
        assert_eq!(g.names, vec!["instrument", "detector", "exposure"]);
        let closure = u.implied_closure(&g);
        assert_eq!(
            closure,
            vec![
                "instrument",
                "band",
                "physical_filter",
                "detector",
                "day_obs",
                "group",
                "exposure"
            ]
        );
        assert!(matches!(
            u.conform(&["exposre"]),
            Err(CoreError::UnknownDimension(d)) if d == "exposre"
        ));
    }

    #[test]
    fn universe_rejects_forward_references_and_unsafe_names() {
        let forward = "version: 1\nelements:\n  a:\n    requires: [b]\n    key: {name: id, type: int}\n  b:\n    key: {name: id, type: int}\n";
        let err = DimensionUniverse::from_yaml(forward)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`b`"), "{err}");
        let unsafe_name = "version: 1\nelements:\n  \"a; drop\":\n    key: {name: id, type: int}\n";
        assert!(DimensionUniverse::from_yaml(unsafe_name).is_err());
    }
}
