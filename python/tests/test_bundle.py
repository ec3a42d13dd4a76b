"""quanta.Bundle against `quanta bundle show --json` on the same bundle."""

from __future__ import annotations

import pytest

import quanta


def test_show_equals_the_cli(cli, reference_demo, fits_demo):
    for demo in (reference_demo, fits_demo):
        path = demo / "demo.qb"
        assert quanta.Bundle(path).show() == cli.json("bundle", "show", path, "--json")


def test_header_tasks_and_clusters(cli, reference_demo):
    path = reference_demo / "demo.qb"
    bundle = quanta.Bundle(path)
    shown = cli.json("bundle", "show", path, "--json")
    assert bundle.header == shown["header"]
    assert bundle.id == shown["header"]["bundle_id"]
    assert bundle.output_run == "demo/run1"
    assert bundle.output_collection == "demo"
    assert bundle.input_collections == shown["header"]["input_collections"]
    assert bundle.tasks == shown["tasks"]
    assert bundle.quanta_per_task() == {t["label"]: t["quanta"] for t in shown["tasks"]}
    assert len(bundle) == shown["header"]["n_quanta"] == sum(t["quanta"] for t in shown["tasks"])
    clusters = bundle.clusters
    assert [(c["name"], len(c["quanta"])) for c in clusters] == [(c["name"], c["quanta"]) for c in shown["clusters"]]
    assert sorted(i for c in clusters for i in c["quanta"]) == list(range(len(bundle)))
    bundle.verify()
    assert "quanta" in repr(bundle)


def test_quanta_are_in_topological_order_and_their_outputs_were_merged(reference_demo):
    bundle = quanta.Bundle(reference_demo / "demo.qb")
    butler = quanta.Butler(reference_demo / "repo", collections="demo/run1")
    merged = {r["id"]: r for r in butler.query_datasets()}
    quanta_list = list(bundle)
    assert [q["index"] for q in quanta_list] == list(range(len(bundle)))
    labels = {t["label"] for t in bundle.tasks}
    outputs = 0
    for q in quanta_list:
        assert q["task"] in labels
        assert all(u < q["index"] for u in q["upstream"])
        assert q["inputs"], q
        for refs in q["outputs"].values():
            for ref in refs:
                outputs += 1
                assert merged[ref["id"]]["data_id"] == ref["data_id"]
                assert merged[ref["id"]]["stored"]["path"] == ref["path"]
                assert ref["run"] == "demo/run1"
    assert outputs == len(merged)
    assert bundle[-1] == quanta_list[-1] == bundle.quantum(len(bundle) - 1)
    first_task = bundle.tasks[0]
    assert len(bundle.quanta_of(first_task["label"])) == first_task["quanta"]
    with pytest.raises(IndexError):
        bundle[len(bundle)]
    with pytest.raises(quanta.QuantaError, match="no task `nosuch`"):
        bundle.quanta_of("nosuch")


def test_a_damaged_bundle_is_refused_with_the_cli_message(cli, reference_demo, tmp_path):
    data = bytearray((reference_demo / "demo.qb").read_bytes())
    truncated = tmp_path / "truncated.qb"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(quanta.QuantaError) as e:
        quanta.Bundle(truncated)
    assert str(e.value) == cli.error("bundle", "show", truncated)
    flipped = tmp_path / "flipped.qb"
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(quanta.QuantaError) as e:
        quanta.Bundle(flipped).show()
    assert str(e.value) == cli.error("bundle", "show", flipped)
    with pytest.raises(quanta.QuantaError) as e:
        quanta.Bundle(tmp_path / "missing.qb")
    assert str(e.value) == cli.error("bundle", "show", tmp_path / "missing.qb")


def test_the_type_stubs_name_what_the_compiled_module_has():
    import ast
    from pathlib import Path

    from quanta import _quanta

    stub = ast.parse((Path(quanta.__file__).parent / "_quanta.pyi").read_text())
    for node in stub.body:
        if isinstance(node, ast.ClassDef):
            runtime = getattr(_quanta, node.name)
            members = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            members.discard("__init__")
            missing = [m for m in members if not hasattr(runtime, m)]
            assert not missing, f"{node.name}: {missing}"
            undocumented = [m for m in dir(runtime) if not m.startswith("_") and m not in members]
            assert not undocumented, f"{node.name}: {undocumented}"
