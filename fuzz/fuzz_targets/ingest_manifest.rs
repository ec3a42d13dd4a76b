//! Ingest manifests: CSV (`path,<dimensions>...`) or JSON lines, typed
//! against the default universe.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quanta_butler::parse_manifest;
use quanta_core::DimensionUniverse;

fuzz_target!(|data: &[u8]| {
    static UNIVERSE: OnceLock<DimensionUniverse> = OnceLock::new();
    let universe = UNIVERSE.get_or_init(DimensionUniverse::default_universe);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_manifest(text, Path::new("/manifests/fuzz.csv"), universe);
});
