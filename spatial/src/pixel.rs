//! HEALPix (nested scheme) helpers over `cdshealpix`.

/// The deepest level a region may be pixelized at (cdshealpix's limit is 29;
/// indices must also fit an SQLite INTEGER).
pub const HEALPIX_MAX_LEVEL: u8 = 24;

/// The cells at `fine_level` inside cell `index` of `level`
/// (`level <= fine_level`), as a half-open range of nested indices: the
/// form in which a `healpix<L> = i` constraint reaches a table indexed at a
/// finer level.
pub fn healpix_range_at(level: u8, index: u64, fine_level: u8) -> std::ops::Range<u64> {
    let shift = 2 * u32::from(fine_level - level);
    (index << shift)..((index + 1) << shift)
}
