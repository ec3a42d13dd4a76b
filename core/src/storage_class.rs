//! Storage classes: what a dataset is in memory, which components it is
//! made of, and which read parameters a read of it accepts.
//!
//! A **composite** storage class (`ExposureF`) declares its components
//! (name → storage class): `calexp.wcs` is the `wcs` component of a
//! `calexp` dataset, read from the parent's file(s) without reading the
//! rest. Components are *stored* (a part of the file, and a file of its
//! own when the datastore disassembles composites) or *derived* (computed
//! on read from what is stored, e.g. the `bbox` of an image from its
//! header; never a file of their own). Read parameters (`bbox` of an image,
//! `columns` and `rows` of a catalog) restrict what a read returns.
//!
//! The set is fixed here ([`StorageClasses::builtin`]) because every
//! process that reads or writes a dataset must agree on it: a worker, the
//! head node and merge see the same classes.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::error::CoreError;

/// One storage class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageClassDef {
    pub name: String,
    /// Stored components, in file order: name → storage class.
    pub components: Vec<(String, String)>,
    /// Derived components: name → storage class.
    pub derived: Vec<(String, String)>,
    /// The read parameters a read of this class accepts.
    pub parameters: Vec<String>,
}

impl StorageClassDef {
    fn new(
        name: &str,
        components: &[(&str, &str)],
        derived: &[(&str, &str)],
        params: &[&str],
    ) -> Self {
        let own = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        Self {
            name: name.to_string(),
            components: own(components),
            derived: own(derived),
            parameters: params.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Whether the class has stored components (a composite).
    pub fn is_composite(&self) -> bool {
        !self.components.is_empty()
    }

    /// The storage class of component `name` (stored or derived).
    pub fn component(&self, name: &str) -> Option<&str> {
        self.components
            .iter()
            .chain(&self.derived)
            .find(|(n, _)| n == name)
            .map(|(_, sc)| sc.as_str())
    }

    /// Whether `name` is a derived component.
    pub fn is_derived(&self, name: &str) -> bool {
        self.derived.iter().any(|(n, _)| n == name)
    }

    fn component_names(&self) -> String {
        let names: Vec<&str> = self
            .components
            .iter()
            .chain(&self.derived)
            .map(|(n, _)| n.as_str())
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }
}

/// The image storage class (f32 pixels).
pub const IMAGE_F: &str = "ImageF";
/// The integer mask plane of an exposure.
pub const MASK_X: &str = "MaskX";
/// An image, its mask and variance planes, WCS and metadata.
pub const EXPOSURE_F: &str = "ExposureF";
/// A celestial WCS.
pub const WCS: &str = "Wcs";
/// Header metadata.
pub const PROPERTY_LIST: &str = "PropertyList";
/// A bounding box in pixels (a derived component).
pub const BOX2I: &str = "Box2I";
/// A source catalog (FITS binary table).
pub const SOURCE_CATALOG: &str = "SourceCatalog";

/// The storage classes a process knows, by name.
#[derive(Debug, Clone)]
pub struct StorageClasses {
    by_name: BTreeMap<String, StorageClassDef>,
}

impl StorageClasses {
    /// The built-in set: `Json`, `Bytes`, `ImageF` and `MaskX` (parameter
    /// `bbox`, derived `bbox`), `ExposureF` (components `image`, `mask`,
    /// `variance`, `wcs`, `metadata`; derived `bbox`; parameter `bbox`),
    /// `Wcs`, `PropertyList`, `Box2I`, and `SourceCatalog` (parameters
    /// `columns`, `rows`).
    pub fn builtin() -> &'static StorageClasses {
        static BUILTIN: OnceLock<StorageClasses> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            let defs = [
                StorageClassDef::new("Json", &[], &[], &[]),
                StorageClassDef::new("Bytes", &[], &[], &[]),
                StorageClassDef::new(IMAGE_F, &[], &[("bbox", BOX2I)], &["bbox"]),
                StorageClassDef::new(MASK_X, &[], &[("bbox", BOX2I)], &["bbox"]),
                StorageClassDef::new(
                    EXPOSURE_F,
                    &[
                        ("image", IMAGE_F),
                        ("mask", MASK_X),
                        ("variance", IMAGE_F),
                        ("wcs", WCS),
                        ("metadata", PROPERTY_LIST),
                    ],
                    &[("bbox", BOX2I)],
                    &["bbox"],
                ),
                StorageClassDef::new(WCS, &[], &[], &[]),
                StorageClassDef::new(PROPERTY_LIST, &[], &[], &[]),
                StorageClassDef::new(BOX2I, &[], &[], &[]),
                StorageClassDef::new(SOURCE_CATALOG, &[], &[], &["columns", "rows"]),
            ];
            StorageClasses {
                by_name: defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
            }
        })
    }

    /// The class named `name`, if known. Classes not in the set (a
    /// formatter of another crate's) have no components and no parameters.
    pub fn get(&self, name: &str) -> Option<&StorageClassDef> {
        self.by_name.get(name)
    }

    /// The storage class of component `component` of a dataset of class
    /// `parent`; an error names the components there are.
    pub fn component_class(&self, parent: &str, component: &str) -> Result<&str, CoreError> {
        match self.get(parent) {
            Some(def) => def.component(component).ok_or_else(|| {
                CoreError::BadName(format!(
                    "storage class `{parent}` has no component `{component}` (components: {})",
                    def.component_names()
                ))
            }),
            None => Err(CoreError::BadName(format!(
                "storage class `{parent}` has no component `{component}` (it has no components)"
            ))),
        }
    }

    /// Refuses read parameters a read of class `storage_class` does not
    /// accept, naming those it does.
    pub fn check_parameters<'a>(
        &self,
        storage_class: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), CoreError> {
        let accepted: &[String] = self
            .get(storage_class)
            .map(|d| d.parameters.as_slice())
            .unwrap_or(&[]);
        for name in names {
            if !accepted.iter().any(|p| p == name) {
                return Err(CoreError::BadName(format!(
                    "read parameter `{name}`: storage class `{storage_class}` accepts {}",
                    if accepted.is_empty() {
                        "none".to_string()
                    } else {
                        accepted.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }
}

/// Splits a dataset type name into its parent and component
/// (`calexp.wcs` → (`calexp`, `Some("wcs")`)); names without `.` have no
/// component. Only the first `.` separates (LSST's rule).
pub fn split_component(name: &str) -> (&str, Option<&str>) {
    match name.split_once('.') {
        Some((parent, component)) => (parent, Some(component)),
        None => (name, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_has_components_and_parameters() {
        let sc = StorageClasses::builtin();
        let exp = sc.get(EXPOSURE_F).unwrap();
        assert!(exp.is_composite());
        assert_eq!(sc.component_class(EXPOSURE_F, "wcs").unwrap(), WCS);
        assert_eq!(sc.component_class(EXPOSURE_F, "image").unwrap(), IMAGE_F);
        assert_eq!(sc.component_class(EXPOSURE_F, "bbox").unwrap(), BOX2I);
        assert!(exp.is_derived("bbox") && !exp.is_derived("wcs"));
        let err = sc.component_class(EXPOSURE_F, "psf").unwrap_err();
        assert!(err.to_string().contains("image, mask"), "{err}");
        assert!(sc.component_class("Json", "x").is_err());
        assert!(sc.check_parameters(IMAGE_F, ["bbox"]).is_ok());
        assert!(sc
            .check_parameters(SOURCE_CATALOG, ["rows", "columns"])
            .is_ok());
        let err = sc.check_parameters("Json", ["bbox"]).unwrap_err();
        assert!(err.to_string().contains("accepts none"), "{err}");
        assert_eq!(split_component("calexp.wcs"), ("calexp", Some("wcs")));
        assert_eq!(split_component("calexp"), ("calexp", None));
    }
}
