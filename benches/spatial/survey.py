"""Synthetic survey records for benches/spatial/run.sh.

    survey.py insert DIR N_VISITS N_DETECTORS   random pointings over the sky,
                                                0.2° detectors (grid)
    survey.py coadd  DIR N_VISITS N_DETECTORS   pointings in a 30°×30° field,
                                                0.5° detectors, calexp manifest

Detector corners are points of the visit's tangent plane (gnomonic
projection about the pointing), so every detector is an exact convex
polygon and neighbouring detectors share edges.
"""
import json
import math
import os
import random
import sys


def deproject(ra0, dec0, x, y):
    """Tangent-plane (x, y) in degrees about (ra0, dec0) -> (ra, dec)."""
    a0, d0 = math.radians(ra0), math.radians(dec0)
    xi, eta = math.radians(x), math.radians(y)
    den = math.cos(d0) - eta * math.sin(d0)
    ra = a0 + math.atan2(xi, den)
    dec = math.atan2(math.sin(d0) + eta * math.cos(d0), math.hypot(xi, den))
    return [round(math.degrees(ra) % 360.0, 9), round(math.degrees(dec), 9)]


def detector_polygons(ra0, dec0, n_det, size):
    side = math.ceil(math.sqrt(n_det))
    half = side * size / 2
    out = []
    for k in range(n_det):
        i, j = k % side, k // side
        x0, y0 = -half + i * size, -half + j * size
        corners = [(x0, y0), (x0 + size, y0), (x0 + size, y0 + size), (x0, y0 + size)]
        out.append({"polygon": [deproject(ra0, dec0, x, y) for x, y in corners]})
    return out


def main():
    mode, d, n_visits, n_det = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(17)
    size = 0.2 if mode == "insert" else 0.5
    base = {
        "instrument": [{"name": "Cam", "detector_max": n_det, "visit_max": n_visits}],
        "physical_filter": [
            {"instrument": "Cam", "name": "Cam-g", "band": "g"},
            {"instrument": "Cam", "name": "Cam-r", "band": "r"},
        ],
        "day_obs": [{"instrument": "Cam", "id": 20261126}],
        "detector": [{"instrument": "Cam", "id": i} for i in range(n_det)],
        "visit": [],
    }
    visit_detectors = []
    for v in range(n_visits):
        if mode == "insert":
            ra, dec = rng.uniform(0, 360), math.degrees(math.asin(rng.uniform(-0.95, 0.95)))
        else:
            ra, dec = rng.uniform(135, 165), rng.uniform(-13, 17)
        polys = detector_polygons(ra, dec, n_det, size)
        side = math.ceil(math.sqrt(n_det)) * size / 2
        outline = [deproject(ra, dec, x, y) for x, y in [(-side, -side), (side, -side), (side, side), (-side, side)]]
        base["visit"].append({
            "instrument": "Cam", "id": v, "physical_filter": "Cam-g" if v % 2 else "Cam-r",
            "day_obs": 20261126, "region": {"polygon": outline},
        })
        for det, poly in enumerate(polys):
            visit_detectors.append({"instrument": "Cam", "visit": v, "detector": det, "region": poly})
    json.dump(base, open(os.path.join(d, "base.json"), "w"))
    json.dump({"visit_detector": visit_detectors}, open(os.path.join(d, "visit_detectors.json"), "w"))
    if mode == "coadd":
        # One shared file per detector; each dataset is its own symlink.
        os.makedirs(os.path.join(d, "calexp"), exist_ok=True)
        with open(os.path.join(d, "manifest.csv"), "w") as m:
            m.write("path,instrument,visit,detector\n")
            for det in range(n_det):
                with open(os.path.join(d, "calexp", f"calexp_{det}.json"), "w") as f:
                    json.dump({"detector": det}, f)
            for v in range(n_visits):
                for det in range(n_det):
                    m.write(f"calexp/calexp_{det}.json,Cam,{v},{det}\n")


main()
