"""quanta.Butler against the `quanta` command on the same repositories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import quanta

CAM0 = {"instrument": "Cam", "exposure": 0, "detector": 0}


def file_of(repo: Path, ref: dict) -> Path:
    return repo / "datastore" / ref["stored"]["path"]


def test_the_package_is_the_installed_wheel_not_the_source_tree():
    # The compiled module sits beside the Python files it was installed with.
    assert quanta.Butler.__module__ == "quanta"
    assert Path(quanta.__file__).parent.joinpath("py.typed").is_file()
    assert quanta.__version__


# -- get ---------------------------------------------------------------------


def test_get_of_a_json_dataset_equals_the_cli(cli, reference_demo):
    repo = reference_demo / "repo"
    butler = quanta.Butler(repo, collections=["demo"])
    for exposure in range(3):
        from_cli = cli.json(
            "get", repo, "expSummary", "--data-id", f"instrument=Cam,exposure={exposure}", "--collections", "demo"
        )
        assert butler.get("expSummary", instrument="Cam", exposure=exposure) == from_cli


def test_every_form_of_data_id_finds_the_same_dataset(reference_demo):
    butler = quanta.Butler(reference_demo / "repo", collections="demo")
    expected = butler.get("icExp", CAM0)
    assert butler.get("icExp", "instrument=Cam,exposure=0,detector=0") == expected
    assert butler.get("icExp", instrument="Cam", exposure=0, detector=0) == expected
    assert butler.get("icExp", {"instrument": "Cam"}, exposure="0", detector=0) == expected
    assert butler.get("icExp", CAM0, collections=["demo/run1", "Cam/raw"]) == expected
    assert isinstance(expected, dict)


def test_an_image_is_the_array_astropy_reads_from_the_same_file(fits_demo):
    repo = fits_demo / "repo"
    butler = quanta.Butler(repo, collections="demo")
    for ref in butler.query_datasets(["raw", "calexp"]):
        image = butler.get(ref["dataset_type"], ref["data_id"])
        with fits.open(file_of(repo, ref)) as hdus:
            data = hdus[0].data
            header = hdus[0].header
        assert isinstance(image, quanta.ImageArray) and isinstance(image, np.ndarray)
        assert image.dtype == np.float32
        assert image.shape == data.shape
        np.testing.assert_array_equal(image, data)
        assert image.header, "the header cards come along"
        for key, value in image.header.items():
            assert header[key] == pytest.approx(value), key


def test_a_bbox_cut_out_is_the_numpy_slice(fits_demo):
    butler = quanta.Butler(fits_demo / "repo", collections="demo")
    whole = butler.get("calexp", CAM0)
    for bbox in [(3, 5, 40, 17), "3,5,40,17", [3, 5, 40, 17]]:
        cut = butler.get("calexp", CAM0, parameters={"bbox": bbox})
        assert cut.shape == (12, 37)
        np.testing.assert_array_equal(cut, whole[5:17, 3:40])
    corner = butler.get("calexp", CAM0, parameters={"bbox": (95, 95, 96, 96)})
    assert corner.shape == (1, 1) and corner[0, 0] == whole[95, 95]


def test_a_catalog_is_a_dict_of_the_columns_astropy_reads(fits_demo):
    repo = fits_demo / "repo"
    butler = quanta.Butler(repo, collections="demo")
    (ref,) = butler.query_datasets("src", where="exposure = 1 AND detector = 1")
    catalog = butler.get("src", ref["data_id"])
    with fits.open(file_of(repo, ref)) as hdus:
        table = hdus[1].data
    assert isinstance(catalog, quanta.Catalog)
    assert catalog.columns == ["X", "Y", "FLUX", "PEAK", "NPIX"]
    assert catalog.rows == len(table) > 0
    for name in catalog.columns:
        np.testing.assert_array_equal(catalog[name], table[name])
    assert catalog.header["IMAGETYP"] == "sources"
    structured = catalog.to_structured()
    np.testing.assert_array_equal(structured["FLUX"], table["FLUX"])
    part = butler.get("src", ref["data_id"], parameters={"columns": ["FLUX", "X"], "rows": (1, 3)})
    assert list(part) == ["FLUX", "X"]
    np.testing.assert_array_equal(part["FLUX"], table["FLUX"][1:3])
    same = butler.get("src", ref["data_id"], parameters={"columns": "FLUX,X", "rows": slice(1, 3)})
    np.testing.assert_array_equal(same["X"], part["X"])


def write_exposure(path: Path, rng: np.random.Generator) -> dict:
    """An ExposureF file in quanta's layout (see formats/src/fits/exposure.rs)."""
    image = rng.normal(100.0, 5.0, size=(30, 40)).astype(np.float32)
    mask = rng.integers(0, 4, size=(30, 40)).astype(np.int32)
    variance = np.full((30, 40), 25.0, dtype=np.float32)
    primary = fits.PrimaryHDU()
    cards = {"IMAGETYP": "calexp", "EXPID": 0, "DETECTOR": 0, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
             "CRVAL1": 10.0, "CRVAL2": -5.0, "CRPIX1": 20.5, "CRPIX2": 15.5,
             "CD1_1": -5e-5, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 5e-5}
    for key, value in cards.items():
        primary.header[key] = value
    hdus = [primary]
    for name, plane in [("IMAGE", image), ("MASK", mask), ("VARIANCE", variance)]:
        hdus.append(fits.ImageHDU(plane, name=name))
    fits.HDUList(hdus).writeto(path)
    return {"image": image, "mask": mask, "variance": variance}


def test_exposure_components_and_cut_outs_match_astropy(cli, writable_demo, tmp_path):
    repo = writable_demo / "repo"
    planes = write_exposure(tmp_path / "exposure.fits", np.random.default_rng(7))
    cli.run("dataset-type", "register", repo, "calexpF", "--dimensions", "instrument,exposure,detector",
            "--storage-class", "ExposureF")
    cli.run("collection", "create", repo, "u/exposures")
    cli.run("ingest", repo, "--run", "u/exposures", "--dataset-type", "calexpF",
            "--data-id", "instrument=Cam,exposure=0,detector=0", tmp_path / "exposure.fits")
    butler = quanta.Butler(repo, collections="u/exposures")
    image = butler.get("calexpF.image", CAM0)
    np.testing.assert_array_equal(image, planes["image"])
    mask = butler.get("calexpF.mask", CAM0)
    assert mask.dtype == np.int32
    np.testing.assert_array_equal(mask, planes["mask"])
    exposure = butler.get("calexpF", CAM0)
    assert isinstance(exposure, quanta.Exposure)
    np.testing.assert_array_equal(exposure.variance, planes["variance"])
    np.testing.assert_array_equal(exposure.image, planes["image"])
    assert exposure.wcs == butler.get("calexpF.wcs", CAM0)
    assert exposure.wcs["crval"] == [10.0, -5.0]
    assert exposure.metadata == butler.get("calexpF.metadata", CAM0)
    assert exposure.metadata["IMAGETYP"] == "calexp"
    cut = butler.get("calexpF.image", CAM0, parameters={"bbox": (4, 2, 14, 9)})
    np.testing.assert_array_equal(cut, planes["image"][2:9, 4:14])
    cut_exposure = butler.get("calexpF", CAM0, parameters={"bbox": "4,2,14,9"})
    np.testing.assert_array_equal(cut_exposure.mask, planes["mask"][2:9, 4:14])
    # A component is listed under the name asked for, as the CLI lists it.
    from_cli = cli.json("query-datasets", repo, "--collections", "u/exposures", "--dataset-type",
                        "calexpF.wcs", "--json")
    assert butler.query_datasets("calexpF.wcs") == from_cli
    assert from_cli[0]["dataset_type"] == "calexpF.wcs"


# -- queries -----------------------------------------------------------------


def test_query_datasets_equals_the_cli(cli, fits_demo):
    repo = fits_demo / "repo"
    butler = quanta.Butler(repo)
    cases = [
        (dict(dataset_type="calexp", collections="demo"), ["--dataset-type", "calexp", "--collections", "demo"]),
        (dict(dataset_type=["src", "raw"], collections=["demo"], where="exposure = :e AND detector != 0",
              bind={"e": 1}),
         ["--dataset-type", "src,raw", "--collections", "demo", "--where", "exposure = :e AND detector != 0",
          "--bind", "e=1"]),
        (dict(collections="demo"), ["--collections", "demo"]),
        (dict(dataset_type="raw", collections="demo,Cam/raw", find_first=False),
         ["--dataset-type", "raw", "--collections", "demo,Cam/raw", "--all"]),
    ]
    for kwargs, args in cases:
        from_python = butler.query_datasets(**kwargs)
        assert from_python == cli.json("query-datasets", repo, *args, "--json"), kwargs
        assert from_python, kwargs
    one = butler.query_datasets("calexp", collections="demo", where="exposure = 1 AND detector = 0")
    assert [r["data_id"] for r in one] == [{"instrument": "Cam", "exposure": 1, "detector": 0}]
    assert isinstance(one[0]["id"], str) and len(one[0]["id"]) == 36


def test_query_data_ids_equals_the_cli(cli, fits_demo):
    repo = fits_demo / "repo"
    butler = quanta.Butler(repo)
    from_cli = cli.json("query-data-ids", repo, "--dimensions", "exposure,detector", "--where",
                        "detector = :d", "--bind", "d=1", "--json")
    ids = butler.query_data_ids(["exposure", "detector"], where="detector = :d", bind={"d": 1})
    assert ids == from_cli
    assert ids == [{"instrument": "Cam", "exposure": e, "detector": 1} for e in (0, 1)]
    assert butler.query_data_ids("exposure") == cli.json("query-data-ids", repo, "--dimensions", "exposure", "--json")


def test_dataset_types_and_collections_equal_the_cli(cli, fits_demo):
    repo = fits_demo / "repo"
    butler = quanta.Butler(repo)
    assert butler.query_dataset_types() == cli.json("dataset-type", "list", repo, "--json")
    assert butler.query_collections() == cli.json("collection", "list", repo, "--json")
    assert "detector" in butler.dimensions()


def test_provenance_equals_the_cli(cli, reference_demo):
    repo = reference_demo / "repo"
    butler = quanta.Butler(repo, collections="demo")
    (summary,) = butler.query_datasets("expSummary", where="exposure = 2")
    for args, kwargs in [([], {}), (["--depth", "1"], {"depth": 1})]:
        from_cli = cli.json("provenance", repo, summary["id"], *args, "--json")
        graph = butler.provenance(summary["id"], **kwargs)
        assert graph == from_cli
    graph = butler.provenance(summary["id"])
    assert graph["root"] == summary["id"]
    labels = {q["task_label"] for q in graph["quanta"]}
    assert len(labels) >= 2
    assert all(q["status"] == "succeeded" for q in graph["quanta"])
    (raw,) = butler.query_datasets("raw", where="exposure = 2 AND detector = 1")
    down = butler.provenance(raw["id"], downstream=True)
    assert down == cli.json("provenance", repo, raw["id"], "--downstream", "--json")
    assert summary["id"] in {d["id"] for d in down["datasets"]}


# -- put ---------------------------------------------------------------------


def test_put_of_json_round_trips_and_the_cli_reads_it(cli, writable_demo):
    repo = writable_demo / "repo"
    butler = quanta.Butler(repo, run="u/me/notes", writeable=True)
    note = {"seeing": 0.71, "flags": [1, 2, 3], "ok": True, "comment": "é", "nested": {"none": None}}
    ref = butler.put(note, "expSummary", instrument="Cam", exposure=1)
    assert ref["run"] == "u/me/notes" and ref["data_id"] == {"instrument": "Cam", "exposure": 1}
    assert butler.get("expSummary", instrument="Cam", exposure=1, collections="u/me/notes") == note
    assert cli.json("get", repo, "expSummary", "--data-id", "instrument=Cam,exposure=1",
                    "--collections", "u/me/notes") == note
    (found,) = butler.query_datasets("expSummary", collections="u/me/notes")
    assert found["id"] == ref["id"]
    # numpy values are stored as their plain Python values.
    ref = butler.put({"values": np.arange(3), "x": np.float64(1.5)}, "expSummary", "instrument=Cam,exposure=0")
    assert butler.get("expSummary", ref["data_id"], collections="u/me/notes") == {"values": [0, 1, 2], "x": 1.5}


def test_put_of_an_image_round_trips_and_astropy_reads_it(cli, writable_demo):
    repo = writable_demo / "repo"
    cli.run("dataset-type", "register", repo, "pyImage", "--dimensions", "instrument,exposure,detector",
            "--storage-class", "ImageF")
    butler = quanta.Butler(repo, collections="u/images", run="u/images", writeable=True)
    pixels = np.arange(12 * 7, dtype=np.float64).reshape(12, 7) / 3.0
    wcs = {"ctype": ["RA---TAN", "DEC--TAN"], "crval": [10.5, -3.25], "crpix": [4.0, 6.5],
           "cd": [[-1e-4, 0.0], [0.0, 1e-4]]}
    ref = butler.put(quanta.ImageArray(pixels, header={"IMAGETYP": "model", "EXPID": 0}, wcs=wcs),
                     "pyImage", CAM0)
    back = butler.get("pyImage", CAM0)
    np.testing.assert_array_equal(back, pixels.astype(np.float32))
    assert back.header == {"IMAGETYP": "model", "EXPID": 0}
    assert back.wcs == wcs
    (stored,) = butler.query_datasets("pyImage")
    assert stored["id"] == ref["id"]
    np.testing.assert_array_equal(fits.getdata(file_of(repo, stored)), back)
    # A plain array is an image too.
    butler.put(np.ones((3, 4)), "pyImage", instrument="Cam", exposure=1, detector=0)
    assert butler.get("pyImage", instrument="Cam", exposure=1, detector=0).shape == (3, 4)
    with pytest.raises(ValueError, match="2-D array"):
        butler.put(np.ones(5), "pyImage", instrument="Cam", exposure=1, detector=1)


def test_put_is_refused_read_only_and_twice(writable_demo):
    repo = writable_demo / "repo"
    with pytest.raises(quanta.QuantaError, match="read-only"):
        quanta.Butler(repo, run="u/x").put({}, "expSummary", instrument="Cam", exposure=0)
    butler = quanta.Butler(repo, run="u/x", writeable=True)
    butler.put({"a": 1}, "expSummary", instrument="Cam", exposure=0)
    with pytest.raises(quanta.QuantaError):
        butler.put({"a": 2}, "expSummary", instrument="Cam", exposure=0)
    assert butler.get("expSummary", instrument="Cam", exposure=0, collections="u/x") == {"a": 1}
    with pytest.raises(TypeError, match="JSON"):
        butler.put({"a": object()}, "expSummary", instrument="Cam", exposure=1)


# -- errors ------------------------------------------------------------------


def test_errors_carry_the_cli_message(cli, fits_demo):
    repo = fits_demo / "repo"
    butler = quanta.Butler(repo, collections="demo")
    get = ["get", repo, "--collections", "demo"]

    with pytest.raises(quanta.DatasetNotFoundError) as missing:
        butler.get("calexp", instrument="Cam", exposure=9, detector=0)
    assert isinstance(missing.value, LookupError)
    assert str(missing.value) == cli.error(*get, "calexp", "--data-id", "instrument=Cam,exposure=9,detector=0")

    cases = [
        (lambda: butler.get("nosuch", CAM0), ["nosuch", "--data-id", "instrument=Cam,exposure=0,detector=0"]),
        (lambda: butler.get("calexp", "instrument=Cam,exposure=zero,detector=0"),
         ["calexp", "--data-id", "instrument=Cam,exposure=zero,detector=0"]),
        (lambda: butler.get("expSummary", {"instrument": "Cam", "exposure": 0}, parameters={"bbox": (0, 0, 1, 1)}),
         ["expSummary", "--data-id", "instrument=Cam,exposure=0", "--parameters", "bbox=0,0,1,1"]),
        (lambda: butler.get("calexp", CAM0, parameters={"bbox": (0, 0, 200, 10)}),
         ["calexp", "--data-id", "instrument=Cam,exposure=0,detector=0", "--parameters", "bbox=0,0,200,10"]),
    ]
    for call, args in cases:
        with pytest.raises(quanta.QuantaError) as e:
            call()
        assert str(e.value) == cli.error(*get, *args)

    with pytest.raises(quanta.QuantaError) as bad_where:
        butler.query_datasets("calexp", where="exposure >")
    assert str(bad_where.value) == cli.error("query-datasets", repo, "--collections", "demo",
                                             "--dataset-type", "calexp", "--where", "exposure >")
    with pytest.raises(quanta.QuantaError) as bad_dimension:
        butler.query_data_ids(["exposure", "nosuch"])
    assert str(bad_dimension.value) == cli.error("query-data-ids", repo, "--dimensions", "exposure,nosuch")
    unknown = "01a2492a-0000-7000-8000-000000000000"
    with pytest.raises(quanta.DatasetNotFoundError) as no_dataset:
        butler.provenance(unknown)
    assert str(no_dataset.value) == cli.error("provenance", repo, unknown)
    with pytest.raises(quanta.QuantaError) as no_repo:
        quanta.Butler(fits_demo / "nowhere")
    assert str(no_repo.value) == cli.error("query-datasets", fits_demo / "nowhere", "--collections", "demo")
    with pytest.raises(quanta.QuantaError, match="no collections"):
        quanta.Butler(repo).get("calexp", CAM0)
