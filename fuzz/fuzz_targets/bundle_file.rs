//! The bundle reader on raw bytes: the frame (preamble, footer, index,
//! layout) and, when that passes, every block. Mutations rarely survive
//! the checksums; `bundle_blocks` reaches the block decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = quanta_fuzz::scratch_file("fuzz.qb", data);
    if let Ok(bundle) = quanta_core::Bundle::open(&path) {
        read_everything(&bundle);
    }
});

include!("bundle_read.rs.inc");
