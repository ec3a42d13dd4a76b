#!/usr/bin/env python3
"""quanta against the LSST middleware on the reference workload, same machine, same run.

Usage: compare.py [--exposures N] [--detectors M] [--per-process-exposures K]
                  [--workdir DIR] [--quanta BIN] [--lsst-venv DIR]

Stages, each timed as wall seconds and peak RSS (from /usr/bin/time):
  repo + ingest     LSST: make_repo.py (Butler.put of every raw)
                    quanta: repo create, dimensions insert, ingest --manifest (copy)
  preflight         pipetask qgraph            | quanta preflight
  exec in process   pipetask run-qbb -j 1      | quanta run --jobs 1
  exec per quantum  pipetask run-qbb -j 2 (a spawned process per quantum) on a
                    smaller graph              | quanta worker --quanta i, once per quantum
  merge             butler aggregate-graph     | quanta merge
and the graph/bundle size per quantum. Both systems' outputs are counted per
dataset type and must agree, so the comparison is like for like.
"""
import argparse, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
REF = Path(os.environ.get("QUANTA_LSST_REFERENCE", ROOT.parent / "shared" / "reference" / "lsst"))


def timed(cmd, log, env=None, cwd=None):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS MiB)."""
    with open(log, "w") as out:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M"] + [str(c) for c in cmd],
                           stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        wall = time.perf_counter() - t0
    text = Path(log).read_text()
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n--- {log}:\n{text[-3000:]}")
    m = re.findall(r"TIME ([0-9.]+) ([0-9]+)", text)
    rss = int(m[-1][1]) / 1024 if m else float("nan")
    return wall, rss


def lsst_env(venv):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REF)
    env["PATH"] = f"{venv}/bin:" + env["PATH"]
    return env


def ensure_lsst(venv):
    if not (Path(venv) / "bin" / "pipetask").exists():
        print(f"installing the LSST middleware into {venv} (a few minutes)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([f"{venv}/bin/pip", "install", "-q", "lsst-daf-butler", "lsst-pipe-base",
                        "lsst-ctrl-mpexec"], check=True)


def records(n_exp, n_det):
    return {
        "instrument": [{"name": "Cam", "detector_max": n_det, "exposure_max": 10**7, "visit_max": 10**7}],
        "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
        "day_obs": [{"instrument": "Cam", "id": 20261126}],
        "detector": [{"instrument": "Cam", "id": d, "full_name": f"D{d:03d}"} for d in range(n_det)],
        "group": [{"instrument": "Cam", "name": f"g{e}"} for e in range(n_exp)],
        "exposure": [{"instrument": "Cam", "id": e, "obs_id": f"e{e}", "physical_filter": "Cam-r",
                      "group": f"g{e}", "day_obs": 20261126, "exposure_time": 30.0,
                      "observation_type": "science"} for e in range(n_exp)],
    }


def write_raws(d, n_exp, n_det):
    """The raw files quanta ingests: the same content LSST's make_repo.py puts."""
    d.mkdir(parents=True, exist_ok=True)
    lines = ["path,instrument,exposure,detector"]
    for e in range(n_exp):
        for det in range(n_det):
            name = f"raw_{e}_{det}.json"
            (d / name).write_text(json.dumps({"exposure": e, "detector": det, "pixels": [e * 1000 + det] * 16}))
            lines.append(f"{d.resolve() / name},Cam,{e},{det}")
    (d / "manifest.csv").write_text("\n".join(lines) + "\n")
    (d / "records.json").write_text(json.dumps(records(n_exp, n_det)))


def quanta_counts(q, repo, run):
    out = subprocess.run([q, "query-datasets", repo, "--collections", run, "--json"],
                         check=True, capture_output=True, text=True).stdout
    counts = {}
    for d in json.loads(out):
        counts[d["dataset_type"]] = counts.get(d["dataset_type"], 0) + 1
    return counts


def lsst_counts(venv, repo, run):
    code = ("import sys, json; from lsst.daf.butler import Butler; b = Butler.from_config(sys.argv[1]);"
            "c = {}\n"
            "for t in ('postISRCCD', 'icExp', 'expSummary'):\n"
            "    c[t] = len(list(b.registry.queryDatasets(t, collections=sys.argv[2])))\n"
            "print(json.dumps(c))")
    out = subprocess.run([f"{venv}/bin/python", "-c", code, str(repo), run], check=True,
                         capture_output=True, text=True, env=lsst_env(venv)).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_quanta(q, work, n_exp, n_det, pipeline):
    w = work / "quanta"
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    write_raws(w / "raws", n_exp, n_det)
    repo, bundle = w / "repo", w / "g.qb"
    r = {}
    t1 = timed([q, "repo", "create", repo], w / "create.log")
    t2 = timed([q, "dimensions", "insert", repo, w / "raws" / "records.json"], w / "dims.log")
    t3 = timed([q, "dataset-type", "register", repo, "raw", "--dimensions", "instrument,exposure,detector",
                "--storage-class", "Json"], w / "dt.log")
    t4 = timed([q, "collection", "create", repo, "Cam/raw", "--type", "RUN"], w / "coll.log")
    t5 = timed([q, "ingest", repo, "--run", "Cam/raw", "--dataset-type", "raw", "--manifest",
                w / "raws" / "manifest.csv", "--transfer", "copy"], w / "ingest.log")
    r["repo + ingest"] = (sum(t[0] for t in (t1, t2, t3, t4, t5)), max(t[1] for t in (t1, t2, t3, t4, t5)))
    r["preflight"] = timed([q, "preflight", repo, "--pipeline", pipeline, "--input", "Cam/raw",
                            "--output-run", "out/run1", "--output", "out", "--bundle", bundle], w / "preflight.log")
    r["exec in process (-j 1)"] = timed([q, "run", bundle, "--jobs", "1"], w / "run.log")
    r["merge"] = timed([q, "merge", repo, bundle], w / "merge.log")
    n_quanta = n_exp * n_det * 2 + n_exp
    r["bytes per quantum"] = (bundle.stat().st_size / n_quanta, None)
    return r, quanta_counts(q, str(repo), "out/run1")


def run_quanta_per_process(q, work, n_exp, n_det, pipeline):
    w = work / "quanta_pp"
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    write_raws(w / "raws", n_exp, n_det)
    repo, bundle = w / "repo", w / "g.qb"
    for cmd in (["repo", "create", repo], ["dimensions", "insert", repo, w / "raws" / "records.json"],
                ["dataset-type", "register", repo, "raw", "--dimensions", "instrument,exposure,detector",
                 "--storage-class", "Json"], ["collection", "create", repo, "Cam/raw", "--type", "RUN"],
                ["ingest", repo, "--run", "Cam/raw", "--dataset-type", "raw", "--manifest", w / "raws" / "manifest.csv"],
                ["preflight", repo, "--pipeline", pipeline, "--input", "Cam/raw", "--output-run", "out/run1",
                 "--bundle", bundle]):
        subprocess.run([q] + [str(c) for c in cmd], check=True, capture_output=True)
    n_quanta = n_exp * n_det * 2 + n_exp
    t0 = time.perf_counter()
    peak = 0.0
    for i in range(n_quanta):  # bundle order is topological
        _, rss = timed([q, "worker", bundle, "--quanta", str(i)], w / "worker.log")
        peak = max(peak, rss)
    return (time.perf_counter() - t0) / n_quanta, peak


def run_lsst(venv, work, n_exp, n_det, jobs, tag):
    w = work / f"lsst_{tag}"
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    env = lsst_env(venv)
    repo, graph = w / "repo", w / "g.qg"
    r = {}
    r["repo + ingest"] = timed([f"{venv}/bin/python", REF / "make_repo.py", repo, n_exp, n_det], w / "make_repo.log", env)
    r["preflight"] = timed([f"{venv}/bin/pipetask", "qgraph", "-b", repo, "-i", "Cam/raw", "--output-run", "out/run1",
                            "-p", REF / "pipeline.yaml", "-d", "instrument='Cam'", "--save-qgraph", graph],
                           w / "qgraph.log", env)
    timed([f"{venv}/bin/pipetask", "pre-exec-init-qbb", repo, graph], w / "init.log", env)
    r["exec"] = timed([f"{venv}/bin/pipetask", "run-qbb", repo, graph, "-j", jobs], w / "run.log", env)
    r["merge"] = timed([f"{venv}/bin/butler", "aggregate-graph", graph, repo, "--register-dataset-types"],
                       w / "merge.log", env)
    n_quanta = n_exp * n_det * 2 + n_exp
    r["bytes per quantum"] = (graph.stat().st_size / n_quanta, None)
    return r, w / "repo"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exposures", type=int, default=30)
    ap.add_argument("--detectors", type=int, default=50)
    ap.add_argument("--per-process-exposures", type=int, default=2,
                    help="exposures of the smaller graph for the process-per-quantum stage (detectors: 5)")
    ap.add_argument("--workdir", default="/tmp/quanta-compare-lsst")
    ap.add_argument("--quanta", default=str(ROOT / "target" / "release" / "quanta"))
    ap.add_argument("--lsst-venv", default=os.environ.get("LSST_VENV", "/tmp/lsstenv"))
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    pipeline = ROOT / "examples" / "pipelines" / "reference.yaml"
    ensure_lsst(a.lsst_venv)
    n, m, pp = a.exposures, a.detectors, a.per_process_exposures
    print(f"workload: {n} exposures x {m} detectors = {n * m * 2 + n} quanta", file=sys.stderr)

    lsst, lsst_repo = run_lsst(a.lsst_venv, work, n, m, 1, "main")
    q, q_counts = run_quanta(a.quanta, work, n, m, pipeline)
    l_counts = lsst_counts(a.lsst_venv, lsst_repo, "out/run1")
    expected = {"postISRCCD": n * m, "icExp": n * m, "expSummary": n}
    for name, counts in (("LSST", l_counts), ("quanta", q_counts)):
        got = {k: counts.get(k, 0) for k in expected}
        if got != expected:
            sys.exit(f"{name} outputs differ from the expected {expected}: {got}")

    lsst_pp, _ = run_lsst(a.lsst_venv, work, pp, 5, 2, "pp")
    pp_quanta = pp * 5 * 2 + pp
    q_pp, q_pp_rss = run_quanta_per_process(a.quanta, work, pp, 5, pipeline)

    rows = [
        ("repo + ingest (s)", lsst["repo + ingest"], q["repo + ingest"]),
        ("preflight (s)", lsst["preflight"], q["preflight"]),
        ("exec in process, -j 1 (s)", lsst["exec"], q["exec in process (-j 1)"]),
        (f"exec, a process per quantum (s/quantum, {pp_quanta} quanta)",
         (lsst_pp["exec"][0] / pp_quanta, lsst_pp["exec"][1]), (q_pp, q_pp_rss)),
        ("merge (s)", lsst["merge"], q["merge"]),
        ("graph / bundle bytes per quantum", lsst["bytes per quantum"], q["bytes per quantum"]),
    ]
    print(f"\nreference workload {n} x {m} ({n * m * 2 + n} quanta); outputs agree: "
          f"{expected['postISRCCD']} postISRCCD, {expected['icExp']} icExp, {expected['expSummary']} expSummary\n")
    print("| stage | LSST | quanta | ratio (LSST / quanta) | peak RSS LSST / quanta (MiB) |")
    print("|---|---|---|---|---|")
    for name, (lv, lr), (qv, qr) in rows:
        fmt = (lambda v: f"{v:.4f}") if "per quantum" in name and "bytes" not in name else (lambda v: f"{v:.2f}")
        mem = f"{lr:.0f} / {qr:.0f}" if lr is not None and qr is not None else "–"
        print(f"| {name} | {fmt(lv)} | {fmt(qv)} | {lv / qv:.1f}× | {mem} |")


if __name__ == "__main__":
    main()
