"""Writes the reference workload's inputs for the benchmark scripts.

Usage: python3 benches/reference_data.py DIR N_EXP N_DET [--file-per-raw]

DIR/records.json: the dimension records of N_EXP exposures x N_DET
detectors (instrument Cam, one day_obs, a group per exposure);
DIR/raw/ and DIR/manifest.csv: the raws to ingest, one manifest line per
(exposure, detector). By default one raw file per detector is shared by
every exposure (file creation stays out of the benchmark; with
`ingest --transfer symlink` each dataset is its own symlink);
--file-per-raw writes a file of its own for every raw.
"""
import json
import os
import sys


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    file_per_raw = "--file-per-raw" in sys.argv[1:]
    d, ne, nd = args[0], int(args[1]), int(args[2])
    os.makedirs(f"{d}/raw", exist_ok=True)
    rec = {"instrument": [{"name": "Cam", "detector_max": nd}],
           "physical_filter": [{"instrument": "Cam", "name": "Cam-r", "band": "r"}],
           "day_obs": [{"instrument": "Cam", "id": 20261126}],
           "group": [{"instrument": "Cam", "name": f"g{e}"} for e in range(ne)],
           "detector": [{"instrument": "Cam", "id": i, "full_name": f"D{i:03d}"} for i in range(nd)],
           "exposure": [{"instrument": "Cam", "id": e, "physical_filter": "Cam-r", "day_obs": 20261126,
                         "group": f"g{e}", "exposure_time": 30.0, "obs_id": f"e{e}",
                         "observation_type": "science"} for e in range(ne)]}
    with open(f"{d}/records.json", "w") as f:
        json.dump(rec, f)
    with open(f"{d}/manifest.csv", "w") as m:
        m.write("path,instrument,exposure,detector\n")
        if not file_per_raw:
            for i in range(nd):
                with open(f"{d}/raw/raw_{i}.json", "w") as f:
                    json.dump({"detector": i, "pixels": [i] * 16}, f)
        for e in range(ne):
            for i in range(nd):
                p = f"raw/raw_{e}_{i}.json" if file_per_raw else f"raw/raw_{i}.json"
                if file_per_raw:
                    with open(f"{d}/{p}", "w") as f:
                        json.dump({"exposure": e, "detector": i, "pixels": [e * 1000 + i] * 16}, f)
                m.write(f"{p},Cam,{e},{i}\n")


if __name__ == "__main__":
    main()
