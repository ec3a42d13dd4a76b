//! Datastore formatters for FITS: [`FitsImageFormatter`]
//! (storage class `ImageF`: an [`Image`] as a 2-d BITPIX −32 primary HDU)
//! and [`FitsCatalogFormatter`] (storage class `SourceCatalog`: a
//! [`SourceCatalog`] as a BINTABLE extension `SOURCES`), both through
//! CFITSIO (`fitsio`).
//!
//! The [`Formatter`] trait works on bytes, and `fitsio`'s safe API only
//! opens paths: CFITSIO's memory files need raw FFI with C-allocated
//! buffers and a realloc callback. Rather than carry that unsafe code, each
//! encode writes a private temporary file and reads its bytes back, and
//! each decode writes the bytes to one and opens it. Images here are a few
//! MB at most, so the extra copy is cheap next to the pixel work.

use std::path::{Path, PathBuf};

use fitsio::errors::Error as FitsioError;
use fitsio::hdu::{FitsHdu, HduInfo};
use fitsio::images::{ImageDescription, ImageType};
use fitsio::tables::{ColumnDataType, ColumnDescription};
use fitsio::FitsFile;
use quanta_datastore::{Formatter, FormatterError, InMemoryDataset, ReadParameters};
use thiserror::Error;

use super::image::{
    BBox, ColumnData, ColumnTable, Header, Image, ImageError, Source, SourceCatalog,
};
use super::wcs::TanWcs;

/// The storage class of [`Image`] datasets.
pub const IMAGE_STORAGE_CLASS: &str = "ImageF";
/// The storage class of [`SourceCatalog`] datasets.
pub const CATALOG_STORAGE_CLASS: &str = "SourceCatalog";
/// The extension name of the catalog's binary table.
pub const CATALOG_EXTNAME: &str = "SOURCES";

/// CFITSIO's status for a keyword that is not in the header.
const KEY_NO_EXIST: i32 = 202;
/// FITS files are whole 2880-byte blocks.
const FITS_BLOCK: usize = 2880;
/// Every FITS file starts with this card.
const FITS_MAGIC: &[u8] = b"SIMPLE  =";
/// The longest string value a single header card holds.
const MAX_STRING_VALUE: usize = 68;

/// What went wrong reading or writing a FITS dataset.
#[derive(Debug, Error)]
pub enum FitsFormatError {
    #[error("temporary FITS file in {dir}: {source}")]
    TempFile {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "temporary directory {0} holds characters CFITSIO reads as filename syntax \
         (`[`, `]`, `(`, `)`); set TMPDIR to a plain path"
    )]
    UnsafeTempPath(PathBuf),
    #[error("CFITSIO, {context}: {source}")]
    Fits {
        context: String,
        #[source]
        source: FitsioError,
    },
    #[error("not a FITS file: {0}")]
    NotFits(String),
    #[error("expected {expected}, found {found}")]
    Layout {
        expected: &'static str,
        found: String,
    },
    #[error("header {key}: {reason}")]
    BadHeaderValue { key: &'static str, reason: String },
    #[error("catalog column {column} has {actual} rows, expected {expected}")]
    RaggedTable {
        column: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("{0}")]
    Parameter(String),
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl From<FitsFormatError> for FormatterError {
    fn from(e: FitsFormatError) -> Self {
        // The datastore's error type carries other crates' errors as text;
        // it adds the file and dataset around it.
        match e {
            FitsFormatError::Parameter(reason) => FormatterError::BadParameter(reason),
            e => FormatterError::Other(e.to_string()),
        }
    }
}

/// Attaches what was being done to a CFITSIO error.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, FitsFormatError>;
}

impl<T> Context<T> for Result<T, FitsioError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, FitsFormatError> {
        self.map_err(|source| FitsFormatError::Fits {
            context: what(),
            source,
        })
    }
}

/// A private directory for one temporary FITS file, removed on drop.
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Result<Self, FitsFormatError> {
        let base = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix("quanta-fits-")
            .tempdir_in(&base)
            .map_err(|source| FitsFormatError::TempFile {
                dir: base.clone(),
                source,
            })?;
        let text = dir.path().to_string_lossy();
        if text.contains(['[', ']', '(', ')']) {
            return Err(FitsFormatError::UnsafeTempPath(dir.path().to_path_buf()));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("dataset.fits")
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, FitsFormatError> {
        std::fs::read(path).map_err(|source| FitsFormatError::TempFile {
            dir: self.dir.path().to_path_buf(),
            source,
        })
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), FitsFormatError> {
        std::fs::write(path, bytes).map_err(|source| FitsFormatError::TempFile {
            dir: self.dir.path().to_path_buf(),
            source,
        })
    }
}

/// Refuses bytes that cannot be a FITS file before CFITSIO sees them, with
/// a clearer message than CFITSIO's.
pub(crate) fn check_fits_bytes(bytes: &[u8]) -> Result<(), FitsFormatError> {
    if !bytes.starts_with(FITS_MAGIC) {
        return Err(FitsFormatError::NotFits(format!(
            "{} bytes not starting with `SIMPLE  =`",
            bytes.len()
        )));
    }
    if !bytes.len().is_multiple_of(FITS_BLOCK) {
        return Err(FitsFormatError::NotFits(format!(
            "{} bytes is not a whole number of 2880-byte blocks (truncated?)",
            bytes.len()
        )));
    }
    Ok(())
}

/// Writes a file with `write`, then returns its bytes. `fitsio` closes files
/// on drop and cannot report a failed close, so the bytes are checked to be
/// a complete FITS file instead.
pub(crate) fn encode_via_file(
    write: impl FnOnce(&Path) -> Result<(), FitsFormatError>,
) -> Result<Vec<u8>, FitsFormatError> {
    let scratch = Scratch::new()?;
    let path = scratch.path();
    write(&path)?;
    let bytes = scratch.read(&path)?;
    check_fits_bytes(&bytes).map_err(|e| FitsFormatError::NotFits(format!("CFITSIO wrote {e}")))?;
    Ok(bytes)
}

/// Writes `bytes` to a temporary file and opens it read-only for `read`.
pub(crate) fn decode_via_file<T>(
    bytes: &[u8],
    read: impl FnOnce(&mut FitsFile) -> Result<T, FitsFormatError>,
) -> Result<T, FitsFormatError> {
    check_fits_bytes(bytes)?;
    let scratch = Scratch::new()?;
    let path = scratch.path();
    scratch.write(&path, bytes)?;
    let mut f = FitsFile::open(&path).context(|| "opening the file".into())?;
    read(&mut f)
}

/// Opens a stored file for reading where it is, so CFITSIO reads only the
/// HDUs and pixels asked for. A path CFITSIO would parse as filename syntax
/// (`[`, `]`, `(`, `)`) is copied to a private temporary file first.
pub(crate) fn open_for_read(path: &Path) -> Result<(Option<Scratch>, FitsFile), FitsFormatError> {
    if path.to_string_lossy().contains(['[', ']', '(', ')']) {
        let bytes = std::fs::read(path).map_err(|source| FitsFormatError::TempFile {
            dir: path.to_path_buf(),
            source,
        })?;
        check_fits_bytes(&bytes)?;
        let scratch = Scratch::new()?;
        let copy = scratch.path();
        scratch.write(&copy, &bytes)?;
        let f = FitsFile::open(&copy).context(|| "opening the file".into())?;
        return Ok((Some(scratch), f));
    }
    let mut head = [0u8; 9];
    let is_fits = std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut head))
        .is_ok()
        && head == *FITS_MAGIC;
    if !is_fits {
        return Err(FitsFormatError::NotFits(format!(
            "{} does not start with `SIMPLE  =`",
            path.display()
        )));
    }
    let f = FitsFile::open(path).context(|| "opening the file".into())?;
    Ok((None, f))
}

/// The (height, width) of a 2-d image HDU.
pub(crate) fn image_shape(
    hdu: &FitsHdu,
    what: &'static str,
) -> Result<(usize, usize), FitsFormatError> {
    match &hdu.info {
        HduInfo::ImageInfo { shape, .. } if shape.len() == 2 => Ok((shape[0], shape[1])),
        other => Err(FitsFormatError::Layout {
            expected: what,
            found: describe(other),
        }),
    }
}

/// The pixels of a 2-d image HDU, all or those of `bbox` (read by CFITSIO
/// from that section of the file only): (width, height, pixels).
pub(crate) fn read_pixels<T: fitsio::images::ReadImage>(
    f: &mut FitsFile,
    hdu: &FitsHdu,
    bbox: Option<&BBox>,
    what: &'static str,
) -> Result<(usize, usize, T), FitsFormatError> {
    let (height, width) = image_shape(hdu, what)?;
    match bbox {
        None => {
            let pixels = hdu.read_image(f).context(|| "reading the pixels".into())?;
            Ok((width, height, pixels))
        }
        Some(b) => {
            b.check_within(width, height)
                .map_err(FitsFormatError::Parameter)?;
            // CFITSIO's first axis is x (NAXIS1, the fastest).
            let pixels = hdu
                .read_region(f, &[&(b.x0..b.x1), &(b.y0..b.y1)])
                .context(|| "reading a section of the pixels".into())?;
            Ok((b.width(), b.height(), pixels))
        }
    }
}

/// `wcs` moved to the pixel grid of a cut-out starting at `bbox`'s corner.
pub(crate) fn shift_wcs(wcs: TanWcs, bbox: &BBox) -> TanWcs {
    TanWcs {
        crpix: (wcs.crpix.0 - bbox.x0 as f64, wcs.crpix.1 - bbox.y0 as f64),
        ..wcs
    }
}

/// The `bbox` read parameter, parsed.
pub(crate) fn bbox_parameter(parameters: &ReadParameters) -> Result<Option<BBox>, FitsFormatError> {
    parameters
        .get("bbox")
        .map(|text| BBox::parse(text).map_err(FitsFormatError::Parameter))
        .transpose()
}

pub(crate) fn read_opt<T: fitsio::headers::ReadsKey>(
    f: &mut FitsFile,
    hdu: &FitsHdu,
    key: &'static str,
) -> Result<Option<T>, FitsFormatError> {
    match hdu.read_key::<T>(f, key) {
        Ok(v) => Ok(Some(v)),
        Err(FitsioError::Fits(e)) if e.status == KEY_NO_EXIST => Ok(None),
        Err(source) => Err(FitsFormatError::Fits {
            context: format!("reading header key {key}"),
            source,
        }),
    }
}

pub(crate) fn read_header(f: &mut FitsFile, hdu: &FitsHdu) -> Result<Header, FitsFormatError> {
    Ok(Header {
        kind: read_opt::<String>(f, hdu, "IMAGETYP")?,
        exposure: read_opt::<i64>(f, hdu, "EXPID")?,
        detector: read_opt::<i64>(f, hdu, "DETECTOR")?,
        injected_sources: read_opt::<i64>(f, hdu, "NINJECT")?,
        background: read_opt::<f64>(f, hdu, "BGMEDIAN")?,
        sigma: read_opt::<f64>(f, hdu, "SKYSIGMA")?,
        threshold: read_opt::<f64>(f, hdu, "DETTHRSH")?,
        visit: read_opt::<i64>(f, hdu, "VISIT")?,
        combined: read_opt::<i64>(f, hdu, "NCOMBINE")?,
        wcs: read_wcs(f, hdu)?,
    })
}

/// The TAN WCS of an HDU, if it has `CTYPE1`; any other projection, or a
/// TAN WCS missing a key, is refused rather than ignored.
pub(crate) fn read_wcs(f: &mut FitsFile, hdu: &FitsHdu) -> Result<Option<TanWcs>, FitsFormatError> {
    let Some(ctype1) = read_opt::<String>(f, hdu, "CTYPE1")? else {
        return Ok(None);
    };
    let ctype2 = read_opt::<String>(f, hdu, "CTYPE2")?.unwrap_or_default();
    if ctype1.trim() != "RA---TAN" || ctype2.trim() != "DEC--TAN" {
        return Err(FitsFormatError::BadHeaderValue {
            key: "CTYPE1",
            reason: format!(
                "only the TAN projection in RA/Dec is supported, got {ctype1:?}/{ctype2:?}"
            ),
        });
    }
    let mut need = |key: &'static str| -> Result<f64, FitsFormatError> {
        read_opt::<f64>(f, hdu, key)?.ok_or(FitsFormatError::BadHeaderValue {
            key,
            reason: "missing from a TAN WCS".into(),
        })
    };
    let crval = (need("CRVAL1")?, need("CRVAL2")?);
    let crpix = (need("CRPIX1")?, need("CRPIX2")?);
    let cd = if read_opt::<f64>(f, hdu, "CD1_1")?.is_some() {
        // Absent CD elements are 0 (FITS WCS paper I).
        let mut cd = [[0.0; 2]; 2];
        for (i, j, key) in [
            (0, 0, "CD1_1"),
            (0, 1, "CD1_2"),
            (1, 0, "CD2_1"),
            (1, 1, "CD2_2"),
        ] {
            cd[i][j] = read_opt::<f64>(f, hdu, key)?.unwrap_or(0.0);
        }
        cd
    } else {
        let mut need = |key: &'static str| -> Result<f64, FitsFormatError> {
            read_opt::<f64>(f, hdu, key)?.ok_or(FitsFormatError::BadHeaderValue {
                key,
                reason: "a TAN WCS needs CD1_1 … CD2_2 or CDELT1/2".into(),
            })
        };
        [[need("CDELT1")?, 0.0], [0.0, need("CDELT2")?]]
    };
    TanWcs::new(crval, crpix, cd)
        .map(Some)
        .map_err(|e| FitsFormatError::BadHeaderValue {
            key: "CRVAL1",
            reason: e.to_string(),
        })
}

fn write_wcs(f: &mut FitsFile, hdu: &FitsHdu, wcs: &TanWcs) -> Result<(), FitsFormatError> {
    let strings = [
        ("CTYPE1", "RA---TAN", "gnomonic projection"),
        ("CTYPE2", "DEC--TAN", "gnomonic projection"),
        ("RADESYS", "ICRS", "reference frame"),
    ];
    for (key, value, comment) in strings {
        hdu.write_key(f, key, (value, comment))
            .context(|| format!("writing header key {key}"))?;
    }
    let floats = [
        ("CRVAL1", wcs.crval.0, "RA of the tangent point [deg]"),
        ("CRVAL2", wcs.crval.1, "Dec of the tangent point [deg]"),
        ("CRPIX1", wcs.crpix.0, "tangent point pixel (1-based)"),
        ("CRPIX2", wcs.crpix.1, "tangent point pixel (1-based)"),
        ("CD1_1", wcs.cd[0][0], "[deg/pixel]"),
        ("CD1_2", wcs.cd[0][1], "[deg/pixel]"),
        ("CD2_1", wcs.cd[1][0], "[deg/pixel]"),
        ("CD2_2", wcs.cd[1][1], "[deg/pixel]"),
    ];
    for (key, value, comment) in floats {
        // TanWcs::new refused non-finite values; a struct literal may not.
        if !value.is_finite() {
            return Err(FitsFormatError::BadHeaderValue {
                key,
                reason: format!("{value} is not finite"),
            });
        }
        hdu.write_key(f, key, (value, comment))
            .context(|| format!("writing header key {key}"))?;
    }
    Ok(())
}

pub(crate) fn write_header(
    f: &mut FitsFile,
    hdu: &FitsHdu,
    h: &Header,
) -> Result<(), FitsFormatError> {
    fn key_err(key: &'static str) -> impl FnOnce() -> String {
        move || format!("writing header key {key}")
    }
    if let Some(kind) = &h.kind {
        // CFITSIO silently truncates long strings; refuse instead.
        if kind.len() > MAX_STRING_VALUE || !kind.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(FitsFormatError::BadHeaderValue {
                key: "IMAGETYP",
                reason: format!("{kind:?} is not printable ASCII of at most 68 characters"),
            });
        }
        hdu.write_key(f, "IMAGETYP", (kind.as_str(), "image type"))
            .context(key_err("IMAGETYP"))?;
    }
    let ints = [
        ("EXPID", h.exposure, "exposure id"),
        ("DETECTOR", h.detector, "detector id"),
        (
            "NINJECT",
            h.injected_sources,
            "point sources injected (truth)",
        ),
        ("VISIT", h.visit, "visit id"),
        ("NCOMBINE", h.combined, "images combined"),
    ];
    for (key, value, comment) in ints {
        if let Some(v) = value {
            hdu.write_key(f, key, (v, comment)).context(key_err(key))?;
        }
    }
    let floats = [
        (
            "BGMEDIAN",
            h.background,
            "median background subtracted [ADU]",
        ),
        ("SKYSIGMA", h.sigma, "robust sky noise sigma [ADU]"),
        ("DETTHRSH", h.threshold, "detection threshold [ADU]"),
    ];
    for (key, value, comment) in floats {
        if let Some(v) = value {
            // FITS has no way to write NaN or inf into a header card.
            if !v.is_finite() {
                return Err(FitsFormatError::BadHeaderValue {
                    key,
                    reason: format!("{v} is not finite"),
                });
            }
            hdu.write_key(f, key, (v, comment)).context(key_err(key))?;
        }
    }
    if let Some(wcs) = &h.wcs {
        write_wcs(f, hdu, wcs)?;
    }
    Ok(())
}

/// Writes [`Image`] datasets as FITS images (storage class `ImageF`).
#[derive(Debug, Default, Clone, Copy)]
pub struct FitsImageFormatter;

impl FitsImageFormatter {
    pub const NAME: &'static str = "FitsImageFormatter";

    pub fn encode_image(image: &Image) -> Result<Vec<u8>, FitsFormatError> {
        encode_via_file(|path| {
            let description = ImageDescription {
                data_type: ImageType::Float,
                dimensions: &[image.height(), image.width()],
            };
            let mut f = FitsFile::create(path)
                .with_custom_primary(&description)
                .open()
                .context(|| "creating the file".into())?;
            let hdu = f.primary_hdu().context(|| "primary HDU".into())?;
            hdu.write_image(&mut f, image.pixels())
                .context(|| "writing the pixels".into())?;
            write_header(&mut f, &hdu, &image.header)
        })
    }

    pub fn decode_image(bytes: &[u8]) -> Result<Image, FitsFormatError> {
        decode_via_file(bytes, |f| Self::read_image(f, None))
    }

    /// The image of an open file, all of it or the pixels of `bbox` (its
    /// WCS then moved to the cut-out's pixel grid).
    pub fn read_image(f: &mut FitsFile, bbox: Option<&BBox>) -> Result<Image, FitsFormatError> {
        let hdu = f.primary_hdu().context(|| "primary HDU".into())?;
        let (width, height, pixels) =
            read_pixels::<Vec<f32>>(f, &hdu, bbox, "a 2-d image in the primary HDU")?;
        let mut image = Image::new(width, height, pixels)?;
        image.header = read_header(f, &hdu)?;
        if let (Some(b), Some(wcs)) = (bbox, image.header.wcs) {
            image.header.wcs = Some(shift_wcs(wcs, b));
        }
        Ok(image)
    }
}

pub(crate) fn describe(info: &HduInfo) -> String {
    match info {
        HduInfo::ImageInfo { shape, .. } => format!("an image of shape {shape:?}"),
        HduInfo::TableInfo { num_rows, .. } => format!("a table of {num_rows} rows"),
        HduInfo::AnyInfo => "an HDU of unknown type".into(),
    }
}

impl Formatter for FitsImageFormatter {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn storage_class(&self) -> &str {
        IMAGE_STORAGE_CLASS
    }
    fn extension(&self) -> &str {
        "fits"
    }
    fn encode(&self, obj: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
        let image = downcast_ref::<Image>(obj, "ImageF (quanta_formats::fits::Image)")?;
        Ok(Self::encode_image(image)?)
    }
    fn decode(&self, bytes: &[u8]) -> Result<InMemoryDataset, FormatterError> {
        Ok(InMemoryDataset::Other(Box::new(Self::decode_image(bytes)?)))
    }
    fn read(
        &self,
        path: &Path,
        component: Option<&str>,
        parameters: &ReadParameters,
    ) -> Result<InMemoryDataset, FormatterError> {
        let bbox = bbox_parameter(parameters)?;
        let (_scratch, mut f) = open_for_read(path)?;
        match component {
            None => Ok(InMemoryDataset::Other(Box::new(Self::read_image(
                &mut f,
                bbox.as_ref(),
            )?))),
            Some("bbox") => {
                let hdu = f.primary_hdu().context(|| "primary HDU".into())?;
                let (height, width) = image_shape(&hdu, "a 2-d image in the primary HDU")?;
                Ok(InMemoryDataset::Json(BBox::of(width, height).to_json()))
            }
            Some(other) => Err(FormatterError::BadParameter(format!(
                "an ImageF has no component `{other}` (components: bbox)"
            ))),
        }
    }
    fn describe(&self, obj: &InMemoryDataset) -> Option<serde_json::Value> {
        super::describe::describe(obj)
    }
}

pub(crate) fn downcast_ref<'a, T: 'static>(
    obj: &'a InMemoryDataset,
    expected: &'static str,
) -> Result<&'a T, FormatterError> {
    match obj {
        InMemoryDataset::Other(b) => b.downcast_ref::<T>().ok_or(FormatterError::WrongType {
            expected,
            got: "Other (of another type)",
        }),
        other => Err(FormatterError::WrongType {
            expected,
            got: other.kind(),
        }),
    }
}

/// The catalog's columns: name, FITS type.
const COLUMNS: [(&str, ColumnDataType); 5] = [
    ("X", ColumnDataType::Double),
    ("Y", ColumnDataType::Double),
    ("FLUX", ColumnDataType::Double),
    ("PEAK", ColumnDataType::Double),
    ("NPIX", ColumnDataType::LongLong),
];

/// Writes [`SourceCatalog`] datasets as a FITS binary table (storage class
/// `SourceCatalog`): an empty primary HDU, then extension `SOURCES` with
/// columns X, Y, FLUX, PEAK (double) and NPIX (64-bit integer), and the
/// measurement's header keys on the table HDU.
#[derive(Debug, Default, Clone, Copy)]
pub struct FitsCatalogFormatter;

impl FitsCatalogFormatter {
    pub const NAME: &'static str = "FitsCatalogFormatter";

    pub fn encode_catalog(catalog: &SourceCatalog) -> Result<Vec<u8>, FitsFormatError> {
        encode_via_file(|path| {
            let mut f = FitsFile::create(path)
                .open()
                .context(|| "creating the file".into())?;
            let mut descriptions = Vec::with_capacity(COLUMNS.len());
            for (name, ty) in COLUMNS {
                descriptions.push(
                    ColumnDescription::new(name)
                        .with_type(ty)
                        .create()
                        .context(|| format!("describing column {name}"))?,
                );
            }
            let hdu = f
                .create_table(CATALOG_EXTNAME, &descriptions)
                .context(|| format!("creating table {CATALOG_EXTNAME}"))?;
            let s = &catalog.sources;
            // CFITSIO refuses a zero-length column write; an empty table is
            // just its header.
            if !s.is_empty() {
                let doubles: [(&str, Vec<f64>); 4] = [
                    ("X", s.iter().map(|r| r.x).collect()),
                    ("Y", s.iter().map(|r| r.y).collect()),
                    ("FLUX", s.iter().map(|r| r.flux).collect()),
                    ("PEAK", s.iter().map(|r| r.peak).collect()),
                ];
                for (name, values) in doubles {
                    hdu.write_col(&mut f, name, &values)
                        .context(|| format!("writing column {name}"))?;
                }
                let npix: Vec<i64> = s.iter().map(|r| r.npix).collect();
                hdu.write_col(&mut f, "NPIX", &npix)
                    .context(|| "writing column NPIX".into())?;
            }
            // Re-fetch the HDU: the row count changed with the writes.
            let hdu = f
                .hdu(CATALOG_EXTNAME)
                .context(|| format!("HDU {CATALOG_EXTNAME}"))?;
            write_header(&mut f, &hdu, &catalog.header)
        })
    }

    pub fn decode_catalog(bytes: &[u8]) -> Result<SourceCatalog, FitsFormatError> {
        decode_via_file(bytes, |f| Self::read_catalog(f, None))
    }

    /// The table HDU and its row count, checking the columns are there.
    fn table(f: &mut FitsFile) -> Result<(FitsHdu, usize), FitsFormatError> {
        let hdu = f
            .hdu(CATALOG_EXTNAME)
            .context(|| format!("finding extension {CATALOG_EXTNAME}"))?;
        let rows = match &hdu.info {
            HduInfo::TableInfo {
                column_descriptions,
                num_rows,
            } => {
                for (name, _) in COLUMNS {
                    if !column_descriptions.iter().any(|c| c.name == name) {
                        return Err(FitsFormatError::Layout {
                            expected: "columns X, Y, FLUX, PEAK, NPIX",
                            found: format!(
                                "columns {:?}",
                                column_descriptions
                                    .iter()
                                    .map(|c| c.name.as_str())
                                    .collect::<Vec<_>>()
                            ),
                        });
                    }
                }
                *num_rows
            }
            other => {
                return Err(FitsFormatError::Layout {
                    expected: "a binary table",
                    found: describe(other),
                })
            }
        };
        Ok((hdu, rows))
    }

    /// One column over `range` (CFITSIO reads only those rows).
    fn column(
        f: &mut FitsFile,
        hdu: &FitsHdu,
        name: &'static str,
        range: &std::ops::Range<usize>,
    ) -> Result<ColumnData, FitsFormatError> {
        let expected = range.len();
        let data = if range.is_empty() {
            match name {
                "NPIX" => ColumnData::I64(Vec::new()),
                _ => ColumnData::F64(Vec::new()),
            }
        } else if name == "NPIX" {
            ColumnData::I64(
                hdu.read_col_range(f, name, range)
                    .context(|| format!("reading column {name}"))?,
            )
        } else {
            ColumnData::F64(
                hdu.read_col_range(f, name, range)
                    .context(|| format!("reading column {name}"))?,
            )
        };
        let actual = match &data {
            ColumnData::F64(v) => v.len(),
            ColumnData::I64(v) => v.len(),
        };
        if actual != expected {
            return Err(FitsFormatError::RaggedTable {
                column: name,
                expected,
                actual,
            });
        }
        Ok(data)
    }

    /// The catalog of an open file, all rows or those of `rows`.
    pub fn read_catalog(
        f: &mut FitsFile,
        rows: Option<std::ops::Range<usize>>,
    ) -> Result<SourceCatalog, FitsFormatError> {
        let (hdu, n) = Self::table(f)?;
        let range = check_rows(rows, n)?;
        let header = read_header(f, &hdu)?;
        let mut cols = Vec::with_capacity(COLUMNS.len());
        for (name, _) in COLUMNS {
            cols.push(Self::column(f, &hdu, name, &range)?);
        }
        let f64s = |c: &ColumnData| match c {
            ColumnData::F64(v) => v.clone(),
            ColumnData::I64(_) => Vec::new(),
        };
        let (x, y, flux, peak) = (
            f64s(&cols[0]),
            f64s(&cols[1]),
            f64s(&cols[2]),
            f64s(&cols[3]),
        );
        let ColumnData::I64(npix) = &cols[4] else {
            unreachable!("NPIX is read as integers");
        };
        let sources = (0..range.len())
            .map(|i| Source {
                x: x[i],
                y: y[i],
                flux: flux[i],
                peak: peak[i],
                npix: npix[i],
            })
            .collect();
        Ok(SourceCatalog { sources, header })
    }

    /// Columns `names` (of X, Y, FLUX, PEAK, NPIX) over `rows`.
    pub fn read_columns(
        f: &mut FitsFile,
        names: &[&str],
        rows: Option<std::ops::Range<usize>>,
    ) -> Result<ColumnTable, FitsFormatError> {
        let (hdu, n) = Self::table(f)?;
        let range = check_rows(rows, n)?;
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let Some((known, _)) = COLUMNS.iter().find(|(c, _)| c == name) else {
                return Err(FitsFormatError::Parameter(format!(
                    "columns: no column `{name}` (columns: X, Y, FLUX, PEAK, NPIX)"
                )));
            };
            columns.push((known.to_string(), Self::column(f, &hdu, known, &range)?));
        }
        Ok(ColumnTable { columns })
    }
}

/// `rows=START:END` (half-open, 0-based).
fn rows_parameter(
    parameters: &ReadParameters,
) -> Result<Option<std::ops::Range<usize>>, FitsFormatError> {
    let Some(text) = parameters.get("rows") else {
        return Ok(None);
    };
    let bad = || {
        FitsFormatError::Parameter(format!(
            "rows `{text}`: expected START:END (half-open, 0-based)"
        ))
    };
    let (a, b) = text.split_once(':').ok_or_else(bad)?;
    let start: usize = a.trim().parse().map_err(|_| bad())?;
    let end: usize = b.trim().parse().map_err(|_| bad())?;
    if start > end {
        return Err(bad());
    }
    Ok(Some(start..end))
}

fn check_rows(
    rows: Option<std::ops::Range<usize>>,
    n: usize,
) -> Result<std::ops::Range<usize>, FitsFormatError> {
    match rows {
        None => Ok(0..n),
        Some(r) if r.end <= n => Ok(r),
        Some(r) => Err(FitsFormatError::Parameter(format!(
            "rows {}:{} reach past the catalog's {n} rows",
            r.start, r.end
        ))),
    }
}

impl Formatter for FitsCatalogFormatter {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn storage_class(&self) -> &str {
        CATALOG_STORAGE_CLASS
    }
    fn extension(&self) -> &str {
        "fits"
    }
    fn encode(&self, obj: &InMemoryDataset) -> Result<Vec<u8>, FormatterError> {
        let catalog = downcast_ref::<SourceCatalog>(
            obj,
            "SourceCatalog (quanta_formats::fits::SourceCatalog)",
        )?;
        Ok(Self::encode_catalog(catalog)?)
    }
    fn decode(&self, bytes: &[u8]) -> Result<InMemoryDataset, FormatterError> {
        Ok(InMemoryDataset::Other(Box::new(Self::decode_catalog(
            bytes,
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
                "a SourceCatalog has no component `{c}`"
            )));
        }
        let rows = rows_parameter(parameters)?;
        let (_scratch, mut f) = open_for_read(path)?;
        match parameters.get("columns") {
            None => Ok(InMemoryDataset::Other(Box::new(Self::read_catalog(
                &mut f, rows,
            )?))),
            Some(list) => {
                let names: Vec<&str> = list.split(',').map(str::trim).collect();
                Ok(InMemoryDataset::Other(Box::new(Self::read_columns(
                    &mut f, &names, rows,
                )?)))
            }
        }
    }
    fn describe(&self, obj: &InMemoryDataset) -> Option<serde_json::Value> {
        super::describe::describe(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            kind: Some("calexp".into()),
            exposure: Some(3),
            detector: Some(7),
            injected_sources: Some(12),
            background: Some(201.25),
            sigma: Some(14.5),
            threshold: Some(72.5),
            visit: Some(11),
            combined: Some(4),
            wcs: Some(
                TanWcs::new(
                    (359.875, -1.25),
                    (64.5, 32.25),
                    [[-5.5e-4, 1.25e-5], [1.5e-5, 5.5e-4]],
                )
                .unwrap(),
            ),
        }
    }

    #[test]
    fn image_round_trips_pixels_shape_and_header() {
        let (w, h) = (7, 5);
        let pixels: Vec<f32> = (0..w * h).map(|i| i as f32 * 1.5 - 10.0).collect();
        let mut image = Image::new(w, h, pixels).unwrap();
        image.header = header();
        let bytes = FitsImageFormatter
            .encode(&InMemoryDataset::Other(Box::new(image.clone())))
            .unwrap();
        assert!(bytes.starts_with(FITS_MAGIC));
        assert_eq!(bytes.len() % FITS_BLOCK, 0);
        let back = FitsImageFormatter
            .decode(&bytes)
            .unwrap()
            .downcast::<Image>()
            .unwrap();
        assert_eq!(*back, image);
        // Row-major with x fastest: pixel (x=6, y=0) is the 7th value.
        assert_eq!(back.get(6, 0), Some(6.0 * 1.5 - 10.0));
        assert_eq!(back.get(0, 1), Some(7.0 * 1.5 - 10.0));

        // Absent header keys stay absent.
        let bare = Image::filled(2, 3, 1.0).unwrap();
        let back =
            FitsImageFormatter::decode_image(&FitsImageFormatter::encode_image(&bare).unwrap())
                .unwrap();
        assert_eq!(back, bare);
    }

    #[test]
    fn catalog_round_trips_rows_and_header_including_empty() {
        let catalog = SourceCatalog {
            sources: vec![
                Source {
                    x: 10.25,
                    y: 20.5,
                    flux: 5000.125,
                    peak: 350.0,
                    npix: 21,
                },
                Source {
                    x: 100.0,
                    y: 3.75,
                    flux: 1e6,
                    peak: 1e4,
                    npix: 400,
                },
            ],
            header: header(),
        };
        let bytes = FitsCatalogFormatter
            .encode(&InMemoryDataset::Other(Box::new(catalog.clone())))
            .unwrap();
        assert!(bytes.starts_with(FITS_MAGIC));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("XTENSION= 'BINTABLE'"), "no BINTABLE header");
        let back = FitsCatalogFormatter
            .decode(&bytes)
            .unwrap()
            .downcast::<SourceCatalog>()
            .unwrap();
        assert_eq!(*back, catalog);

        let empty = SourceCatalog {
            sources: vec![],
            header: Header {
                sigma: Some(3.0),
                ..Header::default()
            },
        };
        let back = FitsCatalogFormatter::decode_catalog(
            &FitsCatalogFormatter::encode_catalog(&empty).unwrap(),
        )
        .unwrap();
        assert_eq!(back, empty);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let err = FitsImageFormatter
            .decode(b"{\"not\": \"fits\"}")
            .unwrap_err();
        assert!(err.to_string().contains("not a FITS file"), "{err}");
        let image_bytes =
            FitsImageFormatter::encode_image(&Image::filled(4, 4, 0.0).unwrap()).unwrap();
        // Truncated.
        let err = FitsImageFormatter
            .decode(&image_bytes[..image_bytes.len() - 100])
            .unwrap_err();
        assert!(err.to_string().contains("2880-byte"), "{err}");
        // An image is not a catalog, and a catalog not an image.
        let err = FitsCatalogFormatter::decode_catalog(&image_bytes).unwrap_err();
        assert!(err.to_string().contains(CATALOG_EXTNAME), "{err}");
        let cat_bytes = FitsCatalogFormatter::encode_catalog(&SourceCatalog::default()).unwrap();
        let err = FitsImageFormatter::decode_image(&cat_bytes).unwrap_err();
        assert!(
            matches!(err, FitsFormatError::Layout { .. }),
            "{err}: an empty primary HDU is not a 2-d image"
        );
        // Wrong in-memory types.
        assert!(matches!(
            FitsImageFormatter.encode(&InMemoryDataset::Json(serde_json::json!(1))),
            Err(FormatterError::WrongType { got: "Json", .. })
        ));
        assert!(matches!(
            FitsCatalogFormatter.encode(&InMemoryDataset::Other(Box::new(
                Image::filled(1, 1, 0.0).unwrap()
            ))),
            Err(FormatterError::WrongType { .. })
        ));
        // Values FITS cannot hold are refused, not silently mangled.
        let mut image = Image::filled(1, 1, 0.0).unwrap();
        image.header.background = Some(f64::NAN);
        assert!(matches!(
            FitsImageFormatter::encode_image(&image),
            Err(FitsFormatError::BadHeaderValue {
                key: "BGMEDIAN",
                ..
            })
        ));
        // A projection other than TAN is refused, not silently misread.
        let mut tan = Image::filled(2, 2, 0.0).unwrap();
        tan.header.wcs = header().wcs;
        let mut bytes = FitsImageFormatter::encode_image(&tan).unwrap();
        let at = bytes.windows(8).position(|w| w == b"RA---TAN").unwrap();
        bytes[at..at + 8].copy_from_slice(b"RA---SIN");
        assert!(matches!(
            FitsImageFormatter::decode_image(&bytes),
            Err(FitsFormatError::BadHeaderValue { key: "CTYPE1", .. })
        ));
        image.header.background = None;
        image.header.kind = Some("x".repeat(69));
        assert!(FitsImageFormatter::encode_image(&image).is_err());
    }
}
