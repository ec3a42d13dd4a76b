//! Helpers shared by the fuzz targets: a scratch directory on a RAM disk,
//! and the framing of bundles and journals, so that targets can wrap
//! fuzzer-chosen payloads in valid checksums and reach the decoders behind
//! them (a mutated byte almost never survives a 64-bit checksum).
//!
//! The framing is re-implemented here from the format descriptions in
//! `core/src/bundle/format.rs` and `core/src/journal.rs` on purpose: the fuzz
//! crate must not widen the library's API just to forge files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use xxhash_rust::xxh3::xxh3_64;

/// A per-process scratch directory, on /dev/shm when it exists (files
/// written per execution cost no disk I/O there). Removed at exit only when
/// the process ends normally; it lives in a temp dir either way.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let builder = &mut tempfile::Builder::new();
        builder.prefix("quanta-fuzz-");
        if shm.is_dir() {
            builder.tempdir_in(shm)
        } else {
            builder.tempdir()
        }
        .expect("creating the fuzz scratch directory")
    })
    .path()
}

/// `scratch()/name`, replaced by `bytes`.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("writing a scratch file");
    path
}

/// Splits fuzz input into parts at the separator `\n----\n`, so that one
/// input can carry several texts (several journals, several blocks) and
/// still mutate well as plain text.
pub fn split_parts(data: &[u8]) -> Vec<&[u8]> {
    const SEP: &[u8] = b"\n----\n";
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEP.len()).position(|w| w == SEP) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEP.len()..];
    }
    parts.push(rest);
    parts
}

/// The journal frame of one payload: `len u32 LE | xxh3-64 u64 LE | payload`.
pub fn journal_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

const BUNDLE_MAGIC: &[u8; 8] = b"QUANTAB\0";
const PREAMBLE_LEN: usize = 32;
const FOOTER_LEN: usize = 40;
const BLOCK_HEADER_LEN: usize = 16;

/// One block of a bundle as the fuzz target describes it: its decoded
/// payload, stored raw or zstd-compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleBlock {
    pub zstd: bool,
    /// Quanta in the block (quanta blocks only; 0 for the others).
    pub count: u32,
    pub payload: Vec<u8>,
}

/// Block kinds by position: header, dimension records, quanta..., clusters.
fn kind_at(i: usize, n: usize) -> u8 {
    match i {
        0 => 1,
        1 => 2,
        _ if i == n - 1 => 4,
        _ => 3,
    }
}

/// A bundle file holding `blocks` (at least 3: header, dimension records,
/// quanta blocks, clusters) with every length, offset and checksum right.
pub fn seal_bundle(blocks: &[BundleBlock]) -> Vec<u8> {
    assert!(blocks.len() >= 3);
    let mut file = vec![0u8; PREAMBLE_LEN];
    let mut index = Vec::new();
    let mut first = 0u32;
    for (i, b) in blocks.iter().enumerate() {
        let kind = kind_at(i, blocks.len());
        let (count, start) = if kind == 3 { (b.count, first) } else { (0, 0) };
        first = first.wrapping_add(count);
        let stored = if b.zstd {
            zstd::bulk::compress(&b.payload, 1).expect("zstd compress")
        } else {
            b.payload.clone()
        };
        let mut block = vec![0u8; BLOCK_HEADER_LEN];
        block[0] = b'Q';
        block[1] = kind;
        block[2] = u8::from(b.zstd);
        block[4..8].copy_from_slice(&start.to_le_bytes());
        block[8..12].copy_from_slice(&count.to_le_bytes());
        block[12..16].copy_from_slice(&(b.payload.len() as u32).to_le_bytes());
        block.extend_from_slice(&stored);
        index.push(kind);
        index.push(u8::from(b.zstd));
        index.extend_from_slice(&[0, 0]);
        index.extend_from_slice(&start.to_le_bytes());
        index.extend_from_slice(&count.to_le_bytes());
        index.extend_from_slice(&(b.payload.len() as u32).to_le_bytes());
        index.extend_from_slice(&(file.len() as u64).to_le_bytes());
        index.extend_from_slice(&(block.len() as u64).to_le_bytes());
        index.extend_from_slice(&xxh3_64(&block).to_le_bytes());
        file.extend_from_slice(&block);
    }
    let index_offset = file.len() as u64;
    file.extend_from_slice(&index);
    let mut footer = [0u8; FOOTER_LEN];
    footer[..8].copy_from_slice(&index_offset.to_le_bytes());
    footer[8..16].copy_from_slice(&(index.len() as u64).to_le_bytes());
    footer[16..24].copy_from_slice(&xxh3_64(&index).to_le_bytes());
    let sum = xxh3_64(&footer[..24]);
    footer[24..32].copy_from_slice(&sum.to_le_bytes());
    footer[32..40].copy_from_slice(BUNDLE_MAGIC);
    file.extend_from_slice(&footer);
    let file_len = file.len() as u64;
    file[..8].copy_from_slice(BUNDLE_MAGIC);
    file[8..12].copy_from_slice(&1u32.to_le_bytes());
    file[16..24].copy_from_slice(&file_len.to_le_bytes());
    let sum = xxh3_64(&file[..24]);
    file[24..32].copy_from_slice(&sum.to_le_bytes());
    file
}

/// Parses the fuzz input of `bundle_blocks`: per block
/// `flags u8 (bit 0: zstd) | count u32 LE | len u32 LE | payload`
/// (`make_seeds.py` writes seeds so); a short last block takes what is left.
pub fn decode_blocks(mut data: &[u8]) -> Vec<BundleBlock> {
    let mut blocks = Vec::new();
    while data.len() >= 9 {
        let zstd = data[0] & 1 == 1;
        let count = u32::from_le_bytes(data[1..5].try_into().unwrap());
        let len = u32::from_le_bytes(data[5..9].try_into().unwrap()) as usize;
        data = &data[9..];
        let take = len.min(data.len());
        blocks.push(BundleBlock {
            zstd,
            count,
            payload: data[..take].to_vec(),
        });
        data = &data[take..];
    }
    blocks
}
