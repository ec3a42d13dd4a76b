//! The file formats the `quanta` binary ships, beyond the datastore's
//! built-in Json and Bytes: FITS images (`ImageF`), exposures (the
//! composite `ExposureF`: image, mask, variance, WCS, metadata) and their
//! component classes (`MaskX`; `Wcs` and `PropertyList` as JSON), FITS
//! binary-table catalogs (`SourceCatalog`), all through CFITSIO (`fitsio`).
//! Their [`Formatter::read`] reads a component from its HDU or header and a
//! `bbox` cut-out or `columns`/`rows` subset from that part of the file
//! only.
//!
//! Owns: the in-memory types of those storage classes and their
//! [`Formatter`]s. Must not: know the Registry, bundles or tasks.
//!
//! Catalogs are FITS binary tables, not Parquet: `arrow`/`parquet` would
//! add far more build time than the rest of the workspace (see
//! ARCHITECTURE.md, "Formats").

pub mod fits;

use std::sync::Arc;

use quanta_datastore::{Formatter, FormatterRegistry};

/// The built-in formatters plus every formatter of this crate: what the
/// `quanta` binary registers.
pub fn formatters() -> FormatterRegistry {
    let mut registry = FormatterRegistry::default();
    for f in [
        Arc::new(fits::FitsImageFormatter) as Arc<dyn Formatter>,
        Arc::new(fits::FitsCatalogFormatter),
        Arc::new(fits::FitsExposureFormatter),
        Arc::new(fits::FitsMaskFormatter),
        Arc::new(fits::WcsJsonFormatter),
        Arc::new(fits::PropertyListJsonFormatter),
    ] {
        // Fixed names, storage classes and extensions, distinct from the
        // built-ins: the unit test below proves registration succeeds.
        if let Err(e) = registry.register(f) {
            unreachable!("the FITS formatters are valid and distinct: {e}");
        }
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatters_serve_the_fits_storage_classes() {
        let f = formatters();
        assert_eq!(
            f.storage_classes(),
            [
                "Bytes",
                "ExposureF",
                "ImageF",
                "Json",
                "MaskX",
                "PropertyList",
                "SourceCatalog",
                "Wcs"
            ]
        );
        assert_eq!(
            f.for_storage_class(fits::IMAGE_STORAGE_CLASS)
                .unwrap()
                .name(),
            fits::FitsImageFormatter::NAME
        );
    }
}
