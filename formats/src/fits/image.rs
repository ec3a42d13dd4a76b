//! The in-memory types of the FITS formats: [`Image`] (f32 pixels),
//! [`Mask`] (i32 bit planes), [`Exposure`] (image, mask, variance, WCS and
//! metadata: the composite `ExposureF`), [`SourceCatalog`] and the column
//! subset a `columns` read returns ([`ColumnTable`]), the [`Header`] keys
//! they carry, and the [`BBox`] of the `bbox` read parameter.

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

/// A pixel box: columns `x0..x1`, rows `y0..y1` (half-open, 0-based), as
/// the `bbox` read parameter gives it (`bbox=x0,y0,x1,y1`) and the derived
/// `bbox` component returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BBox {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl BBox {
    /// The whole of a `width`×`height` image.
    pub fn of(width: usize, height: usize) -> Self {
        Self {
            x0: 0,
            y0: 0,
            x1: width,
            y1: height,
        }
    }

    /// Parses `x0,y0,x1,y1` (pixels, half-open: `0,0,100,100` is the
    /// first 100×100 pixels).
    pub fn parse(text: &str) -> Result<Self, String> {
        let nums: Vec<usize> = text
            .split(',')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                format!("bbox `{text}`: expected x0,y0,x1,y1 (non-negative pixel numbers)")
            })?;
        let [x0, y0, x1, y1] = nums[..] else {
            return Err(format!(
                "bbox `{text}`: expected 4 numbers x0,y0,x1,y1, got {}",
                nums.len()
            ));
        };
        if x0 >= x1 || y0 >= y1 {
            return Err(format!(
                "bbox `{text}`: empty box (need x0 < x1 and y0 < y1; x1, y1 are exclusive)"
            ));
        }
        Ok(Self { x0, y0, x1, y1 })
    }

    /// Refuses a box that does not fit a `width`×`height` image.
    pub fn check_within(&self, width: usize, height: usize) -> Result<(), String> {
        if self.x1 > width || self.y1 > height {
            return Err(format!(
                "bbox {},{},{},{} reaches outside the {width}×{height} image",
                self.x0, self.y0, self.x1, self.y1
            ));
        }
        Ok(())
    }

    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }

    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }

    /// As JSON: `{"x0": …, "y0": …, "x1": …, "y1": …}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1})
    }
}

impl Image {
    /// The pixels of `bbox` as a new image (same header). The box must fit.
    pub fn cutout(&self, bbox: &BBox) -> Result<Image, String> {
        bbox.check_within(self.width, self.height)?;
        let mut pixels = Vec::with_capacity(bbox.width() * bbox.height());
        for y in bbox.y0..bbox.y1 {
            pixels.extend_from_slice(
                &self.pixels[y * self.width + bbox.x0..y * self.width + bbox.x1],
            );
        }
        let mut out = Image::new(bbox.width(), bbox.height(), pixels).map_err(|e| e.to_string())?;
        out.header = self.header.clone();
        Ok(out)
    }
}

/// An integer mask plane (bits per pixel), row-major like [`Image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    width: usize,
    height: usize,
    bits: Vec<i32>,
}

impl Mask {
    pub fn new(width: usize, height: usize, bits: Vec<i32>) -> Result<Self, ImageError> {
        let expected = pixel_count(width, height)?;
        if bits.len() != expected {
            return Err(ImageError::PixelCount {
                width,
                height,
                expected,
                actual: bits.len(),
            });
        }
        Ok(Self {
            width,
            height,
            bits,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn bits(&self) -> &[i32] {
        &self.bits
    }
}

/// An exposure (storage class `ExposureF`): image, mask and variance planes
/// of one shape, the WCS, and the metadata (header keys). The planes' own
/// `header`s are not stored; the exposure's metadata is.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    pub image: Image,
    pub mask: Mask,
    pub variance: Image,
    pub wcs: Option<TanWcs>,
    /// Header keys; its `wcs` field is unused (the WCS is [`Exposure::wcs`]).
    pub metadata: Header,
}

impl Exposure {
    /// An exposure from its parts; refuses planes of different shapes.
    pub fn new(
        image: Image,
        mask: Mask,
        variance: Image,
        wcs: Option<TanWcs>,
        metadata: Header,
    ) -> Result<Self, ImageError> {
        image.same_shape(&variance, "variance plane")?;
        if (mask.width, mask.height) != (image.width, image.height) {
            return Err(ImageError::ShapeMismatch {
                what: "mask plane",
                a_w: image.width,
                a_h: image.height,
                b_w: mask.width,
                b_h: mask.height,
            });
        }
        Ok(Self {
            image,
            mask,
            variance,
            wcs,
            metadata,
        })
    }
}

/// Some columns of a catalog (what a `columns` read returns), in the order
/// asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnTable {
    pub columns: Vec<(String, ColumnData)>,
}

/// The values of one catalog column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    F64(Vec<f64>),
    I64(Vec<i64>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_parses_and_cuts() {
        assert_eq!(
            BBox::parse("1, 2,5,7").unwrap(),
            BBox {
                x0: 1,
                y0: 2,
                x1: 5,
                y1: 7
            }
        );
        for bad in ["1,2,3", "a,b,c,d", "5,0,5,3", "-1,0,2,2", "0,0,2,2,2"] {
            assert!(BBox::parse(bad).is_err(), "{bad}");
        }
        let image = Image::new(4, 3, (0..12).map(|i| i as f32).collect()).unwrap();
        let cut = image.cutout(&BBox::parse("1,1,3,3").unwrap()).unwrap();
        assert_eq!(cut.pixels(), &[5.0, 6.0, 9.0, 10.0]);
        assert!(image.cutout(&BBox::parse("0,0,5,1").unwrap()).is_err());
    }

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
