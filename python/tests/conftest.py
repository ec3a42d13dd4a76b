"""Fixtures: repositories and bundles made by the `quanta` command itself.

The tests compare the package against the command: the same repository
read both ways must give the same answers and the same error messages.
`QUANTA_BIN` names the binary (tests/pytest.rs sets it); without it the
workspace's target/debug/quanta is used, and the tests are skipped when
there is none.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

WORKSPACE = Path(__file__).resolve().parents[2]


def _quanta_bin() -> Path | None:
    given = os.environ.get("QUANTA_BIN")
    if given:
        return Path(given)
    target = Path(os.environ.get("CARGO_TARGET_DIR", WORKSPACE / "target"))
    for profile in ("debug", "release"):
        candidate = target / profile / "quanta"
        if candidate.is_file():
            return candidate
    return None


class Cli:
    """Runs the `quanta` command."""

    def __init__(self, binary: Path):
        self.binary = binary

    def run(self, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *map(str, args)], capture_output=True, text=True, timeout=300
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"quanta {' '.join(map(str, args))} failed: {proc.stderr}")
        return proc

    def json(self, *args: object) -> object:
        return json.loads(self.run(*args).stdout)

    def error(self, *args: object) -> str:
        """The message of a failing command (its stderr after `error: `)."""
        proc = self.run(*args, check=False)
        assert proc.returncode != 0, f"quanta {args} succeeded"
        # The message may span lines (a `where` error points at its column).
        start = proc.stderr.rfind("error: ")
        assert start == 0 or (start > 0 and proc.stderr[start - 1] == "\n"), proc.stderr
        message = proc.stderr[start + len("error: ") :]
        return message[:-1] if message.endswith("\n") else message


@pytest.fixture(scope="session")
def cli() -> Cli:
    binary = _quanta_bin()
    if binary is None:
        pytest.skip("no quanta binary: build it (cargo build -p quanta-cli) or set QUANTA_BIN")
    return Cli(binary)


def _demo(cli: Cli, directory: Path, *args: object) -> Path:
    cli.run("demo", "--dir", directory, "--jobs", 1, *args)
    return directory


@pytest.fixture(scope="session")
def reference_demo(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference workload (JSON datasets), run and merged: repo/, demo.qb."""
    return _demo(cli, tmp_path_factory.mktemp("reference"), "--exposures", 3, "--detectors", 2)


FITS_DEMO = ("--pipeline", "fits", "--exposures", 2, "--detectors", 2, "--image-size", 96, "--sources", 4)


@pytest.fixture(scope="session")
def fits_demo(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FITS pipeline (ImageF raws and calexps, SourceCatalogs, JSON
    summaries), run and merged; read-only for the tests that use it."""
    return _demo(cli, tmp_path_factory.mktemp("fits"), *FITS_DEMO)


@pytest.fixture()
def writable_demo(cli: Cli, tmp_path: Path) -> Path:
    """A FITS demo of the test's own, to write into."""
    return _demo(cli, tmp_path / "demo", *FITS_DEMO)
