#!/usr/bin/env python3
"""Writes the seeds that need encoding, from real files:

- a bundle (`*.qb`) becomes a `bundle_blocks` seed: its block payloads,
  decompressed, in the target's encoding (per block `flags u8 | count u32 LE
  | len u32 LE | payload`, flags bit 0 = store zstd-compressed);
- a journal becomes a `journal` seed: its record payloads joined by
  `\\n--\\n` (the target frames and checksums each one again).

Usage (from fuzz/): ./make_seeds.py FILE...   Needs the `zstd` command.
"""
import os
import struct
import subprocess
import sys


def bundle_seed(data):
    index_offset, index_len = struct.unpack_from("<QQ", data, len(data) - 40)
    out = b""
    for e in range(index_offset, index_offset + index_len, 40):
        kind, codec = data[e], data[e + 1]
        count, raw_len, offset, length = struct.unpack_from("<IIQQ", data, e + 8)
        stored = data[offset + 16 : offset + length]
        if codec == 1:
            payload = subprocess.run(
                ["zstd", "-d", "-c"], input=stored, check=True, capture_output=True
            ).stdout
        else:
            payload = stored
        assert len(payload) == raw_len, (kind, len(payload), raw_len)
        out += struct.pack("<BII", codec, count, len(payload)) + payload
    return out


def journal_seed(data):
    payloads, at = [], 0
    while at + 12 <= len(data):
        (length,) = struct.unpack_from("<I", data, at)
        payloads.append(data[at + 12 : at + 12 + length])
        at += 12 + length
    return b"\n--\n".join(payloads)


for path in sys.argv[1:]:
    data = open(path, "rb").read()
    if data.startswith(b"QUANTAB\0"):
        target, seed = "bundle_blocks", bundle_seed(data)
    else:
        target, seed = "journal", journal_seed(data)
    os.makedirs(f"seeds/{target}", exist_ok=True)
    name = f"seeds/{target}/{os.path.basename(path)}"
    open(name, "wb").write(seed)
    print(f"{name}: {len(seed)} bytes")
