//! The FITS example pipeline (`pipelines/fits.yaml`): synthetic raw images
//! per (exposure, detector) with a master bias and flat as CALIBRATION
//! datasets; tasks for bias subtraction and flat division, background
//! estimation, source detection (a FITS binary-table catalog) and a
//! per-exposure summary; the FITS formatters that store images and
//! catalogs through CFITSIO (`fitsio`); and [`workload::create_fits_repo`],
//! which builds a repo for it.
//!
//! Module map: [`image`] the in-memory types, [`wcs`] the TAN WCS images
//! may carry, [`formatter`] FITS encoding,
//! [`synth`] the simulated camera and sky, [`measure`] the algorithms,
//! `tasks` the `PipelineTask`s, [`workload`] the repo builder.

pub mod formatter;
pub mod image;
pub mod measure;
pub mod synth;
mod tasks;
pub mod wcs;
pub mod workload;

pub use formatter::{
    FitsCatalogFormatter, FitsFormatError, FitsImageFormatter, CATALOG_STORAGE_CLASS,
    IMAGE_STORAGE_CLASS,
};
pub use image::{Header, Image, ImageError, Source, SourceCatalog};
pub use tasks::{register, Background, Detect, Isr, Summarize};
pub use wcs::{TanWcs, WcsError};
