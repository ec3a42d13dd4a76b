//! What quanta and the LSST middleware call the same thing: storage classes
//! and formatters (the table below, also in ARCHITECTURE.md), dimension
//! record fields (quanta's `timespan_begin`/`timespan_end` in MJD (TAI) are
//! LSST's `datetime_begin`/`datetime_end` times), and times themselves.
//!
//! | quanta storage class | quanta formatter | LSST storage class | LSST formatter |
//! |---|---|---|---|
//! | `Json` | `Json` | `StructuredDataDict` | `lsst.daf.butler.formatters.json.JsonFormatter` |
//! | `Json` (import only) | `Json`, file converted from YAML | `StructuredDataDict` | `lsst.daf.butler.formatters.yaml.YamlFormatter` |
//! | `ImageF` | `FitsImageFormatter` | `ImageF` | `lsst.obs.base.formatters.fitsExposure.FitsImageFormatter` |
//!
//! Anything else (quanta's `Bytes`, `SourceCatalog`: a plain FITS binary
//! table that afw's `SourceCatalog` reader would not accept; a composite
//! such as `ExposureF` stored as one file, whose FITS layout is not afw's)
//! is refused by name, on export and on import.
//!
//! A **disassembled** composite (one file per component plus an index,
//! `quanta_datastore::disassembled`) has no LSST form: daf_butler's own
//! `FileDatastore.export` raises `NotImplementedError` for disassembled
//! datasets, and an export entry has one path per dataset. quanta writes
//! it as one entry whose path is the index (the parts are its siblings in
//! the export directory) and whose formatter is
//! [`DISASSEMBLED_FORMATTER_PREFIX`] followed by the composite's quanta
//! formatter; its dataset type keeps the quanta storage class name
//! ([`composite_storage_class`]). LSST's reader imports every formatter
//! class while loading the file, before it registers anything, so it
//! refuses such an export as a whole, naming the formatter (no module
//! `quanta`), rather than misreading an index as an exposure.

/// One row of the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassMapping {
    pub quanta_storage_class: &'static str,
    pub quanta_formatter: &'static str,
    pub lsst_storage_class: &'static str,
    pub lsst_formatter: &'static str,
}

/// The mappings used both ways.
pub const MAPPINGS: &[ClassMapping] = &[
    ClassMapping {
        quanta_storage_class: "Json",
        quanta_formatter: "Json",
        lsst_storage_class: "StructuredDataDict",
        lsst_formatter: "lsst.daf.butler.formatters.json.JsonFormatter",
    },
    ClassMapping {
        quanta_storage_class: "ImageF",
        quanta_formatter: "FitsImageFormatter",
        lsst_storage_class: "ImageF",
        lsst_formatter: "lsst.obs.base.formatters.fitsExposure.FitsImageFormatter",
    },
];

/// LSST's default formatter for `StructuredDataDict`: its files are YAML,
/// converted to JSON on import.
pub const LSST_YAML_FORMATTER: &str = "lsst.daf.butler.formatters.yaml.YamlFormatter";

/// How the formatter of a disassembled composite's export entry starts
/// (see the module doc).
pub const DISASSEMBLED_FORMATTER_PREFIX: &str = "quanta.disassembled.";

/// How an LSST file becomes a quanta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileConversion {
    /// Bytes as they are.
    None,
    /// YAML data read and written again as JSON.
    YamlToJson,
    /// A disassembled composite's index: the parts it lists come with it,
    /// each verified against its own size and checksum.
    Disassembled,
}

/// A composite storage class of quanta (one with stored components), by
/// its name: the storage class of a disassembled composite's dataset type
/// in an export, both ways.
pub fn composite_storage_class(name: &str) -> Option<&'static str> {
    quanta_core::StorageClasses::builtin()
        .get(name)
        .filter(|def| def.is_composite())
        .map(|def| def.name.as_str())
}

/// The LSST storage class of a quanta one.
pub fn lsst_storage_class(quanta: &str) -> Option<&'static str> {
    MAPPINGS
        .iter()
        .find(|m| m.quanta_storage_class == quanta)
        .map(|m| m.lsst_storage_class)
}

/// The quanta storage class of an LSST one (or of a quanta one, as older
/// quanta exports may name it).
pub fn quanta_storage_class(lsst: &str) -> Option<&'static str> {
    MAPPINGS
        .iter()
        .find(|m| m.lsst_storage_class == lsst || m.quanta_storage_class == lsst)
        .map(|m| m.quanta_storage_class)
}

/// The LSST formatter class of a quanta formatter.
pub fn lsst_formatter(quanta: &str) -> Option<&'static str> {
    MAPPINGS
        .iter()
        .find(|m| m.quanta_formatter == quanta)
        .map(|m| m.lsst_formatter)
}

/// The quanta storage class a file of LSST formatter `lsst` holds, and how
/// its bytes must be converted.
pub fn quanta_formatter(lsst: &str) -> Option<(&'static str, FileConversion)> {
    if lsst == LSST_YAML_FORMATTER {
        return Some(("Json", FileConversion::YamlToJson));
    }
    MAPPINGS
        .iter()
        .find(|m| m.lsst_formatter == lsst)
        .map(|m| (m.quanta_storage_class, FileConversion::None))
}

const MJD_UNIX_EPOCH: f64 = 40587.0;
const NANOS_PER_DAY: i128 = 86_400_000_000_000;

/// An MJD (TAI) as LSST writes a time: `YYYY-MM-DD HH:MM:SS.nnnnnnnnn`
/// (scale TAI, tag `!butler_time/tai/iso`); `None` for an infinite one.
pub fn mjd_to_iso(mjd: f64) -> Option<String> {
    if !mjd.is_finite() {
        return None;
    }
    let nanos = ((mjd - MJD_UNIX_EPOCH) * NANOS_PER_DAY as f64).round() as i128;
    let days = nanos.div_euclid(NANOS_PER_DAY);
    let rest = nanos.rem_euclid(NANOS_PER_DAY);
    let (y, m, d) = civil_from_days(days as i64);
    let secs = rest / 1_000_000_000;
    Some(format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:09}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rest % 1_000_000_000
    ))
}

/// The MJD of an ISO time as LSST writes it (`T` or space between date and
/// time; time optional; fraction optional).
pub fn iso_to_mjd(text: &str) -> Option<f64> {
    let text = text.trim();
    let (date, time) = match text.find(['T', ' ']) {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, "00:00:00"),
    };
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.splitn(3, ':');
    let h: i64 = hms.next()?.parse().ok()?;
    let min: i64 = hms.next()?.parse().ok()?;
    let sec: f64 = hms.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 24 || min > 59 || sec >= 61.0 {
        return None;
    }
    let days = days_from_civil(y, m, d) as f64;
    Some(MJD_UNIX_EPOCH + days + (h as f64 * 3600.0 + min as f64 * 60.0 + sec) / 86400.0)
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_match_lsst() {
        // astropy: Time(60000.5, format="mjd", scale="tai").iso
        assert_eq!(
            mjd_to_iso(60000.5).unwrap(),
            "2023-02-25 12:00:00.000000000"
        );
        assert_eq!(iso_to_mjd("2023-02-25 12:00:00.000000000"), Some(60000.5));
        assert_eq!(iso_to_mjd("2020-01-01T00:00:00"), Some(58849.0));
        assert_eq!(mjd_to_iso(f64::INFINITY), None);
        for mjd in [0.0, 40587.25, 51544.123456, 61000.999] {
            let back = iso_to_mjd(&mjd_to_iso(mjd).unwrap()).unwrap();
            assert!((back - mjd).abs() < 1e-9, "{mjd} → {back}");
        }
        assert_eq!(iso_to_mjd("2020-13-01"), None);
    }

    #[test]
    fn the_mapping_goes_both_ways() {
        assert_eq!(lsst_storage_class("Json"), Some("StructuredDataDict"));
        assert_eq!(quanta_storage_class("StructuredDataDict"), Some("Json"));
        assert_eq!(lsst_storage_class("Bytes"), None);
        assert_eq!(
            quanta_formatter(LSST_YAML_FORMATTER),
            Some(("Json", FileConversion::YamlToJson))
        );
        assert_eq!(
            quanta_formatter(lsst_formatter("Json").unwrap()),
            Some(("Json", FileConversion::None))
        );
    }
}
