"""A Python task worker: ``python -m quanta._worker``.

Started by quanta's executor (one interpreter per worker slot), never by
hand. It reads framed requests on stdin (a 4-byte big-endian length and a
JSON body) and writes framed replies on the stdout it had at start; see
``runtime/src/python_task.rs`` for the protocol. Tasks are imported and
configured once (``init``), then run quantum after quantum (``run``):
inputs read and outputs written in this process through the bundle's
``QuantumBackedButler`` (the compiled ``_WorkerSession``), and what was
written and read sent back for the executor to journal.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import struct
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, BinaryIO

# Imported before stderr is captured: if the compiled module is missing or
# older than this file, the error reaches the executor's log of this process.
from ._quanta import _WorkerSession
from ._task import PipelineTask

# Lines of a quantum's output kept for the journal (the executor keeps the
# last LOG_TAIL_LINES of them).
_LOG_LINES = 200


class _Capture(io.TextIOBase):
    """sys.stdout and sys.stderr while tasks run: the last lines of a
    quantum's output, for its journal record."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        text = self._partial + s
        *lines, self._partial = text.split("\n")
        self._lines.extend(lines)
        if len(self._lines) > 2 * _LOG_LINES:
            del self._lines[:-_LOG_LINES]
        return len(s)

    def take(self) -> list[str]:
        lines = self._lines[-_LOG_LINES:]
        if self._partial:
            lines.append(self._partial)
        self._lines, self._partial = [], ""
        return lines


def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    body = stream.read(n)
    if len(body) < n:
        return None
    return body


def _write_frame(stream: BinaryIO, body: bytes) -> None:
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


def _load_task(session: Any, label: str) -> PipelineTask:
    target, config = session.task(label)
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ImportError(
            f"task `{label}`: cannot import `{module_name}` (for `{target}`): "
            f"{type(e).__name__}: {e} (is its directory on PYTHONPATH?)"
        ) from e
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ImportError(f"task `{label}`: module `{module_name}` has no `{class_name}`")
    if not (isinstance(cls, type) and issubclass(cls, PipelineTask)):
        raise TypeError(f"task `{label}`: `{target}` is not a subclass of quanta.PipelineTask")
    return cls(config=config, label=label)


def _run(session: Any, tasks: dict[str, PipelineTask], req: dict, capture: _Capture) -> bytes:
    cpu0 = time.process_time()
    q = session.begin(req["quantum"], req["replace_existing"])
    task = tasks[q.label]
    error = None
    task.quantum = q
    try:
        outputs = task.run(**q.inputs())
        if not isinstance(outputs, Mapping):
            raise TypeError(
                f"{type(task).__name__}.run returned {type(outputs).__name__}, "
                "not a mapping of output connection name to object"
            )
        for name, obj in outputs.items():
            q.put(name, obj)
    except BaseException as e:  # noqa: BLE001 - a task's SystemExit fails its quantum too
        # The exception first: one-line listings (`quanta report`) show it;
        # the whole traceback follows for the journal and `report --json`.
        error = (
            f"{type(e).__name__}: {e}\nPython traceback:\n" + traceback.format_exc().rstrip()
        )
    finally:
        task.quantum = None
    return q.finish(error, time.process_time() - cpu0, capture.take())


def main() -> int:
    try:
        return _serve()
    except BaseException:
        # A failure of the worker itself, not of a task (those are replies):
        # on the real stderr, which the executor shows when this process dies.
        traceback.print_exc(file=sys.__stderr__)
        return 1


def _serve() -> int:
    requests = sys.stdin.buffer
    # Replies go to the stdout this process was started with; fd 1 then
    # points at stderr, so nothing a task prints (from Python or C) can
    # corrupt the reply stream.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    capture = _Capture()
    sys.stdout = sys.stderr = capture
    logging.basicConfig(stream=capture, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    session = None
    tasks: dict[str, PipelineTask] = {}
    while True:
        body = _read_frame(requests)
        if body is None:
            return 0
        req = json.loads(body)
        op = req.get("op")
        if op == "init":
            try:
                session = _WorkerSession(req["bundle"])
                tasks = {label: _load_task(session, label) for label in req["labels"]}
                reply = {"status": "succeeded"}
            except BaseException as e:  # noqa: BLE001 - reported to the executor
                reply = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            capture.take()
            _write_frame(replies, json.dumps(reply).encode())
        elif op == "run" and session is not None:
            try:
                reply_body = _run(session, tasks, req, capture)
            except BaseException as e:  # noqa: BLE001 - the quantum fails, the worker goes on
                error = f"the worker could not run quantum {req.get('quantum')}: {type(e).__name__}: {e}"
                reply_body = json.dumps(
                    {"status": "failed", "error": error + "\n" + traceback.format_exc().rstrip()}
                ).encode()
            _write_frame(replies, reply_body)
        else:
            _write_frame(replies, json.dumps({"status": "failed", "error": f"unexpected request {op!r}"}).encode())


if __name__ == "__main__":
    sys.exit(main())
