"""The base class of Python pipeline tasks."""

from __future__ import annotations

from typing import Any, Mapping


class PipelineTask:
    """A pipeline task written in Python (LSST's ``PipelineTask`` shape).

    Declare it in a pipeline with ``python: package.module:Class`` beside
    the task's dimensions and connections, and implement :meth:`run`::

        class Characterize(quanta.PipelineTask):
            def run(self, post):
                pixels = post["pixels"]
                return {"icexp": {**post, "psf": sum(pixels) / len(pixels)}}

    quanta's workers import the class once per interpreter (one interpreter
    per worker slot, so ``--jobs N`` runs N processes and Python tasks never
    share a GIL), make one instance per task label with the task's
    ``config`` from the pipeline YAML, and call :meth:`run` once per
    quantum. Inputs are read and outputs written by quanta through its
    formatters: the task never sees a path. JSON datasets are plain Python
    objects, images :class:`quanta.ImageArray`, exposures
    :class:`quanta.Exposure`, catalogs :class:`quanta.Catalog`, as
    :meth:`quanta.Butler.get` returns them and :meth:`quanta.Butler.put`
    takes them.

    Attributes:
        config: the task's ``config`` mapping from the pipeline (``{}`` when
            none was given).
        label: the task's label in the pipeline.
        quantum: while :meth:`run` runs, the quantum being run: ``data_id``
            (a dict), ``input_data_ids(connection)`` and
            ``output_data_ids(connection)`` (lists of dicts, in the order of
            a ``multiple`` connection's list).
    """

    def __init__(self, *, config: Mapping[str, Any] | None = None, label: str = "") -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.label = label
        self.quantum: Any = None

    def run(self, **inputs: Any) -> Mapping[str, Any]:
        """Runs one quantum.

        ``inputs`` maps each input (and prerequisite) connection name to its
        dataset, or to a list of datasets for a ``multiple: true``
        connection (a non-``multiple`` prerequisite with no dataset is
        None). Returns a mapping from output connection name to the object
        to write (a list, in ``self.quantum.output_data_ids(name)`` order,
        for a connection with several predicted datasets). Every predicted
        output must be returned; an exception fails the quantum with its
        traceback in the journal (``quanta report`` shows it).
        """
        raise NotImplementedError(f"{type(self).__name__}.run is not implemented")
