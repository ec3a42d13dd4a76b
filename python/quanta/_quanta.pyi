"""Type hints of the compiled module ``quanta._quanta`` (import ``quanta``)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Optional, Union

__version__: str

StrPath = Union[str, os.PathLike[str]]
# A data ID: {"instrument": "Cam", "exposure": 3} or "instrument=Cam,exposure=3".
DataIdLike = Union[Mapping[str, Union[int, str]], str, None]
# One name, several separated by commas, or a list of names.
Names = Union[str, Iterable[str]]
BindValue = Union[int, float, str, bytes, bool, None]
# {"bbox": (x0, y0, x1, y1) | "x0,y0,x1,y1", "columns": [...] | "a,b",
#  "rows": (start, end) | slice(start, end) | "start:end"}
Parameters = Mapping[str, Any]
DataId = dict[str, Union[int, str]]
# {"dataset_type", "data_id", "run", "id", "collection", "stored": {"path",
#  "formatter", "size", "checksum"} | None}, as `quanta query-datasets --json`.
DatasetRecord = dict[str, Any]

class Butler:
    """A data repository: its Registry and Datastore behind get and put by
    dataset type and data ID, and queries."""

    def __init__(
        self,
        repo: StrPath,
        *,
        collections: Optional[Names] = None,
        run: Optional[str] = None,
        writeable: bool = False,
    ) -> None: ...
    @property
    def root(self) -> Path: ...
    @property
    def collections(self) -> list[str]: ...
    @property
    def run(self) -> Optional[str]: ...
    @property
    def writeable(self) -> bool: ...
    def get(
        self,
        dataset_type: str,
        data_id: DataIdLike = None,
        *,
        collections: Optional[Names] = None,
        parameters: Optional[Parameters] = None,
        **data_id_values: Union[int, str],
    ) -> Any:
        """A JSON dataset as dicts/lists, an ``ImageF`` as
        :class:`quanta.ImageArray`, a mask as an int32 array, an
        ``ExposureF`` as :class:`quanta.Exposure`, a ``SourceCatalog`` as
        :class:`quanta.Catalog`, a WCS or metadata component as a dict,
        ``Bytes`` as bytes. Raises :class:`quanta.DatasetNotFoundError`
        when no such dataset is in the collections."""
    def put(
        self,
        obj: Any,
        dataset_type: str,
        data_id: DataIdLike = None,
        *,
        run: Optional[str] = None,
        **data_id_values: Union[int, str],
    ) -> dict[str, Any]: ...
    def query_datasets(
        self,
        dataset_type: Optional[Names] = None,
        *,
        collections: Optional[Names] = None,
        where: str = "",
        bind: Optional[Mapping[str, BindValue]] = None,
        find_first: bool = True,
    ) -> list[DatasetRecord]: ...
    def query_data_ids(
        self,
        dimensions: Names,
        *,
        where: str = "",
        bind: Optional[Mapping[str, BindValue]] = None,
    ) -> list[DataId]: ...
    def query_dataset_types(self) -> list[dict[str, Any]]: ...
    def query_collections(self) -> list[dict[str, Any]]: ...
    def provenance(
        self,
        dataset_id: Union[str, uuid.UUID],
        *,
        downstream: bool = False,
        depth: Optional[int] = None,
    ) -> dict[str, Any]: ...
    def dimensions(self) -> list[str]: ...

# {"index", "id", "task", "data_id", "inputs", "prerequisites", "outputs",
#  "upstream"}; connections map a name to refs {"id", "dataset_type",
#  "data_id", "run", "path", "size", "checksum"}.
Quantum = dict[str, Any]

class Bundle:
    """A bundle file written by ``quanta preflight``."""

    def __init__(self, path: StrPath) -> None: ...
    @property
    def path(self) -> Path: ...
    @property
    def id(self) -> str: ...
    @property
    def header(self) -> dict[str, Any]: ...
    @property
    def input_collections(self) -> list[str]: ...
    @property
    def output_run(self) -> str: ...
    @property
    def output_collection(self) -> Optional[str]: ...
    @property
    def tasks(self) -> list[dict[str, Any]]: ...
    @property
    def clusters(self) -> list[dict[str, Any]]: ...
    def quanta_per_task(self) -> dict[str, int]: ...
    def verify(self) -> None: ...
    def show(self) -> dict[str, Any]: ...
    def quantum(self, index: int) -> Quantum: ...
    def quanta_of(self, label: str) -> list[Quantum]: ...
    def __getitem__(self, index: int) -> Quantum: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Quantum]: ...

class QuantumIterator(Iterator[Quantum]):
    def __next__(self) -> Quantum: ...

class _WorkerSession:
    """A bundle opened by a Python task worker (``python -m quanta._worker``).
    Internal: quanta's executor drives it; tasks see :class:`quanta.PipelineTask`."""

    def __init__(self, bundle: StrPath) -> None: ...
    def task(self, label: str) -> tuple[str, dict[str, Any]]: ...
    def begin(self, index: int, replace_existing: bool) -> _Quantum: ...

class _Quantum:
    """One attempt of one quantum in a worker: inputs read and outputs
    written through the bundle's QuantumBackedButler. A task sees it as
    ``self.quantum`` while ``run`` runs."""

    @property
    def label(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def data_id(self) -> dict[str, Any]: ...
    def inputs(self) -> dict[str, Any]: ...
    def input_data_ids(self, connection: str) -> list[dict[str, Any]]: ...
    def output_data_ids(self, connection: str) -> list[dict[str, Any]]: ...
    def put(self, connection: str, obj: Any) -> None: ...
    def finish(self, error: Optional[str], cpu_seconds: float, log: list[str]) -> bytes: ...
