#!/usr/bin/env python3
"""Per-quantum overhead of a Python task that does nothing: quanta's
in-process Python tasks against the LSST middleware's `pipetask run-qbb -j 1`,
same machine, same run.

Usage: bench.py [--quanta BIN] [--site DIR] [--lsst-venv DIR] [--workdir DIR]
                [--detectors 10] [--small 10] [--large 100] [--lsst-large 40]

The task reads one `raw` (a small JSON dict) and writes `{}` per
(exposure, detector). Each system runs a graph of `small` and one of `large`
exposures (× detectors quanta) in one process with one job; the per-quantum
overhead is the marginal cost, (T(large) − T(small)) / (quanta(large) −
quanta(small)), so start-up (interpreter, imports, bundle or graph load)
cancels out. Total time per quantum is printed too. A Rust task cannot
share the no-op's class, so quanta also times the reference `isr` as a Rust
task and as its Python twin: the cost of Python tasks over Rust tasks doing
the same work.

quanta side: `quanta demo` makes the repo (its raws), `quanta preflight`
the no-op pipeline, `quanta run --jobs 1` executes it (PYTHONPATH: the
installed wheel `--site` and examples/python). LSST side: make_repo.py,
`pipetask qgraph`, `pre-exec-init-qbb`, then `run-qbb -j 1` is timed.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# The LSST reference tasks and repo maker: beside the checkout (../shared), or
# beside the directory of worktrees.
REF = Path(os.environ.get("QUANTA_LSST_REFERENCE") or next(
    (p for p in (ROOT.parent / "shared" / "reference" / "lsst",
                 ROOT.parent.parent / "shared" / "reference" / "lsst") if p.is_dir()),
    ROOT.parent / "shared" / "reference" / "lsst"))

CONN = "dimensions: [instrument, exposure, detector], storage_class: Json"


def pipeline(kind):
    """One task per (exposure, detector): the Python no-op, or the reference
    isr as a Rust or a Python task."""
    if kind == "noop":
        head = "    python: reference_tasks:Nothing\n    config: {outputs: [out]}\n"
        out = f"out: {{dataset_type: noopOut, {CONN}}}"
    else:
        head = ("    class: examples.Isr\n" if kind == "rust-isr"
                else "    python: reference_tasks:Isr\n")
        out = f"post: {{dataset_type: postISRCCD, {CONN}}}"
    return (f"description: bench {kind}\ntasks:\n  t:\n{head}"
            f"    dimensions: [instrument, exposure, detector]\n"
            f"    inputs:\n      raw: {{dataset_type: raw, {CONN}}}\n"
            f"    outputs:\n      {out}\n")


LSST_TASK = '''
from lsst.pipe.base import PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct
from lsst.pipe.base import connectionTypes as cT

class NoopConnections(PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    raw = cT.Input(name="raw", dimensions=("instrument", "exposure", "detector"), storageClass="StructuredDataDict")
    out = cT.Output(name="noopOut", dimensions=("instrument", "exposure", "detector"), storageClass="StructuredDataDict")

class NoopConfig(PipelineTaskConfig, pipelineConnections=NoopConnections):
    pass

class NoopTask(PipelineTask):
    ConfigClass = NoopConfig
    _DefaultName = "noop"

    def run(self, raw):
        return Struct(out={})
'''


def run(cmd, log, env=None):
    """Runs cmd; returns (wall seconds, CPU seconds of it and every
    descendant it waited for: quanta's interpreters included)."""
    with open(log, "w") as out:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n--- {log}:\n{Path(log).read_text()[-3000:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def quanta_side(a, work, n_exp, kinds):
    w = work / f"quanta_{n_exp}"
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [a.site, str(ROOT / "examples" / "python")] if p)
    run([a.quanta, "demo", "--dir", w / "demo", "--exposures", n_exp, "--detectors", a.detectors, "--jobs", 1],
        w / "demo.log", env)
    repo = w / "demo" / "repo"
    times = {}
    for kind in kinds:
        yaml = w / f"{kind}.yaml"
        yaml.write_text(pipeline(kind))
        best = (float("inf"), float("inf"))
        # The best of --repeat runs, each into a RUN of its own (a rerun of
        # one bundle would skip what is done): the machine may be shared.
        for rep in range(a.repeat):
            bundle = w / f"{kind}-{rep}.qb"
            run([a.quanta, "preflight", repo, "--pipeline", yaml, "--input", "Cam/raw",
                 "--output-run", f"bench/{kind}/{rep}", "--bundle", bundle], w / f"{kind}-preflight.log", env)
            t = run([a.quanta, "run", bundle, "--jobs", 1], w / f"{kind}-run.log", env)
            best = (min(best[0], t[0]), min(best[1], t[1]))
        times[kind] = best
    return times


def lsst_side(a, work, n_exp):
    w = work / f"lsst_{n_exp}"
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    (w / "noop_tasks.py").write_text(LSST_TASK)
    (w / "noop.yaml").write_text("description: bench noop\ntasks:\n  noop:\n    class: noop_tasks.NoopTask\n")
    v = a.lsst_venv
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{w}{os.pathsep}{REF}"
    env["PATH"] = f"{v}/bin:" + env["PATH"]
    repo, graph = w / "repo", w / "g.qg"
    run([f"{v}/bin/python", REF / "make_repo.py", repo, n_exp, a.detectors], w / "make_repo.log", env)
    run([f"{v}/bin/pipetask", "qgraph", "-b", repo, "-i", "Cam/raw", "--output-run", "out/noop",
         "-p", w / "noop.yaml", "-d", "instrument='Cam'", "--save-qgraph", graph], w / "qgraph.log", env)
    run([f"{v}/bin/pipetask", "pre-exec-init-qbb", repo, graph], w / "init.log", env)
    return run([f"{v}/bin/pipetask", "run-qbb", repo, graph, "-j", "1"], w / "run.log", env)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quanta", default=str(ROOT / "target" / "release" / "quanta"))
    ap.add_argument("--site", default="", help="directory holding the installed quanta wheel (else it must be importable)")
    ap.add_argument("--lsst-venv", default=os.environ.get("LSST_VENV", "/tmp/lsstenv"))
    ap.add_argument("--workdir", default="/tmp/quanta-bench-python")
    ap.add_argument("--detectors", type=int, default=10)
    ap.add_argument("--small", type=int, default=10, help="exposures of the small graphs")
    ap.add_argument("--large", type=int, default=300, help="exposures of quanta's large graph")
    ap.add_argument("--lsst-large", type=int, default=40, help="exposures of LSST's large graph")
    ap.add_argument("--repeat", type=int, default=3, help="quanta runs per graph; the best is kept")
    ap.add_argument("--no-lsst", action="store_true")
    a = ap.parse_args()
    work = Path(a.workdir)
    kinds = ["noop", "rust-isr", "python-isr"]
    qs, ql = quanta_side(a, work, a.small, kinds), quanta_side(a, work, a.large, kinds)
    ns, nl = a.small * a.detectors, a.large * a.detectors

    def row(name, small, large, n_small, n_large):
        """Wall and CPU: total per quantum of the large graph, and marginal."""
        cells = []
        for i in (0, 1):
            cells += [large[i] / n_large * 1e3, (large[i] - small[i]) / (n_large - n_small) * 1e3]
        print(f"  {name:<12} {small[0]:8.3f} {large[0]:8.3f} " + " ".join(f"{c:9.3f}" for c in cells))
        return cells

    head = f"  {'task':<12} {'wall S':>8} {'wall L':>8} {'wall/q':>9} {'wall mg':>9} {'cpu/q':>9} {'cpu mg':>9}"
    print(f"quanta ({a.quanta}), run --jobs 1, S = {ns} and L = {nl} quanta (seconds; per quantum in ms, "
          f"total of L and marginal L-S; best of {a.repeat}):")
    print(head)
    cells = {k: row(k, qs[k], ql[k], ns, nl) for k in kinds}
    print(f"  Python over Rust (isr), CPU marginal: {cells['python-isr'][3] - cells['rust-isr'][3]:.3f} ms/quantum")
    if a.no_lsst:
        return
    if not (Path(a.lsst_venv) / "bin" / "pipetask").exists():
        sys.exit(f"no pipetask in {a.lsst_venv}: python3 -m venv {a.lsst_venv} && "
                 f"{a.lsst_venv}/bin/pip install lsst-daf-butler lsst-pipe-base lsst-ctrl-mpexec")
    ls, ll = lsst_side(a, work, a.small), lsst_side(a, work, a.lsst_large)
    lns, lnl = a.small * a.detectors, a.lsst_large * a.detectors
    print(f"LSST pipetask run-qbb -j 1, S = {lns} and L = {lnl} quanta:")
    print(head)
    lcells = row("noop", ls, ll, lns, lnl)
    q = cells["noop"]
    print(f"LSST / quanta (no-op): wall total {lcells[0] / q[0]:.0f}x, wall marginal {lcells[1] / q[1]:.0f}x, "
          f"CPU total {lcells[2] / q[2]:.0f}x, CPU marginal {lcells[3] / q[3]:.0f}x")

if __name__ == "__main__":
    main()
