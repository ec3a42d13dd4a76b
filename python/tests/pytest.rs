//! Builds the `quanta` Python package into a wheel (maturin, the dev
//! profile, so the workspace's compiled crates are reused), installs it
//! into a scratch directory and runs its pytest suite (`tests/test_*.py`)
//! against repositories made by the `quanta` binary of this build.
//!
//! Needs python3 with maturin, pytest, numpy and astropy (`.ci/run`
//! installs them with pip). Without them the test says why and passes,
//! unless QUANTA_REQUIRE_PYTHON=1 (CI), where it fails.
//!
//! The `quanta` binary is the one `cargo test --workspace` builds for the
//! CLI's tests (target/<profile>/quanta); run alone (`cargo test -p
//! quanta-python`), the test builds it first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const PACKAGE: &str = env!("CARGO_MANIFEST_DIR");

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

/// Why the Python toolchain is not usable, if it is not.
fn missing_python() -> Option<String> {
    let check = Command::new("python3")
        .args([
            "-c",
            "import numpy, astropy, pytest, maturin, sys; \
             assert sys.version_info >= (3, 10), 'python3 is older than 3.10'",
        ])
        .output();
    match check {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(text(&out)),
        Err(e) => Some(format!("cannot run python3: {e}")),
    }
}

/// `target/<profile>`: this test binary is `target/<profile>/deps/pytest-…`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn run(what: &str, command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}", text(&out));
    out
}

/// The `quanta` binary of this build, built now if it is not there.
fn quanta_binary(profile: &Path, target: &Path) -> PathBuf {
    let binary = profile.join("quanta");
    if !binary.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "quanta-cli"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(WORKSPACE);
        if profile.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        run("cargo build -p quanta-cli", &mut build);
    }
    binary
}

#[test]
fn the_python_package_passes_its_pytest_suite() {
    if let Some(why) = missing_python() {
        assert!(
            !required(),
            "QUANTA_REQUIRE_PYTHON=1 but python3 with maturin, pytest, numpy and astropy is missing: {why}"
        );
        eprintln!(
            "skipping the Python package's tests (pip install maturin pytest numpy astropy): {why}"
        );
        return;
    }
    let profile = profile_dir();
    let target = profile
        .parent()
        .expect("target/<profile> has a parent")
        .to_path_buf();
    let quanta = quanta_binary(&profile, &target);
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let wheels = scratch.path().join("wheels");
    let cargo_profile = if profile.file_name().is_some_and(|n| n == "release") {
        "release"
    } else {
        "dev"
    };
    run(
        "maturin build",
        Command::new("python3")
            .args([
                "-m",
                "maturin",
                "build",
                "--quiet",
                "--profile",
                cargo_profile,
            ])
            .arg("--manifest-path")
            .arg(Path::new(PACKAGE).join("Cargo.toml"))
            .arg("--out")
            .arg(&wheels)
            .args(["--interpreter", "python3"])
            .env("CARGO_TARGET_DIR", &target),
    );
    let wheel = std::fs::read_dir(&wheels)
        .expect("maturin's output directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("maturin built a wheel");
    let name = wheel.file_name().unwrap_or_default().to_string_lossy();
    assert!(
        name.contains("-cp310-abi3-"),
        "expected one abi3 wheel for CPython >= 3.10, got {name}"
    );
    let site = scratch.path().join("site");
    run(
        "pip install of the wheel",
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-index",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&site)
            .arg(&wheel),
    );
    // Run from the scratch directory so that `import quanta` finds the
    // installed wheel, never the source tree's python/quanta/.
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(Path::new(PACKAGE).join("tests"))
        .current_dir(scratch.path())
        .env("PYTHONPATH", &site)
        .env("QUANTA_BIN", &quanta)
        .output()
        .expect("running pytest");
    println!("{}", text(&out));
    assert!(
        out.status.success(),
        "pytest failed (exit {:?}):\n{}",
        out.status.code(),
        text(&out)
    );
    // A skipped test proves nothing: CI wants every one run.
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        !(required() && summary.contains(" skipped")),
        "QUANTA_REQUIRE_PYTHON=1 but some Python tests were skipped:\n{summary}"
    );
}
