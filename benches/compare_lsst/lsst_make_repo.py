"""Create a daf_butler repo holding the scatter/gather reference workload.

The shared reference's make_repo.py, extended to put the registry on a
PostgreSQL server (the shared file is read-only and takes no such option):

Usage: python lsst_make_repo.py REPO N_EXPOSURES N_DETECTORS [--registry URL --namespace NAME]

With --registry, the repo's seed config is `registry: {db: URL, namespace: NAME}`
(daf_butler's PostgreSQL backend: psycopg2; the server needs the btree_gist
extension; the password comes from libpq's ~/.pgpass). Dimension records:
instrument Cam, band r, physical_filter Cam-r, one day_obs, group per exposure,
N detectors, N exposures; one `raw` dataset per (exposure, detector) in RUN
collection Cam/raw (a small dict, StructuredDataDict).
"""
import argparse, time
from lsst.daf.butler import Butler, Config, DatasetType

ap = argparse.ArgumentParser()
ap.add_argument("repo")
ap.add_argument("n_exp", type=int)
ap.add_argument("n_det", type=int)
ap.add_argument("--registry", help="postgresql://user@host:port/db")
ap.add_argument("--namespace", help="the PostgreSQL schema of this repo's tables")
a = ap.parse_args()
repo, n_exp, n_det = a.repo, a.n_exp, a.n_det
t0 = time.perf_counter()
seed = None
if a.registry:
    seed = Config({"registry": {"db": a.registry, "namespace": a.namespace}})
Butler.makeRepo(repo, config=seed)
butler = Butler.from_config(repo, writeable=True, run="Cam/raw")
reg = butler.registry
reg.insertDimensionData("instrument", {"name": "Cam", "detector_max": n_det, "exposure_max": 10**7, "visit_max": 10**7})
reg.insertDimensionData("physical_filter", {"instrument": "Cam", "name": "Cam-r", "band": "r"})
reg.insertDimensionData("day_obs", {"instrument": "Cam", "id": 20261126})
reg.insertDimensionData("detector", *[{"instrument": "Cam", "id": d, "full_name": f"D{d:03d}"} for d in range(n_det)])
reg.insertDimensionData("group", *[{"instrument": "Cam", "name": f"g{e}"} for e in range(n_exp)])
reg.insertDimensionData("exposure", *[
    {"instrument": "Cam", "id": e, "obs_id": f"e{e}", "physical_filter": "Cam-r", "group": f"g{e}",
     "day_obs": 20261126, "exposure_time": 30.0, "observation_type": "science"}
    for e in range(n_exp)])
raw = DatasetType("raw", ("instrument", "exposure", "detector"), "StructuredDataDict", universe=butler.dimensions)
reg.registerDatasetType(raw)
t1 = time.perf_counter()
for e in range(n_exp):
    for d in range(n_det):
        butler.put({"exposure": e, "detector": d, "pixels": [e * 1000 + d] * 16}, raw,
                   instrument="Cam", exposure=e, detector=d)
t2 = time.perf_counter()
print(f"make_repo: dimensions {t1-t0:.2f}s, put {n_exp*n_det} raws {t2-t1:.2f}s ({n_exp*n_det/(t2-t1):.0f}/s)")
