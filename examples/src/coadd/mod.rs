//! The coadd example (`pipelines/coadd.yaml`, `quanta demo --pipeline
//! coadd`): a small synthetic survey ([`survey`]: calexps with TAN WCSs,
//! visit and visit_detector regions, a grid skymap), `examples.coadd.MakeWarp`
//! (per visit and patch: the visit's calexps overlapping the patch,
//! resampled onto the patch's pixel grid) and `examples.coadd.AssembleCoadd`
//! (per patch and band: the warps stacked), with the algorithms in
//! [`warp`].
//!
//! # What this approximates
//!
//! It really co-adds pixels of overlapping images on a common grid, but it
//! is not LSST's coadd:
//! - **no PSF matching**: visits have different PSF widths and are stacked
//!   as they are, so the coadd's PSF is a mixture;
//! - **no photometric calibration**: calexps are in ADU of one simulated
//!   zero point; nothing is fitted;
//! - **bilinear resampling** through the sky (pixel → sky by the calexp's
//!   TAN WCS, sky → warp pixel), which smooths noise and correlates it
//!   between pixels; no Lanczos kernel, no flux-conserving drizzle, no
//!   distortion terms in the WCS;
//! - **no outlier rejection** and no masks: the stack is a per-pixel mean
//!   weighted by 1/σ² of each warp's (constant) sky noise; NaN where no
//!   warp covers; no variance plane is carried;
//! - calexps are simulated already background-subtracted (stars + Gaussian
//!   noise), not produced by the FITS pipeline's ISR.

pub mod survey;
mod tasks;
pub mod warp;

pub use tasks::{register, AssembleCoadd, MakeWarp};
