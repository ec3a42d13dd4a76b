#!/usr/bin/env python3
"""quanta against the LSST middleware with both registries on one PostgreSQL server.

Usage: postgres.py --registry postgresql://user@host:port/db [--exposures N] [--detectors M]
                   [--lsst-jobs J] [--workdir DIR] [--quanta BIN] [--lsst-venv DIR]
                   [--stages lsst,quanta,repeat,report] [--preflight-repeats K] [--keep]

Both repositories get a fresh schema (namespace) on the same server and database:
  LSST    a daf_butler repo whose seed config is `registry: {db: URL, namespace: NAME}`
          (psycopg2; the server's database needs the btree_gist extension)
  quanta  `quanta repo create REPO --registry URL --namespace NAME`
The password comes from libpq's ~/.pgpass on both sides. Timed, like compare.py:
  repo + ingest  make_repo.py (Butler.put of every raw)  | repo create, dimensions insert, ingest
  preflight      pipetask qgraph                         | quanta preflight
  merge          butler aggregate-graph                  | quanta merge
after executing each graph (pipetask run-qbb -j J | quanta run --jobs 2: timed but not
compared, execution does not touch the registry). The outputs are counted per dataset
type in both registries and must agree. Each side's timings are kept in
WORKDIR/{lsst,quanta}.json, so the stages can run separately (--stages). A single
preflight varies by 2x on a shared machine, so the repeat stage runs both preflights
again K times, alternating, on the same repos (each into a new output run), and the
report stage prints the table with their medians. Schemas made by this invocation are
dropped at its end unless --keep; `repeat` needs both repos kept from earlier stages:
drop them with `psql URL -c 'DROP SCHEMA name CASCADE'` (names in WORKDIR/*.json).
"""
import argparse, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402  (timed, lsst_env, write_raws, quanta_counts, REF, ROOT)

ROOT = compare.ROOT
# The reference workload's LSST tasks and pipeline are read from the shared
# reference (compare.REF, as compare.py does); only the repo maker is our own,
# as it must put the registry on the server.
MAKE_REPO = HERE / "lsst_make_repo.py"


def sqlalchemy_url(url):
    """daf_butler hands the URL to SQLAlchemy, which picks psycopg (3) for a bare
    postgresql:// here; name the installed driver, psycopg2."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", url)


def psql(url, sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", "SET client_min_messages = warning; " + sql], check=True)


def run_lsst(a, work, ns):
    venv, n, m = a.lsst_venv, a.exposures, a.detectors
    w = work / "lsst"
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    env = compare.lsst_env(venv)
    repo, graph = w / "repo", w / "g.qg"
    r = {"namespace": ns}
    r["repo + ingest"] = compare.timed([f"{venv}/bin/python", MAKE_REPO, repo, n, m,
                                        "--registry", sqlalchemy_url(a.registry), "--namespace", ns],
                                       w / "make_repo.log", env)
    print(f"LSST repo + ingest: {r['repo + ingest'][0]:.1f} s", file=sys.stderr, flush=True)
    r["preflight"] = compare.timed([f"{venv}/bin/pipetask", "qgraph", "-b", repo, "-i", "Cam/raw",
                                    "--output-run", "out/run1", "-p", compare.REF / "pipeline.yaml",
                                    "-d", "instrument='Cam'", "--save-qgraph", graph], w / "qgraph.log", env)
    print(f"LSST preflight: {r['preflight'][0]:.1f} s", file=sys.stderr, flush=True)
    compare.timed([f"{venv}/bin/pipetask", "pre-exec-init-qbb", repo, graph], w / "init.log", env)
    r["exec"] = compare.timed([f"{venv}/bin/pipetask", "run-qbb", repo, graph, "-j", a.lsst_jobs],
                              w / "run.log", env)
    print(f"LSST run-qbb -j {a.lsst_jobs}: {r['exec'][0]:.1f} s", file=sys.stderr, flush=True)
    r["merge"] = compare.timed([f"{venv}/bin/butler", "aggregate-graph", graph, repo, "--register-dataset-types"],
                               w / "merge.log", env)
    print(f"LSST merge: {r['merge'][0]:.1f} s", file=sys.stderr, flush=True)
    r["counts"] = compare.lsst_counts(venv, repo, "out/run1")
    r["bytes per quantum"] = graph.stat().st_size / (n * m * 2 + n)
    return r


def run_quanta(a, work, ns):
    q, n, m = a.quanta, a.exposures, a.detectors
    pipeline = ROOT / "examples" / "pipelines" / "reference.yaml"
    w = work / "quanta"
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    compare.write_raws(w / "raws", n, m)
    repo, bundle = w / "repo", w / "g.qb"
    r = {"namespace": ns}
    steps = [
        [q, "repo", "create", repo, "--registry", a.registry, "--namespace", ns],
        [q, "dimensions", "insert", repo, w / "raws" / "records.json"],
        [q, "dataset-type", "register", repo, "raw", "--dimensions", "instrument,exposure,detector",
         "--storage-class", "Json"],
        [q, "collection", "create", repo, "Cam/raw", "--type", "RUN"],
        [q, "ingest", repo, "--run", "Cam/raw", "--dataset-type", "raw", "--manifest",
         w / "raws" / "manifest.csv", "--transfer", "copy"],
    ]
    t = [compare.timed(c, w / f"setup{i}.log") for i, c in enumerate(steps)]
    r["repo + ingest"] = (sum(x[0] for x in t), max(x[1] for x in t))
    r["preflight"] = compare.timed([q, "preflight", repo, "--pipeline", pipeline, "--input", "Cam/raw",
                                    "--output-run", "out/run1", "--output", "out", "--bundle", bundle],
                                   w / "preflight.log")
    r["exec"] = compare.timed([q, "run", bundle, "--jobs", "2"], w / "run.log")
    r["merge"] = compare.timed([q, "merge", repo, bundle], w / "merge.log")
    r["counts"] = compare.quanta_counts(q, str(repo), "out/run1")
    r["bytes per quantum"] = bundle.stat().st_size / (n * m * 2 + n)
    return r


def preflight_repeats(a, work):
    """Preflight again on both kept repos, alternating LSST and quanta, each into a new
    output run: on a shared machine a single run of each varies by 2x with the load."""
    env = compare.lsst_env(a.lsst_venv)
    pipeline = ROOT / "examples" / "pipelines" / "reference.yaml"
    lw, qw = work / "lsst", work / "quanta"
    times = {"LSST": [], "quanta": []}
    for i in range(a.preflight_repeats):
        run = f"out/again{i}"
        times["LSST"].append(compare.timed(
            [f"{a.lsst_venv}/bin/pipetask", "qgraph", "-b", lw / "repo", "-i", "Cam/raw", "--output-run", run,
             "-p", compare.REF / "pipeline.yaml", "-d", "instrument='Cam'", "--save-qgraph", lw / f"again{i}.qg"],
            lw / f"qgraph_again{i}.log", env))
        times["quanta"].append(compare.timed(
            [a.quanta, "preflight", qw / "repo", "--pipeline", pipeline, "--input", "Cam/raw",
             "--output-run", run, "--bundle", qw / f"again{i}.qb"], qw / f"preflight_again{i}.log"))
        print(f"preflight again {i}: LSST {times['LSST'][-1][0]:.2f} s, quanta {times['quanta'][-1][0]:.2f} s",
              file=sys.stderr, flush=True)
    return times


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def report(a, work):
    n, m = a.exposures, a.detectors
    lsst = json.loads((work / "lsst.json").read_text())
    q = json.loads((work / "quanta.json").read_text())
    expected = {"postISRCCD": n * m, "icExp": n * m, "expSummary": n}
    for name, r in (("LSST", lsst), ("quanta", q)):
        got = {k: r["counts"].get(k, 0) for k in expected}
        if got != expected:
            sys.exit(f"{name} outputs differ from the expected {expected}: {got}")
    print(f"\nreference workload {n} x {m} ({n * m * 2 + n} quanta), both registries on {a.registry} "
          f"(schemas {lsst['namespace']}, {q['namespace']}); outputs agree: {n * m} postISRCCD, "
          f"{n * m} icExp, {n} expSummary\n")
    print("| stage | LSST | quanta | ratio (LSST / quanta) | peak RSS LSST / quanta (MiB) |")
    print("|---|---|---|---|---|")
    for name, key in (("repo + ingest (s)", "repo + ingest"), ("preflight (s)", "preflight"),
                      (f"exec (s; not compared: LSST run-qbb -j {a.lsst_jobs}, quanta run --jobs 2)", "exec"),
                      ("merge (s)", "merge")):
        (lv, lr), (qv, qr) = lsst[key], q[key]
        print(f"| {name} | {lv:.2f} | {qv:.2f} | {lv / qv:.1f}× | {lr:.0f} / {qr:.0f} |")
    again = work / "repeats.json"
    if again.exists():
        t = json.loads(again.read_text())
        lv, qv = median([x[0] for x in t["LSST"]]), median([x[0] for x in t["quanta"]])
        lr, qr = max(x[1] for x in t["LSST"]), max(x[1] for x in t["quanta"])
        rng = lambda xs: f"{min(x[0] for x in xs):.2f}–{max(x[0] for x in xs):.2f}"
        print(f"| preflight again, median of {len(t['LSST'])} alternating (s; LSST {rng(t['LSST'])}, "
              f"quanta {rng(t['quanta'])}) | {lv:.2f} | {qv:.2f} | {lv / qv:.1f}× | {lr:.0f} / {qr:.0f} |")
    lb, qb = lsst["bytes per quantum"], q["bytes per quantum"]
    print(f"| graph / bundle bytes per quantum | {lb:.1f} | {qb:.1f} | {lb / qb:.1f}× | – |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", required=True, help="postgresql://user@host:port/db")
    ap.add_argument("--exposures", type=int, default=30)
    ap.add_argument("--detectors", type=int, default=50)
    ap.add_argument("--lsst-jobs", type=int, default=1,
                    help="processes of pipetask run-qbb (not compared; -j 2 spawns a process per quantum: slower here)")
    ap.add_argument("--workdir", default="/tmp/quanta-compare-lsst-pg")
    ap.add_argument("--quanta", default=str(ROOT / "target" / "release" / "quanta"))
    ap.add_argument("--lsst-venv", default=os.environ.get("LSST_VENV", "/tmp/lsstenv"))
    ap.add_argument("--stages", default="lsst,quanta,repeat,report",
                    help="comma-separated: lsst, quanta (each makes its repo and times it), repeat (both "
                         "preflights again, alternating), report (the table from WORKDIR's JSON files)")
    ap.add_argument("--preflight-repeats", type=int, default=5,
                    help="preflights again of each side, alternating, for the 'repeat' stage")
    ap.add_argument("--keep", action="store_true", help="keep both schemas")
    a = ap.parse_args()
    if not re.match(r"^postgres(ql)?://", a.registry):
        print(f"postgres.py: --registry must be a postgresql:// URL, got {a.registry!r}", file=sys.stderr)
        sys.exit(2)
    stages = a.stages.split(",")
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    compare.ensure_lsst(a.lsst_venv)
    tag = f"{os.getpid()}_{int(time.time())}"
    print(f"workload: {a.exposures} x {a.detectors} = {a.exposures * a.detectors * 2 + a.exposures} quanta",
          file=sys.stderr)
    made = []
    try:
        if "lsst" in stages:
            ns = f"bench_lsst_{tag}"
            made.append(ns)
            (work / "lsst.json").write_text(json.dumps(run_lsst(a, work, ns)))
        if "quanta" in stages:
            ns = f"bench_quanta_{tag}"
            made.append(ns)
            (work / "quanta.json").write_text(json.dumps(run_quanta(a, work, ns)))
        if "repeat" in stages:
            (work / "repeats.json").write_text(json.dumps(preflight_repeats(a, work)))
        if "report" in stages:
            report(a, work)
    finally:
        if not a.keep:
            for ns in made:
                psql(a.registry, f'DROP SCHEMA IF EXISTS "{ns}" CASCADE')


if __name__ == "__main__":
    main()
