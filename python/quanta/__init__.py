"""quanta from Python: read and write a quanta data repository.

quanta implements the LSST Gen3 Butler design (a SQL Registry, a file
Datastore, a Butler that gets and puts datasets by data ID) with a batch
path around it. This package is a thin layer over its Rust libraries:

>>> import quanta
>>> butler = quanta.Butler("repo", collections=["demo"])
>>> summary = butler.get("summary", instrument="Cam", exposure=3)
>>> image = butler.get("calexp.image", {"instrument": "Cam", "exposure": 0, "detector": 1},
...                    parameters={"bbox": (0, 0, 32, 32)})
>>> refs = butler.query_datasets("calexp", where="exposure < 3")
>>> bundle = quanta.Bundle("run1.qb")

Images come back as :class:`ImageArray` (a numpy array with ``.header`` and
``.wcs``), catalogs as :class:`Catalog` (a dict of numpy columns with
``.header``), exposures as :class:`Exposure`, JSON datasets as plain Python
objects. Errors are :class:`QuantaError` (``DatasetNotFoundError`` when a
dataset is not there) with the message the ``quanta`` command prints.

Pipeline tasks can be Python classes: subclass :class:`PipelineTask`,
implement ``run(self, **inputs) -> dict``, and name the class in a pipeline
as ``python: package.module:Class``; quanta's workers import it once per
interpreter and call it per quantum (``python -m quanta._worker``).
"""

from ._errors import DatasetNotFoundError, QuantaError
from ._quanta import Bundle, Butler, __version__
from ._task import PipelineTask
from ._types import Catalog, Exposure, ImageArray

__all__ = [
    "Bundle",
    "Butler",
    "Catalog",
    "DatasetNotFoundError",
    "Exposure",
    "ImageArray",
    "PipelineTask",
    "QuantaError",
    "__version__",
]
