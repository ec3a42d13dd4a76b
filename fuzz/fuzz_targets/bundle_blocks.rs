//! The bundle's block decoders: the input is a list of block payloads
//! (see `quanta_fuzz::decode_blocks`) that the target seals into a bundle
//! with every length and checksum right, so mutations reach the header,
//! dimension-record, quanta and cluster decoders instead of the checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let blocks = quanta_fuzz::decode_blocks(data);
    if blocks.len() < 3 {
        return;
    }
    let bytes = quanta_fuzz::seal_bundle(&blocks);
    let path = quanta_fuzz::scratch_file("blocks.qb", &bytes);
    let Ok(bundle) = quanta_core::Bundle::open(&path) else {
        return;
    };
    read_everything(&bundle);
});

include!("bundle_read.rs.inc");
