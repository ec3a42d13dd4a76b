//! The FITS example pipeline (`pipelines/fits.yaml`): synthetic raw images
//! per (exposure, detector) with a master bias and flat as CALIBRATION
//! datasets; tasks for bias subtraction and flat division, background
//! estimation, source detection (a FITS binary-table catalog) and a
//! per-exposure summary; the FITS formatters that store images and
//! catalogs live in `quanta-formats` (re-exported here as [`image`],
//! [`wcs`], [`formatter`]); [`workload::create_fits_repo`] builds a repo for
//! the pipeline.
//!
//! Module map: [`synth`] the simulated camera and sky, [`measure`] the algorithms,
//! `tasks` the `PipelineTask`s, [`workload`] the repo builder.

pub mod measure;
pub mod synth;
mod tasks;
pub mod workload;

pub use quanta_formats::fits::{formatter, image, wcs};
pub use quanta_formats::fits::{
    BBox, Exposure, FitsCatalogFormatter, FitsExposureFormatter, FitsFormatError,
    FitsImageFormatter, Header, Image, ImageError, Mask, Source, SourceCatalog, TanWcs, WcsError,
    CATALOG_STORAGE_CLASS, IMAGE_STORAGE_CLASS,
};
pub use tasks::{register, Background, CutoutStats, Detect, Isr, ScaleExposure, Summarize};
