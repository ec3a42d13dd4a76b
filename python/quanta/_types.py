"""The Python forms of quanta's image and catalog datasets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


class ImageArray(np.ndarray):
    """A float32 image of shape ``(height, width)`` (row ``y``, column
    ``x``, both from 0, as in the FITS file read with ``astropy.io.fits``)
    with its FITS header cards (``header``: ``{"IMAGETYP": ..., "EXPID": ...}``)
    and its TAN WCS (``wcs``: ``{"ctype", "crval", "crpix", "cd"}`` in FITS
    conventions, or None).

    It is a numpy array: slicing and arithmetic work as usual and keep the
    header. ``numpy.asarray(image)`` is the plain array; ``ImageArray(array,
    header=..., wcs=...)`` makes one to ``put``.
    """

    header: dict[str, Any]
    wcs: Optional[dict[str, Any]]

    def __new__(
        cls,
        array: Any,
        header: Optional[dict[str, Any]] = None,
        wcs: Optional[dict[str, Any]] = None,
    ) -> "ImageArray":
        obj = np.asarray(array, dtype=np.float32).view(cls)
        obj.header = dict(header or {})
        obj.wcs = None if wcs is None else dict(wcs)
        return obj

    @classmethod
    def _wrap(cls, array: np.ndarray, header: dict[str, Any], wcs: Optional[dict[str, Any]]) -> "ImageArray":
        obj = array.view(cls)
        obj.header = header
        obj.wcs = wcs
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        if obj is None:
            return
        self.header = getattr(obj, "header", {})
        self.wcs = getattr(obj, "wcs", None)


class Catalog(dict):
    """A catalog: column name → 1-D numpy array (the FITS table's columns: ``X``,
    ``Y``, ``FLUX``, ``PEAK``, ``NPIX`` for a SourceCatalog; the columns asked for with the
    ``columns`` read parameter), with the header cards of the measurement
    (``header``)."""

    header: dict[str, Any]

    def __init__(self, columns: dict[str, np.ndarray], header: Optional[dict[str, Any]] = None):
        super().__init__(columns)
        self.header = dict(header or {})

    @property
    def rows(self) -> int:
        """The number of rows (``len(catalog)`` is the number of columns, as
        for any dict)."""
        for column in self.values():
            return len(column)
        return 0

    @property
    def columns(self) -> list[str]:
        """The column names, in order."""
        return list(self.keys())

    def to_structured(self) -> np.ndarray:
        """The catalog as a numpy structured array (one record per row)."""
        dtype = [(name, column.dtype) for name, column in self.items()]
        out = np.empty(self.rows, dtype=dtype)
        for name, column in self.items():
            out[name] = column
        return out


@dataclass
class Exposure:
    """An exposure (storage class ``ExposureF``): image, mask and variance
    planes of one shape, the WCS and the metadata (header cards). Read one
    plane alone with the component (``butler.get("calexp.image", ...)``)."""

    image: ImageArray
    mask: np.ndarray
    variance: ImageArray
    wcs: Optional[dict[str, Any]]
    metadata: dict[str, Any]
