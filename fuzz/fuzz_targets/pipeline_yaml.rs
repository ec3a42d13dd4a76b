//! Pipeline YAML: parsing (serde_yaml_ng with the source map that finds
//! line numbers) and validation against the default universe.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quanta_core::pipeline::LoadedPipeline;
use quanta_core::DimensionUniverse;

fuzz_target!(|data: &[u8]| {
    static UNIVERSE: OnceLock<DimensionUniverse> = OnceLock::new();
    let universe = UNIVERSE.get_or_init(DimensionUniverse::default_universe);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loaded) = LoadedPipeline::parse(text, "fuzz.yaml", universe) {
        let p = &loaded.pipeline;
        let _ = p.digest();
        let _ = p.produced();
        let _ = p.overall_inputs();
        for task in &p.tasks {
            let _ = loaded.task_line(&task.label);
        }
    }
});
