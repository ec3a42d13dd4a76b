//! Python tasks (`python: module:Class`) run by the `quanta` binary's
//! workers: real interpreters (`python3 -m quanta._worker`, one per job),
//! the `quanta` package built into a wheel by maturin and installed into a
//! scratch directory, the reference tasks of `examples/python/`.
//!
//! Needs python3 (≥ 3.10) with maturin and numpy (`.ci/run` installs them).
//! Without them each test says why and passes, unless
//! QUANTA_REQUIRE_PYTHON=1 (CI), where it fails.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{make_reference_repo, quanta, show};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn required() -> bool {
    std::env::var("QUANTA_REQUIRE_PYTHON").as_deref() == Ok("1")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds the `quanta` wheel (maturin, this build's profile and target
/// directory, so the compiled crates are reused) and installs it into a
/// scratch directory kept for the whole test binary. `Err`: why Python
/// tasks cannot run here.
fn build_site() -> Result<PathBuf, String> {
    let check = Command::new("python3")
        .args([
            "-c",
            "import numpy, maturin, sys; \
             assert sys.version_info >= (3, 10), 'python3 is older than 3.10'",
        ])
        .output();
    match check {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(text(&out)),
        Err(e) => return Err(format!("cannot run python3: {e}")),
    }
    // This binary is target/<profile>/deps/python_tasks-…
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test binary is not in target/<profile>/deps")?;
    let target = profile.parent().ok_or("no target directory")?;
    let cargo_profile = if profile.file_name().is_some_and(|n| n == "release") {
        "release"
    } else {
        "dev"
    };
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?.keep();
    let wheels = scratch.join("wheels");
    let built = Command::new("python3")
        .args([
            "-m",
            "maturin",
            "build",
            "--quiet",
            "--profile",
            cargo_profile,
        ])
        .arg("--manifest-path")
        .arg(Path::new(WORKSPACE).join("python/Cargo.toml"))
        .arg("--out")
        .arg(&wheels)
        .args(["--interpreter", "python3"])
        .env("CARGO_TARGET_DIR", target)
        .output()
        .map_err(|e| format!("maturin: {e}"))?;
    // The toolchain is there: a failing build is a failure, not a skip.
    assert!(built.status.success(), "maturin build:\n{}", text(&built));
    let wheel = std::fs::read_dir(&wheels)
        .expect("maturin's output directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("maturin built a wheel");
    let site = scratch.join("site");
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--no-index"])
        .args(["--disable-pip-version-check", "--target"])
        .arg(&site)
        .arg(&wheel)
        .output()
        .expect("pip runs");
    assert!(
        installed.status.success(),
        "pip install:\n{}",
        text(&installed)
    );
    Ok(site)
}

/// The installed package's directory, or `None` (the test is skipped).
fn site() -> Option<&'static Path> {
    static SITE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match SITE.get_or_init(build_site) {
        Ok(p) => Some(p),
        Err(why) => {
            assert!(
                !required(),
                "QUANTA_REQUIRE_PYTHON=1 but python3 with maturin and numpy is missing: {why}"
            );
            eprintln!("skipping the Python task tests (pip install maturin numpy): {why}");
            None
        }
    }
}

/// PYTHONPATH for the workers: the installed package and the example tasks.
fn python_path(site: &Path) -> std::ffi::OsString {
    std::env::join_paths([
        site.to_path_buf(),
        Path::new(WORKSPACE).join("examples/python"),
    ])
    .unwrap()
}

fn pipeline(name: &str) -> PathBuf {
    Path::new(WORKSPACE).join("examples/pipelines").join(name)
}

/// `quanta ARGS` with the workers' PYTHONPATH.
fn q(site: &Path, args: &[&str]) -> Output {
    quanta()
        .args(args)
        .env("PYTHONPATH", python_path(site))
        .env_remove("QUANTA_PYTHON")
        .output()
        .expect("quanta runs")
}

fn q_ok(site: &Path, args: &[&str]) -> String {
    let out = q(site, args);
    assert!(out.status.success(), "quanta {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn preflight(site: &Path, repo: &Path, pipeline: &Path, run: &str, bundle: &Path) {
    q_ok(
        site,
        &[
            "preflight",
            s(repo),
            "--pipeline",
            s(pipeline),
            "--input",
            "Cam/raw",
            "--output-run",
            run,
            "--bundle",
            s(bundle),
        ],
    );
}

/// The bytes of every file a RUN wrote, by path without the RUN directory
/// and without the dataset id (`postISRCCD/0/postISRCCD_Cam_0_0`).
fn outputs_of(repo: &Path, run: &str) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_string();
                // `<name>_<uuid>.json`: the dataset id differs between RUNs.
                let key = rel.rsplit_once('_').unwrap().0.to_string();
                out.insert(key, std::fs::read(&p).unwrap());
            }
        }
    }
    let base = repo.join("datastore").join(run);
    let mut out = BTreeMap::new();
    walk(&base, &base, &mut out);
    out
}

/// A copy of the Python reference pipeline with `config` for `label`.
fn with_config(dir: &Path, label: &str, config: &str) -> PathBuf {
    let text = std::fs::read_to_string(pipeline("reference_python.yaml")).unwrap();
    let class = match label {
        "isr" => "Isr",
        "characterize" => "Characterize",
        _ => "Summarize",
    };
    let from = format!("    python: reference_tasks:{class}\n");
    assert!(text.contains(&from));
    let text = text.replacen(&from, &format!("{from}    config: {config}\n"), 1);
    let path = dir.join(format!("{label}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `report --json`'s failures: (task, data ID text, status, error).
fn failures(site: &Path, repo: &Path, run: &str) -> Vec<(String, String, String, String)> {
    let out = q_ok(site, &["report", s(repo), run, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut f: Vec<_> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["task"].as_str().unwrap().to_string(),
                f["data_id"].to_string(),
                f["status"].as_str().unwrap().to_string(),
                f["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    f.sort();
    f
}

#[test]
fn python_tasks_write_what_the_rust_tasks_write() {
    let Some(site) = site() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 3, 4);
    for (yaml, run) in [
        ("reference.yaml", "rust/run"),
        ("reference_python.yaml", "python/run"),
    ] {
        let bundle = dir.path().join(format!("{}.qb", run.replace('/', "_")));
        preflight(site, &repo, &pipeline(yaml), run, &bundle);
        q_ok(site, &["run", s(&bundle), "--jobs", "2"]);
        q_ok(site, &["merge", s(&repo), s(&bundle)]);
        assert!(failures(site, &repo, run).is_empty());
    }
    let rust = outputs_of(&repo, "rust/run");
    let python = outputs_of(&repo, "python/run");
    assert_eq!(rust.len(), 3 * 4 * 2 + 3, "{:?}", rust.keys());
    assert_eq!(
        rust.keys().collect::<Vec<_>>(),
        python.keys().collect::<Vec<_>>()
    );
    for (k, bytes) in &rust {
        assert_eq!(
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&python[k]),
            "{k} differs"
        );
    }
    // Provenance is the Rust tasks': each summary was made from the four
    // icExp of its exposure, as merge registered it from the journal.
    let refs = q_ok(
        site,
        &[
            "query-datasets",
            s(&repo),
            "--collections",
            "python/run",
            "--dataset-type",
            "expSummary",
            "--json",
        ],
    );
    let refs: serde_json::Value = serde_json::from_str(&refs).unwrap();
    assert_eq!(refs.as_array().unwrap().len(), 3, "{refs}");
}

#[test]
fn a_python_exception_fails_its_quantum_with_the_traceback() {
    let Some(site) = site() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 3);
    let yaml = with_config(
        dir.path(),
        "characterize",
        "{fail_on: {exposure: 1, detector: 2}}",
    );
    let bundle = dir.path().join("fail.qb");
    preflight(site, &repo, &yaml, "fail/run", &bundle);
    let out = q(site, &["run", s(&bundle), "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    // Merge registers what succeeded and exits 1 for the failed quanta.
    assert_eq!(
        q(site, &["merge", s(&repo), s(&bundle)]).status.code(),
        Some(1)
    );
    let f = failures(site, &repo, "fail/run");
    assert_eq!(f.len(), 2, "{f:?}");
    let (task, data_id, status, error) = &f[0];
    assert_eq!((task.as_str(), status.as_str()), ("characterize", "failed"));
    assert!(data_id.contains("\"detector\":2"), "{data_id}");
    assert!(
        error.starts_with("RuntimeError: configured to fail on"),
        "{error}"
    );
    assert!(
        error.contains("Traceback (most recent call last)"),
        "{error}"
    );
    assert!(error.contains("reference_tasks.py"), "{error}");
    let (task, _, status, error) = &f[1];
    assert_eq!((task.as_str(), status.as_str()), ("summarize", "blocked"));
    assert!(error.contains("did not succeed"), "{error}");
    // The table names the exception on the failure's line.
    let table = q_ok(site, &["report", s(&repo), "fail/run"]);
    assert!(
        table.contains("failed: RuntimeError: configured to fail on"),
        "{table}"
    );
    // Everything else ran: 6 isr, 5 characterize, the other summary.
    assert_eq!(outputs_of(&repo, "fail/run").len(), 6 + 5 + 1);
}

#[test]
fn a_dead_interpreter_fails_only_its_quantum() {
    let Some(site) = site() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 2, 3);
    let yaml = with_config(
        dir.path(),
        "isr",
        "{exit_on: {exposure: 0, detector: 1}, kill_on: {exposure: 1, detector: 0}}",
    );
    let bundle = dir.path().join("crash.qb");
    preflight(site, &repo, &yaml, "crash/run", &bundle);
    // One job: one interpreter slot, which must be restarted after each
    // death for the quanta after it to run.
    let out = q(site, &["run", s(&bundle), "--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    // Merge registers what succeeded and exits 1 for the failed quanta.
    assert_eq!(
        q(site, &["merge", s(&repo), s(&bundle)]).status.code(),
        Some(1)
    );
    let f = failures(site, &repo, "crash/run");
    let failed: Vec<_> = f.iter().filter(|x| x.2 == "failed").collect();
    assert_eq!(failed.len(), 2, "{f:?}");
    let exited = failed
        .iter()
        .find(|x| x.1.contains("\"exposure\":0"))
        .unwrap();
    assert!(exited.3.contains("exited with code 3"), "{exited:?}");
    let killed = failed
        .iter()
        .find(|x| x.1.contains("\"exposure\":1"))
        .unwrap();
    assert!(killed.3.contains("killed by signal 9"), "{killed:?}");
    // Downstream of each: its characterize and its exposure's summary.
    assert_eq!(f.iter().filter(|x| x.2 == "blocked").count(), 4, "{f:?}");
    // The other isr and characterize quanta ran after the deaths.
    assert_eq!(outputs_of(&repo, "crash/run").len(), 4 + 4);
}

#[test]
fn a_hung_python_task_times_out_and_the_next_quanta_run() {
    let Some(site) = site() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 3);
    let yaml = with_config(dir.path(), "isr", "{hang_on: {detector: 1}}");
    let bundle = dir.path().join("hang.qb");
    preflight(site, &repo, &yaml, "hang/run", &bundle);
    let out = q(site, &["run", s(&bundle), "--jobs", "1", "--timeout", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let summary = text(&out);
    assert!(summary.contains("timed out after 3.000 s"), "{summary}");
    // Merge registers what succeeded and exits 1 for the failed quanta.
    assert_eq!(
        q(site, &["merge", s(&repo), s(&bundle)]).status.code(),
        Some(1)
    );
    let f = failures(site, &repo, "hang/run");
    assert_eq!(f.iter().filter(|x| x.2 == "timed_out").count(), 1, "{f:?}");
    assert_eq!(outputs_of(&repo, "hang/run").len(), 2 + 2);
}

#[test]
fn a_missing_quanta_package_or_interpreter_is_exit_2_before_anything_runs() {
    let Some(site) = site() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = make_reference_repo(dir.path(), 1, 2);
    let bundle = dir.path().join("p.qb");
    preflight(
        site,
        &repo,
        &pipeline("reference_python.yaml"),
        "p/run",
        &bundle,
    );
    // No `quanta` package on the interpreter's path.
    let out = quanta()
        .args(["run", s(&bundle)])
        .env("PYTHONPATH", Path::new(WORKSPACE).join("examples/python"))
        .env_remove("QUANTA_PYTHON")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No module named 'quanta'"), "{err}");
    assert!(err.contains("pip install ./python"), "{err}");
    // An interpreter that does not exist.
    let out = quanta()
        .args(["run", s(&bundle)])
        .env("PYTHONPATH", python_path(site))
        .env("QUANTA_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/python3"),
        "{}",
        show(&out)
    );
    // The task module is not on the path.
    let out = quanta()
        .args(["run", s(&bundle)])
        .env("PYTHONPATH", site)
        .env_remove("QUANTA_PYTHON")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot import `reference_tasks`"),
        "{}",
        show(&out)
    );
    // Nothing ran: no journal.
    let journals = dir.path().join("p.qb.journals");
    let n = std::fs::read_dir(&journals)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "journal"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[test]
fn demo_python_runs_the_reference_flow() {
    let Some(site) = site() else { return };
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = q_ok(
        site,
        &[
            "demo",
            "--python",
            "--dir",
            s(&demo),
            "--exposures",
            "2",
            "--detectors",
            "3",
        ],
    );
    assert!(out.contains("for 14 quanta; merged 14 datasets"), "{out}");
    assert!(demo.join("python/reference_tasks.py").is_file());
}
