#!/usr/bin/env python3
"""The reference workload's `characterize` as an external command task.

Usage: characterize.py MANIFEST

quanta writes a JSON manifest of the quantum: `inputs` and `outputs` map a
connection name to a list of {id, dataset_type, data_id, path}. Read the
input `post` (a postISRCCD JSON object), add `psf` = mean of its pixels, and
write the result to the `path` given for output `icexp` (a temporary name
beside the final file; quanta moves it into place after checking it). The
JSON is written compact with sorted keys, byte-identical to the Rust task.
"""
import json
import sys


def main(argv):
    if len(argv) != 2:
        print("usage: characterize.py MANIFEST", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        manifest = json.load(f)
    (post_ref,) = manifest["inputs"]["post"]
    (out_ref,) = manifest["outputs"]["icexp"]
    with open(post_ref["path"]) as f:
        post = json.load(f)
    pixels = post["pixels"]
    if not pixels:
        print(f"{post_ref['data_id']}: no pixels", file=sys.stderr)
        return 1
    icexp = {**post, "psf": sum(pixels) / len(pixels)}
    with open(out_ref["path"], "w") as f:
        f.write(json.dumps(icexp, sort_keys=True, separators=(",", ":")))
    print(f"characterize {manifest['data_id']}: psf {icexp['psf']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
