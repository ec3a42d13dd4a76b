//! `preflight_repo REPO PIPELINE BUNDLE INPUT OUTPUT_RUN`: one preflight
//! through the library, printing the report as JSON. Used by
//! `benches/preflight/run.sh` for profiling without the CLI's dependencies.

use std::path::Path;
use std::process::ExitCode;

use quanta_core::BundleWriteOptions;
use quanta_preflight::{run_preflight, PreflightOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, pipeline, bundle, input, output_run] = args.as_slice() else {
        eprintln!("usage: preflight_repo REPO PIPELINE BUNDLE INPUT OUTPUT_RUN");
        return ExitCode::from(2);
    };
    let opts = PreflightOptions {
        input_collections: vec![input.clone()],
        output_run: output_run.clone(),
        ..Default::default()
    };
    let mut butler = match quanta_butler::Butler::open(Path::new(repo)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run_preflight(
        &mut butler,
        Path::new(pipeline),
        &opts,
        Path::new(bundle),
        &BundleWriteOptions::default(),
        &|_| {},
    ) {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
