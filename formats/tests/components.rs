//! Component reads and read parameters of the FITS formatters, on real
//! files: each component of an `ExposureF` equals that part of the full
//! read; a `bbox` read equals the slice of the full planes (its WCS moved
//! to the cut-out); `columns`/`rows` of a catalog equal those of the full
//! catalog; bad requests are typed errors naming what is wrong.

use std::path::{Path, PathBuf};

use quanta_datastore::{Formatter, FormatterError, InMemoryDataset, ReadParameters};
use quanta_formats::fits::{
    BBox, ColumnData, ColumnTable, Exposure, FitsCatalogFormatter, FitsExposureFormatter,
    FitsImageFormatter, Header, Image, Mask, Source, SourceCatalog, TanWcs,
};

const W: usize = 37;
const H: usize = 23;

fn wcs() -> TanWcs {
    TanWcs::new((150.25, 2.5), (18.5, 11.0), [[-5e-5, 1e-6], [2e-6, 5e-5]]).unwrap()
}

fn exposure() -> Exposure {
    let image = Image::new(W, H, (0..W * H).map(|i| i as f32 * 0.5 - 3.0).collect()).unwrap();
    let mask = Mask::new(W, H, (0..W * H).map(|i| (i % 7) as i32).collect()).unwrap();
    let variance = Image::new(W, H, (0..W * H).map(|i| 1.0 + i as f32 / 100.0).collect()).unwrap();
    let metadata = Header {
        kind: Some("calexp".into()),
        exposure: Some(4),
        detector: Some(2),
        sigma: Some(12.5),
        ..Header::default()
    };
    Exposure::new(image, mask, variance, Some(wcs()), metadata).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn read(
    f: &dyn Formatter,
    path: &Path,
    component: Option<&str>,
    params: &[&str],
) -> Result<InMemoryDataset, FormatterError> {
    f.read(
        path,
        component,
        &ReadParameters::parse(params.iter().copied()).unwrap(),
    )
}

fn mask_cutout(m: &Mask, b: &BBox) -> Mask {
    let mut bits = Vec::new();
    for y in b.y0..b.y1 {
        bits.extend_from_slice(&m.bits()[y * m.width() + b.x0..y * m.width() + b.x1]);
    }
    Mask::new(b.width(), b.height(), bits).unwrap()
}

#[test]
fn exposure_components_are_exactly_the_parts_of_the_full_read() {
    let dir = tempfile::tempdir().unwrap();
    let e = exposure();
    let bytes = FitsExposureFormatter::encode_exposure(&e).unwrap();
    let path = write(dir.path(), "calexp.fits", &bytes);
    let f = FitsExposureFormatter;
    let full = read(&f, &path, None, &[])
        .unwrap()
        .downcast::<Exposure>()
        .unwrap();
    assert_eq!(*full, e);
    // The bytes decode the same way.
    assert_eq!(FitsExposureFormatter::decode_exposure(&bytes).unwrap(), e);

    let image = read(&f, &path, Some("image"), &[])
        .unwrap()
        .downcast::<Image>()
        .unwrap();
    assert_eq!(*image, full.image);
    let variance = read(&f, &path, Some("variance"), &[])
        .unwrap()
        .downcast::<Image>()
        .unwrap();
    assert_eq!(*variance, full.variance);
    let mask = read(&f, &path, Some("mask"), &[])
        .unwrap()
        .downcast::<Mask>()
        .unwrap();
    assert_eq!(*mask, full.mask);
    let w = read(&f, &path, Some("wcs"), &[])
        .unwrap()
        .downcast::<TanWcs>()
        .unwrap();
    assert_eq!(Some(*w), full.wcs);
    let metadata = read(&f, &path, Some("metadata"), &[])
        .unwrap()
        .downcast::<Header>()
        .unwrap();
    assert_eq!(*metadata, full.metadata);
    let bbox = read(&f, &path, Some("bbox"), &[])
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(bbox, BBox::of(W, H).to_json());

    let err = read(&f, &path, Some("psf"), &[]).unwrap_err();
    assert!(matches!(err, FormatterError::BadParameter(_)), "{err}");
    assert!(err.to_string().contains("no component `psf`"), "{err}");
}

#[test]
fn bbox_reads_equal_the_slice_of_the_full_planes() {
    let dir = tempfile::tempdir().unwrap();
    let e = exposure();
    let path = write(
        dir.path(),
        "calexp.fits",
        &FitsExposureFormatter::encode_exposure(&e).unwrap(),
    );
    let f = FitsExposureFormatter;
    // Not square, not at the origin, touching the right edge.
    let b = BBox::parse("5,3,37,11").unwrap();
    let cut = read(&f, &path, None, &["bbox=5,3,37,11"])
        .unwrap()
        .downcast::<Exposure>()
        .unwrap();
    assert_eq!(cut.image, e.image.cutout(&b).unwrap());
    assert_eq!(cut.variance, e.variance.cutout(&b).unwrap());
    assert_eq!(cut.mask, mask_cutout(&e.mask, &b));
    assert_eq!(cut.metadata, e.metadata);
    // The WCS follows the pixels: the cut-out's (0, 0) is the full (5, 3).
    let w = cut.wcs.unwrap();
    assert_eq!(w.crpix, (wcs().crpix.0 - 5.0, wcs().crpix.1 - 3.0));
    assert_eq!((w.crval, w.cd), (wcs().crval, wcs().cd));

    let image = read(&f, &path, Some("image"), &["bbox=5,3,37,11"])
        .unwrap()
        .downcast::<Image>()
        .unwrap();
    assert_eq!(*image, e.image.cutout(&b).unwrap());

    // A plain ImageF file cuts the same way, its header WCS moved too.
    let mut plain = e.image.clone();
    plain.header.wcs = Some(wcs());
    let ipath = write(
        dir.path(),
        "image.fits",
        &FitsImageFormatter::encode_image(&plain).unwrap(),
    );
    let icut = read(&FitsImageFormatter, &ipath, None, &["bbox=0,10,1,23"])
        .unwrap()
        .downcast::<Image>()
        .unwrap();
    let b2 = BBox::parse("0,10,1,23").unwrap();
    assert_eq!(icut.pixels(), plain.cutout(&b2).unwrap().pixels());
    assert_eq!(icut.header.wcs.unwrap().crpix.1, wcs().crpix.1 - 10.0);

    for (bad, says) in [
        ("bbox=0,0,38,5", "outside"),
        ("bbox=3,3,3,4", "empty box"),
        ("bbox=1,2,3", "4 numbers"),
    ] {
        let err = read(&f, &path, None, &[bad]).unwrap_err();
        assert!(
            matches!(err, FormatterError::BadParameter(_)),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
}

#[test]
fn catalog_columns_and_rows_read_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = SourceCatalog {
        sources: (0..10)
            .map(|i| Source {
                x: i as f64,
                y: 2.0 * i as f64,
                flux: 100.0 + i as f64,
                peak: 10.0,
                npix: i,
            })
            .collect(),
        header: Header {
            sigma: Some(3.0),
            ..Header::default()
        },
    };
    let path = write(
        dir.path(),
        "src.fits",
        &FitsCatalogFormatter::encode_catalog(&catalog).unwrap(),
    );
    let f = FitsCatalogFormatter;
    let rows = read(&f, &path, None, &["rows=2:5"])
        .unwrap()
        .downcast::<SourceCatalog>()
        .unwrap();
    assert_eq!(rows.sources, catalog.sources[2..5]);
    assert_eq!(rows.header, catalog.header);
    let cols = read(&f, &path, None, &["columns=NPIX,X", "rows=8:10"])
        .unwrap()
        .downcast::<ColumnTable>()
        .unwrap();
    assert_eq!(
        cols.columns,
        vec![
            ("NPIX".to_string(), ColumnData::I64(vec![8, 9])),
            ("X".to_string(), ColumnData::F64(vec![8.0, 9.0])),
        ]
    );
    for (bad, says) in [
        ("rows=5:11", "10 rows"),
        ("rows=5", "START:END"),
        ("columns=Z", "no column `Z`"),
    ] {
        let err = read(&f, &path, None, &[bad]).unwrap_err();
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
}
