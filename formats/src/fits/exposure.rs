//! The composite `ExposureF` as one FITS file ([`FitsExposureFormatter`]),
//! and the formatters of its components when they are files of their own
//! (a disassembled exposure, or `quanta get calexp.mask --output`):
//! [`FitsMaskFormatter`] (`MaskX`), [`WcsJsonFormatter`] (`Wcs`) and
//! [`PropertyListJsonFormatter`] (`PropertyList`). `ImageF` parts are
//! [`super::FitsImageFormatter`]'s.
//!
//! File layout: the primary HDU has no data; its header carries the
//! metadata keys and the TAN WCS cards, so the `wcs` and `metadata`
//! components are read from the first header blocks alone. Then three image
//! extensions: `IMAGE` (BITPIX −32), `MASK` (BITPIX 32) and `VARIANCE`
//! (BITPIX −32). A component read opens only its HDU; a `bbox` read asks
//! CFITSIO for that section of each plane.

use std::path::Path;

use fitsio::images::{ImageDescription, ImageType};
use fitsio::FitsFile;
use quanta_core::storage_class::{EXPOSURE_F, MASK_X, PROPERTY_LIST, WCS};
use quanta_datastore::{Formatter, FormatterError, InMemoryDataset, ReadParameters};

use super::describe::{header_from_json, header_to_json, wcs_from_json, wcs_to_json};
use super::formatter::{
    bbox_parameter, decode_via_file, downcast_ref, encode_via_file, image_shape, open_for_read,
    read_header, read_pixels, read_wcs, shift_wcs, write_header, Context, FitsFormatError,
};
use super::image::{BBox, Exposure, Header, Image, Mask};
use super::wcs::TanWcs;

/// The extension names of the planes, in file order.
pub const PLANES: [&str; 3] = ["IMAGE", "MASK", "VARIANCE"];

/// Writes [`Exposure`] datasets (storage class `ExposureF`) as one FITS file.
#[derive(Debug, Default, Clone, Copy)]
pub struct FitsExposureFormatter;

impl FitsExposureFormatter {
    pub const NAME: &'static str = "FitsExposureFormatter";

    pub fn encode_exposure(e: &Exposure) -> Result<Vec<u8>, FitsFormatError> {
        encode_via_file(|path| {
            let mut f = FitsFile::create(path)
                .open()
                .context(|| "creating the file".into())?;
            let primary = f.primary_hdu().context(|| "primary HDU".into())?;
            let header = Header {
                wcs: e.wcs,
                ..e.metadata.clone()
            };
            write_header(&mut f, &primary, &header)?;
            let (w, h) = (e.image.width(), e.image.height());
            let float = ImageDescription {
                data_type: ImageType::Float,
                dimensions: &[h, w],
            };
            let int = ImageDescription {
                data_type: ImageType::Long,
                dimensions: &[h, w],
            };
            let hdu = f
                .create_image(PLANES[0], &float)
                .context(|| "creating the IMAGE extension".into())?;
            hdu.write_image(&mut f, e.image.pixels())
                .context(|| "writing the image plane".into())?;
            let hdu = f
                .create_image(PLANES[1], &int)
                .context(|| "creating the MASK extension".into())?;
            hdu.write_image(&mut f, e.mask.bits())
                .context(|| "writing the mask plane".into())?;
            let hdu = f
                .create_image(PLANES[2], &float)
                .context(|| "creating the VARIANCE extension".into())?;
            hdu.write_image(&mut f, e.variance.pixels())
                .context(|| "writing the variance plane".into())?;
            Ok(())
        })
    }

    pub fn decode_exposure(bytes: &[u8]) -> Result<Exposure, FitsFormatError> {
        decode_via_file(bytes, |f| Self::read_exposure(f, None))
    }

    fn plane(f: &mut FitsFile, name: &str, bbox: Option<&BBox>) -> Result<Image, FitsFormatError> {
        let hdu = f
            .hdu(name)
            .context(|| format!("finding extension {name}"))?;
        let (w, h, pixels) = read_pixels::<Vec<f32>>(f, &hdu, bbox, "a 2-d image extension")?;
        Ok(Image::new(w, h, pixels)?)
    }

    fn mask(f: &mut FitsFile, bbox: Option<&BBox>) -> Result<Mask, FitsFormatError> {
        let hdu = f
            .hdu(PLANES[1])
            .context(|| "finding extension MASK".into())?;
        let (w, h, bits) = read_pixels::<Vec<i32>>(f, &hdu, bbox, "a 2-d mask extension")?;
        Ok(Mask::new(w, h, bits)?)
    }

    /// The primary header: metadata (without WCS) and the WCS, moved to
    /// `bbox`'s grid when given.
    fn primary(
        f: &mut FitsFile,
        bbox: Option<&BBox>,
    ) -> Result<(Header, Option<TanWcs>), FitsFormatError> {
        let hdu = f.primary_hdu().context(|| "primary HDU".into())?;
        let mut metadata = read_header(f, &hdu)?;
        let wcs = read_wcs(f, &hdu)?.map(|w| match bbox {
            Some(b) => shift_wcs(w, b),
            None => w,
        });
        metadata.wcs = None;
        Ok((metadata, wcs))
    }

    /// The whole exposure of an open file, or its `bbox` section.
    pub fn read_exposure(
        f: &mut FitsFile,
        bbox: Option<&BBox>,
    ) -> Result<Exposure, FitsFormatError> {
        let (metadata, wcs) = Self::primary(f, bbox)?;
        let image = Self::plane(f, PLANES[0], bbox)?;
        let mask = Self::mask(f, bbox)?;
        let variance = Self::plane(f, PLANES[2], bbox)?;
        Ok(Exposure::new(image, mask, variance, wcs, metadata)?)
    }

    /// One component of an open file (`bbox` applies to the planes and
    /// moves the WCS).
    pub fn read_component(
        f: &mut FitsFile,
        component: &str,
        bbox: Option<&BBox>,
    ) -> Result<InMemoryDataset, FitsFormatError> {
        let boxed = |v: Box<dyn std::any::Any + Send + Sync>| InMemoryDataset::Other(v);
        Ok(match component {
            "image" => boxed(Box::new(Self::plane(f, PLANES[0], bbox)?)),
            "variance" => boxed(Box::new(Self::plane(f, PLANES[2], bbox)?)),
            "mask" => boxed(Box::new(Self::mask(f, bbox)?)),
            "wcs" => match Self::primary(f, bbox)?.1 {
                Some(w) => boxed(Box::new(w)),
                None => {
                    return Err(FitsFormatError::Parameter(
                        "the exposure has no WCS (no CTYPE1 in its primary header)".into(),
                    ))
                }
            },
            "metadata" => boxed(Box::new(Self::primary(f, bbox)?.0)),
            "bbox" => {
                let hdu = f.hdu(PLANES[0]).context(|| "finding extension IMAGE".into())?;
                let (h, w) = image_shape(&hdu, "a 2-d image extension")?;
                InMemoryDataset::Json(BBox::of(w, h).to_json())
            }
            other => {
                return Err(FitsFormatError::Parameter(format!(
                    "an ExposureF has no component `{other}` (components: image, mask, variance, wcs, metadata, bbox)"
                )))
            }
        })
    }

    /// The stored components of `e`, as the datasets of their storage
    /// classes (what a disassembled exposure writes, one file each).
    pub fn components(e: &Exposure) -> Vec<(&'static str, InMemoryDataset)> {
        let other = |v: Box<dyn std::any::Any + Send + Sync>| InMemoryDataset::Other(v);
        let mut parts = vec![
            ("image", other(Box::new(e.image.clone()))),
            ("mask", other(Box::new(e.mask.clone()))),
            ("variance", other(Box::new(e.variance.clone()))),
            ("metadata", other(Box::new(e.metadata.clone()))),
        ];
        if let Some(w) = e.wcs {
            parts.push(("wcs", other(Box::new(w))));
        }
        parts
    }

    /// The exposure of its components (the inverse of
    /// [`FitsExposureFormatter::components`]; `wcs` may be absent).
    pub fn assemble_parts(
        mut parts: Vec<(String, InMemoryDataset)>,
    ) -> Result<Exposure, FitsFormatError> {
        let mut take = |name: &str| {
            parts
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| parts.swap_remove(i).1)
        };
        let missing = |name: &str| {
            FitsFormatError::Parameter(format!("exposure component `{name}` is missing"))
        };
        let wrong = |name: &str| {
            FitsFormatError::Parameter(format!("exposure component `{name}` has the wrong type"))
        };
        let image = take("image")
            .ok_or_else(|| missing("image"))?
            .downcast::<Image>()
            .ok_or_else(|| wrong("image"))?;
        let mask = take("mask")
            .ok_or_else(|| missing("mask"))?
            .downcast::<Mask>()
            .ok_or_else(|| wrong("mask"))?;
        let variance = take("variance")
            .ok_or_else(|| missing("variance"))?
            .downcast::<Image>()
            .ok_or_else(|| wrong("variance"))?;
        let metadata = take("metadata")
            .ok_or_else(|| missing("metadata"))?
            .downcast::<Header>()
            .ok_or_else(|| wrong("metadata"))?;
        let wcs = match take("wcs") {
            Some(w) => Some(*w.downcast::<TanWcs>().ok_or_else(|| wrong("wcs"))?),
            None => None,
        };
        Ok(Exposure::new(*image, *mask, *variance, wcs, *metadata)?)
    }
}

impl Formatter for FitsExposureFormatter {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn storage_class(&self) -> &str {
        EXPOSURE_F
    }
    fn extension(&self) -> &str {
        "fits"
    }
    fn encode(&self, obj: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
        let e = downcast_ref::<Exposure>(obj, "ExposureF (quanta_formats::fits::Exposure)")?;
        Ok(Self::encode_exposure(e)?)
    }
    fn decode(&self, bytes: &[u8]) -> Result<InMemoryDataset, FormatterError> {
        Ok(InMemoryDataset::Other(Box::new(Self::decode_exposure(
            bytes,
        )?)))
    }
    fn read(
        &self,
        path: &Path,
        component: Option<&str>,
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, FormatterError> {
        let bbox = bbox_parameter(parameters)?;
        let (_scratch, mut f) = open_for_read(path)?;
        Ok(match component {
            None => InMemoryDataset::Other(Box::new(Self::read_exposure(&mut f, bbox.as_ref())?)),
            Some(c) => Self::read_component(&mut f, c, bbox.as_ref())?,
        })
    }
    fn describe(&self, obj: &InMemoryDataset) -> Option<serde_json::Value> {
        super::describe::describe(obj)
    }
    fn disassembles(&self) -> bool {
        true
    }
    fn disassemble(
        &self,
        obj: &InMemoryDataset,
    ) -> Result<Vec<(String, InMemoryDataset)>, FormatterError> {
        let e = downcast_ref::<Exposure>(obj, "ExposureF (quanta_formats::fits::Exposure)")?;
        Ok(Self::components(e)
            .into_iter()
            .map(|(name, v)| (name.to_string(), v))
            .collect())
    }
    fn assemble(
        &self,
        parts: Vec<(String, InMemoryDataset)>,
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, FormatterError> {
        // The planes arrive cut to `bbox` already; the WCS follows them.
        let bbox = bbox_parameter(parameters)?;
        let mut e = Self::assemble_parts(parts)?;
        if let (Some(b), Some(w)) = (bbox, e.wcs) {
            e.wcs = Some(shift_wcs(w, &b));
        }
        Ok(InMemoryDataset::Other(Box::new(e)))
    }
}

/// Writes [`Mask`] datasets (storage class `MaskX`) as a FITS BITPIX 32
/// primary image.
#[derive(Debug, Default, Clone, Copy)]
pub struct FitsMaskFormatter;

impl FitsMaskFormatter {
    pub const NAME: &'static str = "FitsMaskFormatter";

    fn read_mask(f: &mut FitsFile, bbox: Option<&BBox>) -> Result<Mask, FitsFormatError> {
        let hdu = f.primary_hdu().context(|| "primary HDU".into())?;
        let (w, h, bits) = read_pixels::<Vec<i32>>(f, &hdu, bbox, "a 2-d mask in the primary HDU")?;
        Ok(Mask::new(w, h, bits)?)
    }
}

impl Formatter for FitsMaskFormatter {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn storage_class(&self) -> &str {
        MASK_X
    }
    fn extension(&self) -> &str {
        "fits"
    }
    fn encode(&self, obj: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
        let m = downcast_ref::<Mask>(obj, "MaskX (quanta_formats::fits::Mask)")?;
        Ok(encode_via_file(|path| {
            let description = ImageDescription {
                data_type: ImageType::Long,
                dimensions: &[m.height(), m.width()],
            };
            let mut f = FitsFile::create(path)
                .with_custom_primary(&description)
                .open()
                .context(|| "creating the file".into())?;
            let hdu = f.primary_hdu().context(|| "primary HDU".into())?;
            hdu.write_image(&mut f, m.bits())
                .context(|| "writing the mask".into())
        })?)
    }
    fn decode(&self, bytes: &[u8]) -> Result<InMemoryDataset, FormatterError> {
        Ok(InMemoryDataset::Other(Box::new(decode_via_file(
            bytes,
            |f| Self::read_mask(f, None),
        )?)))
    }
    fn read(
        &self,
        path: &Path,
        component: Option<&str>,
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, FormatterError> {
        if let Some(c) = component {
            return Err(FormatterError::BadParameter(format!(
                "a MaskX has no component `{c}`"
            )));
        }
        let bbox = bbox_parameter(parameters)?;
        let (_scratch, mut f) = open_for_read(path)?;
        Ok(InMemoryDataset::Other(Box::new(Self::read_mask(
            &mut f,
            bbox.as_ref(),
        )?)))
    }
    fn describe(&self, obj: &InMemoryDataset) -> Option<serde_json::Value> {
        super::describe::describe(obj)
    }
}

/// Writes [`TanWcs`] datasets (storage class `Wcs`) as JSON
/// ([`super::describe::wcs_to_json`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct WcsJsonFormatter;

impl WcsJsonFormatter {
    pub const NAME: &'static str = "WcsJsonFormatter";
}

impl Formatter for WcsJsonFormatter {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn storage_class(&self) -> &str {
        WCS
    }
    fn extension(&self) -> &str {
        "json"
    }
    fn encode(&self, obj: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
        let w = downcast_ref::<TanWcs>(obj, "Wcs (quanta_formats::fits::TanWcs)")?;
        Ok(serde_json::to_vec(&wcs_to_json(w))?)
    }
    fn decode(&self, bytes: &[u8]) -> Result<InMemoryDataset, FormatterError> {
        let v: serde_json::Value = serde_json::from_slice(bytes)?;
        Ok(InMemoryDataset::Other(Box::new(
            wcs_from_json(&v).map_err(FormatterError::Other)?,
        )))
    }
    fn describe(&self, obj: &InMemoryDataset) -> Option<serde_json::Value> {
        super::describe::describe(obj)
    }
}

/// Writes [`Header`] datasets (storage class `PropertyList`) as a JSON
/// object of FITS keys ([`super::describe::header_to_json`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct PropertyListJsonFormatter;

impl PropertyListJsonFormatter {
    pub const NAME: &'static str = "PropertyListJsonFormatter";
}

impl Formatter for PropertyListJsonFormatter {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn storage_class(&self) -> &str {
        PROPERTY_LIST
    }
    fn extension(&self) -> &str {
        "json"
    }
    fn encode(&self, obj: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
        let h = downcast_ref::<Header>(obj, "PropertyList (quanta_formats::fits::Header)")?;
        Ok(serde_json::to_vec(&header_to_json(h))?)
    }
    fn decode(&self, bytes: &[u8]) -> Result<InMemoryDataset, FormatterError> {
        let v: serde_json::Value = serde_json::from_slice(bytes)?;
        Ok(InMemoryDataset::Other(Box::new(
            header_from_json(&v).map_err(FormatterError::Other)?,
        )))
    }
    fn describe(&self, obj: &InMemoryDataset) -> Option<serde_json::Value> {
        super::describe::describe(obj)
    }
}
