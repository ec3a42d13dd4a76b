"""quanta.PipelineTask and the worker's framing, without a repository (the
tasks run by real workers are tested in cli/tests/python_tasks.rs)."""

from __future__ import annotations

import io

import pytest

import quanta
from quanta import _worker


def test_a_task_gets_its_config_as_a_dict_of_its_own():
    given = {"threshold": 5}
    task = quanta.PipelineTask(config=given, label="detect")
    assert task.config == {"threshold": 5} and task.label == "detect"
    task.config["threshold"] = 6
    assert given == {"threshold": 5}
    assert quanta.PipelineTask().config == {}


def test_run_must_be_implemented():
    with pytest.raises(NotImplementedError, match="PipelineTask.run"):
        quanta.PipelineTask().run()


def test_frames_round_trip_and_a_cut_stream_ends():
    out = io.BytesIO()
    _worker._write_frame(out, b'{"op": "run"}')
    _worker._write_frame(out, b"")
    data = out.getvalue()
    assert data[:4] == (13).to_bytes(4, "big")
    stream = io.BytesIO(data)
    assert _worker._read_frame(stream) == b'{"op": "run"}'
    assert _worker._read_frame(stream) == b""
    assert _worker._read_frame(stream) is None
    assert _worker._read_frame(io.BytesIO(data[:8])) is None


def test_the_capture_keeps_the_last_lines_of_a_quantum():
    c = _worker._Capture()
    c.write("a\nb")
    c.write("c\n")
    c.write("partial")
    assert c.take() == ["a", "bc", "partial"]
    assert c.take() == []
