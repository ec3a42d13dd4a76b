//! Verification throughput on many small files, as `quanta merge` sees them:
//! the previous per-file check (kept here as `old_verify`) in a rayon
//! `par_iter`, the current `Datastore::verify` the same way, and
//! `Datastore::verify_many`, in file order and shuffled.
//!
//! `cargo bench -p quanta-datastore --bench verify [-- FILES [DIRS]]`
//! (default 200000 files of ~70 bytes in 200 directories, under /tmp;
//! removed afterwards). Prints wall time and process CPU (user + system).
//! Before each round every file's access time is made stale, so each round
//! reads the files as merge does: for the first time since they were written.
//! `VERIFY_BENCH_ONLY=<name>` runs only the variant of that name.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use quanta_datastore::{Datastore, DatastoreConfig, DatastoreError, ExpectedFile, StoredFileInfo};
use rayon::prelude::*;

const ROUNDS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let files = numbers.first().copied().unwrap_or(200_000);
    let dirs = numbers.get(1).copied().unwrap_or(200).max(1);

    let tmp = tempfile::Builder::new()
        .prefix("quanta-verify-bench-")
        .tempdir_in("/tmp")?;
    let ds = Datastore::new(tmp.path(), DatastoreConfig::default())?;

    let t = Instant::now();
    let infos = make_files(&ds, files, dirs)?;
    println!(
        "{files} files of ~{} bytes in {dirs} directories under {} (made in {:.2?})",
        infos.iter().map(|i| i.size).sum::<u64>() / files.max(1) as u64,
        tmp.path().display(),
        t.elapsed()
    );
    let expected: Vec<ExpectedFile<'_>> = infos.iter().map(StoredFileInfo::expected).collect();
    let mut shuffled = expected.clone();
    shuffle(&mut shuffled);
    println!(
        "rayon threads: {}; best of {ROUNDS} rounds",
        rayon::current_num_threads()
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>11}",
        "", "wall", "user", "sys", "CPU/file"
    );

    let all = (&ds, infos.as_slice());
    report("old verify, par_iter", &all, || {
        infos.par_iter().map(|i| old_verify(&ds, i)).collect()
    });
    report("verify, par_iter", &all, || {
        infos.par_iter().map(|i| ds.verify(i)).collect()
    });
    report("verify_many", &all, || ds.verify_many(&expected));
    report("verify_many, shuffled order", &all, || {
        ds.verify_many(&shuffled)
    });

    drop(ds);
    tmp.close()?;
    Ok(())
}

/// Writes the files directly (the datastore's atomic write is not what is
/// measured) with names like merge's synthetic campaign.
fn make_files(
    ds: &Datastore,
    files: usize,
    dirs: usize,
) -> Result<Vec<StoredFileInfo>, DatastoreError> {
    for d in 0..dirs {
        let dir = ds.abs_path(&format!("bench/synth/synthA/{d}"))?;
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    }
    (0..files)
        .into_par_iter()
        .map(|n| {
            let (d, i) = (n % dirs, n / dirs);
            let path = format!("bench/synth/synthA/{d}/synthA_{d}_{i}.json");
            let body = format!(
                "{{\"visit\": {i}, \"detector\": {d}, \"flux\": {:.6}, \"ok\": true}}\n",
                n as f64 * 0.37
            );
            let abs = ds.abs_path(&path)?;
            fs::write(&abs, &body).map_err(|e| io_err(&abs, e))?;
            Ok(StoredFileInfo {
                path,
                formatter: "Json".into(),
                size: body.len() as u64,
                checksum: blake3::hash(body.as_bytes()).to_hex().to_string(),
            })
        })
        // Directory-major order, as a campaign's quanta write them.
        .collect::<Result<Vec<_>, _>>()
        .map(|mut v| {
            v.sort_by(|a, b| a.path.cmp(&b.path));
            v
        })
}

fn io_err(path: &Path, e: io::Error) -> DatastoreError {
    DatastoreError::Io {
        action: "write benchmark file",
        path: path.to_path_buf(),
        source: e,
    }
}

/// Sets every file's access time back to 1970, so that the next read is,
/// as in merge, the first since the file was written: under `relatime` it
/// updates the access time (unless opened with `O_NOATIME`).
fn make_atime_stale(&(ds, infos): &(&Datastore, &[StoredFileInfo])) {
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
    };
    let failed = infos
        .par_iter()
        .filter(|i| {
            rustix::fs::utimensat(
                rustix::fs::CWD,
                ds.root().join(&i.path),
                &times,
                rustix::fs::AtFlags::empty(),
            )
            .is_err()
        })
        .count();
    if failed > 0 {
        println!("could not reset the access time of {failed} files");
    }
}

/// Deterministic Fisher–Yates with a 64-bit LCG: no extra dependency.
fn shuffle<T>(v: &mut [T]) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..v.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((state >> 33) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn report(
    name: &str,
    files_of_round: &(&Datastore, &[StoredFileInfo]),
    mut run: impl FnMut() -> Vec<Result<(), DatastoreError>>,
) {
    let files = files_of_round.1.len();
    // For profiling one variant: VERIFY_BENCH_ONLY=verify_many.
    if let Ok(only) = std::env::var("VERIFY_BENCH_ONLY") {
        if name != only {
            return;
        }
    }
    let mut best: Option<(Duration, Duration, Duration)> = None;
    for _ in 0..ROUNDS {
        make_atime_stale(files_of_round);
        let (u0, s0) = cpu_times();
        let t = Instant::now();
        let results = run();
        let wall = t.elapsed();
        let (u1, s1) = cpu_times();
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            println!(
                "{name}: {failed} of {} files failed verification",
                results.len()
            );
        }
        drop(results);
        let round = (wall, u1.saturating_sub(u0), s1.saturating_sub(s0));
        best = match best {
            Some(b) if b.1 + b.2 <= round.1 + round.2 => Some(b),
            _ => Some(round),
        };
    }
    if let Some((wall, user, sys)) = best {
        let per_file = (user + sys).as_secs_f64() * 1e6 / files.max(1) as f64;
        println!(
            "{name:<34} {:>8.3}s {:>8.3}s {:>8.3}s {per_file:>8.2} µs",
            wall.as_secs_f64(),
            user.as_secs_f64(),
            sys.as_secs_f64()
        );
    }
}

/// Process user and system CPU time so far, all threads.
fn cpu_times() -> (Duration, Duration) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the pointer it is given;
    // RUSAGE_SELF is always valid, so it cannot fail.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// `Datastore::verify` as it was before `verify_many`: open by absolute
/// path, fstat, `read_to_end` of size + 1 into a fresh `Vec`.
fn old_verify(ds: &Datastore, info: &StoredFileInfo) -> Result<(), DatastoreError> {
    let abs = ds.abs_path(&info.path)?;
    let missing = || DatastoreError::Missing {
        path: info.path.clone(),
    };
    let file = match File::open(&abs) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(io_err(&abs, e)),
    };
    let meta = file.metadata().map_err(|e| io_err(&abs, e))?;
    if !meta.is_file() || meta.len() != info.size {
        return Err(missing());
    }
    let mut bytes = Vec::with_capacity(info.size as usize + 1);
    file.take(info.size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(&abs, e))?;
    if bytes.len() as u64 != info.size
        || !quanta_core::hash::blake3_hex(&bytes).eq_ignore_ascii_case(&info.checksum)
    {
        return Err(missing());
    }
    Ok(())
}
