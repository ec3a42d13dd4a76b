//! The in-memory types of the FITS pipeline: [`Image`] (f32 pixels), the
//! [`SourceCatalog`] detection writes, and the [`Header`] keys both carry.

use thiserror::Error;

use super::wcs::TanWcs;

/// Why an image operation was refused.
#[derive(Debug, Error, PartialEq)]
pub enum ImageError {
    #[error("an image needs a width and height of at least 1, got {width}×{height}")]
    Empty { width: usize, height: usize },
    #[error("a {width}×{height} image has more pixels than this machine can address")]
    TooLarge { width: usize, height: usize },
    #[error("{width}×{height} image needs {expected} pixels, got {actual}")]
    PixelCount {
        width: usize,
        height: usize,
        expected: usize,
        actual: usize,
    },
    #[error("{what}: shapes differ ({a_w}×{a_h} against {b_w}×{b_h})")]
    ShapeMismatch {
        what: &'static str,
        a_w: usize,
        a_h: usize,
        b_w: usize,
        b_h: usize,
    },
    #[error("flat field pixel ({x}, {y}) is {value}; a flat must be finite and > 0")]
    BadFlat { x: usize, y: usize, value: f32 },
}

/// The header keys the pipeline reads and writes, all optional. FITS keys
/// are named beside each field; unknown keys in a file are ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// `IMAGETYP`: `raw`, `bias`, `flat`, `postisr`, `calexp`, `sources`.
    pub kind: Option<String>,
    /// `EXPID`: the exposure.
    pub exposure: Option<i64>,
    /// `DETECTOR`: the detector.
    pub detector: Option<i64>,
    /// `NINJECT`: how many point sources the simulator injected (truth
    /// carried along so the summary can compare).
    pub injected_sources: Option<i64>,
    /// `BGMEDIAN`: median of the subtracted background model (ADU).
    pub background: Option<f64>,
    /// `SKYSIGMA`: robust noise σ of the background-subtracted image (ADU).
    pub sigma: Option<f64>,
    /// `DETTHRSH`: the detection threshold used (ADU above background).
    pub threshold: Option<f64>,
    /// `VISIT`: the visit of a calexp or warp.
    pub visit: Option<i64>,
    /// `NCOMBINE`: how many images a coadd combined.
    pub combined: Option<i64>,
    /// The celestial WCS (`CTYPE1/2` `RA---TAN`/`DEC--TAN`, `CRVAL1/2`,
    /// `CRPIX1/2`, `CD1_1 … CD2_2`; `CDELT1/2` are read when there is no CD
    /// matrix).
    pub wcs: Option<TanWcs>,
}

/// A single-band image of f32 pixels, row-major (x fastest), with its
/// header. Pixel (x, y) is column x, row y, both from 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    width: usize,
    height: usize,
    pixels: Vec<f32>,
    pub header: Header,
}

impl Image {
    /// An image from its pixels; refuses an empty shape or a pixel count
    /// that does not match it.
    pub fn new(width: usize, height: usize, pixels: Vec<f32>) -> Result<Self, ImageError> {
        let expected = pixel_count(width, height)?;
        if pixels.len() != expected {
            return Err(ImageError::PixelCount {
                width,
                height,
                expected,
                actual: pixels.len(),
            });
        }
        Ok(Self {
            width,
            height,
            pixels,
            header: Header::default(),
        })
    }

    /// An image with every pixel `value`.
    pub fn filled(width: usize, height: usize, value: f32) -> Result<Self, ImageError> {
        let n = pixel_count(width, height)?;
        Self::new(width, height, vec![value; n])
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    pub fn pixels_mut(&mut self) -> &mut [f32] {
        &mut self.pixels
    }

    /// The pixel at (x, y), if inside the image.
    pub fn get(&self, x: usize, y: usize) -> Option<f32> {
        (x < self.width && y < self.height).then(|| self.pixels[y * self.width + x])
    }

    fn same_shape(&self, other: &Image, what: &'static str) -> Result<(), ImageError> {
        if self.width == other.width && self.height == other.height {
            Ok(())
        } else {
            Err(ImageError::ShapeMismatch {
                what,
                a_w: self.width,
                a_h: self.height,
                b_w: other.width,
                b_h: other.height,
            })
        }
    }

    /// Subtracts `other` pixel by pixel.
    pub fn subtract(&mut self, other: &Image) -> Result<(), ImageError> {
        self.same_shape(other, "subtract")?;
        for (p, q) in self.pixels.iter_mut().zip(&other.pixels) {
            *p -= q;
        }
        Ok(())
    }

    /// Divides by a flat field. A flat pixel that is not finite and
    /// positive is refused rather than turned into inf/NaN pixels that
    /// would poison every statistic downstream.
    pub fn divide_by_flat(&mut self, flat: &Image) -> Result<(), ImageError> {
        self.same_shape(flat, "flat division")?;
        if let Some(i) = flat
            .pixels
            .iter()
            .position(|f| !(f.is_finite() && *f > 0.0))
        {
            return Err(ImageError::BadFlat {
                x: i % flat.width,
                y: i / flat.width,
                value: flat.pixels[i],
            });
        }
        for (p, f) in self.pixels.iter_mut().zip(&flat.pixels) {
            *p /= f;
        }
        Ok(())
    }
}

/// Pixels of a `width`×`height` image, refusing empty or overflowing shapes.
fn pixel_count(width: usize, height: usize) -> Result<usize, ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    width
        .checked_mul(height)
        .ok_or(ImageError::TooLarge { width, height })
}

/// One detected source. Positions are in pixels, 0-based, at pixel
/// centres (pixel (3, 4) covers [2.5, 3.5) × [3.5, 4.5)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Source {
    /// Flux-weighted centroid.
    pub x: f64,
    pub y: f64,
    /// Sum of the background-subtracted pixels of the footprint (ADU).
    pub flux: f64,
    /// Brightest background-subtracted pixel of the footprint (ADU).
    pub peak: f64,
    /// Pixels in the footprint (connected pixels above threshold).
    pub npix: i64,
}

/// The sources detected on one image, with the header of the measurement
/// (background, σ, threshold, and the truth carried from the raw).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceCatalog {
    pub sources: Vec<Source>,
    pub header: Header,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        assert_eq!(
            Image::new(0, 3, vec![]),
            Err(ImageError::Empty {
                width: 0,
                height: 3
            })
        );
        assert!(matches!(
            Image::new(2, 2, vec![1.0; 3]),
            Err(ImageError::PixelCount {
                expected: 4,
                actual: 3,
                ..
            })
        ));
        let mut a = Image::filled(2, 2, 5.0).unwrap();
        let b = Image::filled(3, 2, 1.0).unwrap();
        assert!(matches!(
            a.subtract(&b),
            Err(ImageError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn subtract_and_flat_division() {
        let mut a = Image::new(2, 1, vec![10.0, 20.0]).unwrap();
        a.subtract(&Image::new(2, 1, vec![2.0, 4.0]).unwrap())
            .unwrap();
        a.divide_by_flat(&Image::new(2, 1, vec![2.0, 0.5]).unwrap())
            .unwrap();
        assert_eq!(a.pixels(), &[4.0, 32.0]);
        assert_eq!(a.get(1, 0), Some(32.0));
        assert_eq!(a.get(2, 0), None);
        let err = a
            .divide_by_flat(&Image::new(2, 1, vec![1.0, 0.0]).unwrap())
            .unwrap_err();
        assert_eq!(
            err,
            ImageError::BadFlat {
                x: 1,
                y: 0,
                value: 0.0
            }
        );
        // Refused before any pixel changed.
        assert_eq!(a.pixels(), &[4.0, 32.0]);
    }
}
