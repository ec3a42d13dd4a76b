//! The fuzz targets' bundle seed (`fuzz/seeds/bundle_file/demo.qb`) must be
//! a bundle of the current format: a seed the reader refuses at its first
//! check leaves the fuzzer stuck before every deeper decoder (seen once, after
//! a format bump: 93 edges covered in millions of runs). Remake it with
//! `quanta demo --dir D --exposures 2 --detectors 2`, copying `D/demo.qb`,
//! and `fuzz/make_seeds.py D/demo.qb` for `bundle_blocks`.

use std::path::Path;

use quanta_core::Bundle;

#[test]
fn the_bundle_seed_of_the_fuzz_targets_is_of_the_current_format() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/bundle_file/demo.qb");
    let bundle = Bundle::open(&seed).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; remake the fuzz seeds (see this test's doc)",
            seed.display()
        )
    });
    bundle.verify().expect("every block of the seed verifies");
    assert!(bundle.n_quanta() > 0, "the seed bundle holds quanta");
}
