//! Writes a reference-workload bundle without a Registry, for benchmarks:
//! `make_reference_bundle DIR EXPOSURES DETECTORS [--raw-limit K] [--sleep-ms MS]`.
//! The bundle is `DIR/reference.qb`, the datastore `DIR/datastore`.

use std::path::PathBuf;
use std::process::ExitCode;

use quanta_examples::reference::{build_reference_bundle, ReferenceOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: make_reference_bundle DIR EXPOSURES DETECTORS [--raw-limit K]";
    if args.len() < 3 {
        eprintln!("{usage}");
        return ExitCode::from(2);
    }
    let (Ok(exposures), Ok(detectors)) = (args[1].parse(), args[2].parse()) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let mut o = ReferenceOptions {
        exposures,
        detectors,
        ..Default::default()
    };
    let mut rest = args[3..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), value) {
            ("--raw-limit", Some(k)) => o.raw_limit = Some(k),
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let t0 = std::time::Instant::now();
    match build_reference_bundle(&PathBuf::from(&args[0]), &o) {
        Ok(rb) => {
            eprintln!(
                "wrote {} ({} quanta) in {:.2} s",
                rb.bundle.display(),
                2 * exposures * detectors + exposures,
                t0.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
