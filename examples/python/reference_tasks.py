"""The reference workload's three tasks in Python (``quanta.PipelineTask``).

The same computations as the Rust tasks ``examples.Isr``,
``examples.Characterize`` and ``examples.Summarize``
(``examples/src/tasks.rs``), in the same floating-point order, so their
outputs are byte-identical (quanta writes a JSON dataset compact with sorted
keys whichever language made it). Pipeline: ``examples/pipelines/
reference_python.yaml``; this directory must be on the workers' PYTHONPATH.

``config`` may hold test hooks, each a data ID mapping or a list of them:
``fail_on`` (a matching quantum raises), ``exit_on`` (it ends its
interpreter with ``os._exit(3)``), ``kill_on`` (it SIGKILLs its
interpreter), ``hang_on`` (it sleeps for ten minutes: a hung task, for
timeouts).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import quanta


def _matches(config: dict[str, Any], key: str, data_id: dict[str, Any]) -> bool:
    wanted = config.get(key) or []
    if isinstance(wanted, dict):
        wanted = [wanted]
    return any(all(data_id.get(k) == v for k, v in m.items()) for m in wanted)


class _ReferenceTask(quanta.PipelineTask):
    def hooks(self) -> None:
        data_id = self.quantum.data_id
        if _matches(self.config, "hang_on", data_id):
            time.sleep(600)
        if _matches(self.config, "fail_on", data_id):
            raise RuntimeError(f"configured to fail on {data_id} (fail_on)")
        if _matches(self.config, "exit_on", data_id):
            os._exit(3)
        if _matches(self.config, "kill_on", data_id):
            os.kill(os.getpid(), signal.SIGKILL)


def _pixels(connection: str, obj: Any) -> list:
    if not isinstance(obj, dict) or not isinstance(obj.get("pixels"), list):
        raise ValueError(f"invalid input {connection}: no `pixels` array")
    return obj["pixels"]


class Isr(_ReferenceTask):
    """raw → postISRCCD: every pixel − 1, and ``isr: true``."""

    def run(self, raw):
        self.hooks()
        post = dict(raw)
        post["pixels"] = [p - 1 for p in _pixels("raw", raw)]
        post["isr"] = True
        return {"post": post}


class Characterize(_ReferenceTask):
    """postISRCCD → icExp, adding ``psf`` = the mean of the pixels."""

    def run(self, post):
        self.hooks()
        pixels = _pixels("post", post)
        if not pixels:
            raise ValueError("invalid input post: `pixels` is empty; the mean is undefined")
        total = 0.0
        for p in pixels:  # f64 accumulation in pixel order, as the Rust task
            total += float(p)
        return {"icexp": {**post, "psf": total / len(pixels)}}


class Summarize(_ReferenceTask):
    """Every icExp of an exposure → expSummary ``{n, psf: [...]}``, psf in
    detector order."""

    def run(self, icexps):
        self.hooks()
        detectors = [d["detector"] for d in self.quantum.input_data_ids("icexps")]
        psf = [icexp["psf"] for _, icexp in sorted(zip(detectors, icexps), key=lambda t: t[0])]
        print(f"summarizing {len(psf)} icExp of {self.quantum.data_id}")
        return {"summary": {"n": len(psf), "psf": psf}}


class Nothing(quanta.PipelineTask):
    """Writes ``{}`` and reads nothing: the per-quantum overhead bench."""

    def run(self, **inputs):
        return {name: {} for name in self.config.get("outputs", ["out"])}
