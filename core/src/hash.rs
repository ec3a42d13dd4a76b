//! The hashes quanta uses: xxh3 for block and record checksums (speed),
//! BLAKE3 for dataset file checksums (integrity against tampering, still
//! several GB/s).

pub use xxhash_rust::xxh3::xxh3_64;

/// Hex BLAKE3 of a byte slice, the checksum stored for every dataset file.
pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
