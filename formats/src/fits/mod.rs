//! FITS through CFITSIO (`fitsio`): the in-memory types ([`image`]: `Image`,
//! `Mask`, `Exposure`, `SourceCatalog`, their `Header`; [`wcs`]: the TAN WCS
//! images carry) and their formatters ([`formatter`]).

pub mod describe;
pub mod exposure;
pub mod formatter;
pub mod image;
pub mod wcs;

pub use exposure::{
    FitsExposureFormatter, FitsMaskFormatter, PropertyListJsonFormatter, WcsJsonFormatter,
};
pub use formatter::{
    FitsCatalogFormatter, FitsFormatError, FitsImageFormatter, CATALOG_STORAGE_CLASS,
    IMAGE_STORAGE_CLASS,
};
pub use image::{
    BBox, ColumnData, ColumnTable, Exposure, Header, Image, ImageError, Mask, Source, SourceCatalog,
};
pub use wcs::{TanWcs, WcsError};
