"""Datasets: download, ingest into HDF5, and stream structured batches.

The data path, end to end::

    kerasml download cub --to data/raw                      # resumable, checksummed
    kerasml ingest cub --classes 20 --out data/cub-20.h5     # the study's "-d cub -n 20"
    kerasml info data/cub-20.h5                              # what is in a store

and in Python::

    from kerasml import data
    store = data.open_store("data/cub-20.h5")
    train = data.TrainStream(store, "npair", batch_size=32, workers=2, use_multiprocessing=True)
    test = data.EvalStream(store, "test", batch_size=64)

Public names:

- :func:`download` (and :data:`~kerasml.data.download.REMOTES`): fetch the original files.
- :func:`get_source` and the :mod:`~kerasml.data.sources` classes: read a dataset
  (``cub``, ``cars196``, ``sop``, ``folder``, ``digits``, ``procedural``).
- :func:`ingest`: write a store; :func:`open_store` / :class:`Store`: read one.
- :class:`NPairSampler`, :class:`TripletSampler`, :class:`MPerClassSampler`: batch layouts.
- :class:`Augment`: random resized crop, flip, per-backbone normalisation.
- :class:`TrainStream`, :class:`EvalStream`: ``keras.utils.PyDataset`` streams.
- :class:`DataError` and its subclasses: the known, user-fixable errors.

The samplers, ``Augment``, the normalisations and the streams are imported on first access:
the rest of the package (download, ingest, stores) never imports Keras or a framework.
"""

import importlib
from typing import TYPE_CHECKING

from kerasml.data.archives import ArchiveReader, safe_extract
from kerasml.data.download import REMOTES, download, download_file
from kerasml.data.errors import (
    ArchiveError,
    ChecksumError,
    DataError,
    DownloadError,
    IngestError,
    SourceError,
    StoreError,
)
from kerasml.data.ingestion import IngestResult, default_out, ingest
from kerasml.data.sources import SOURCES, Source, get_source
from kerasml.data.store import Store, open_store, validate_store

# Names whose modules import Keras (the streams; the samplers through `kerasml.losses`) or the
# normalisations: imported on first access, so that downloading, ingesting and reading a store
# never load a framework.
_LAZY = {
    "MPerClassSampler": "kerasml.data.samplers",
    "NPairSampler": "kerasml.data.samplers",
    "Sampler": "kerasml.data.samplers",
    "TripletSampler": "kerasml.data.samplers",
    "get_sampler": "kerasml.data.samplers",
    "Augment": "kerasml.data.augment",
    "NORMALIZATIONS": "kerasml.data.augment",
    "Normalization": "kerasml.data.augment",
    "get_normalization": "kerasml.data.augment",
    "EvalStream": "kerasml.data.stream",
    "TrainStream": "kerasml.data.stream",
}

if TYPE_CHECKING:
    from kerasml.data.augment import NORMALIZATIONS, Augment, Normalization, get_normalization
    from kerasml.data.samplers import MPerClassSampler, NPairSampler, Sampler, TripletSampler, get_sampler
    from kerasml.data.stream import EvalStream, TrainStream


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasml.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "NORMALIZATIONS",
    "REMOTES",
    "SOURCES",
    "ArchiveError",
    "ArchiveReader",
    "Augment",
    "ChecksumError",
    "DataError",
    "DownloadError",
    "EvalStream",
    "IngestError",
    "IngestResult",
    "MPerClassSampler",
    "NPairSampler",
    "Normalization",
    "Sampler",
    "Source",
    "SourceError",
    "Store",
    "StoreError",
    "TrainStream",
    "TripletSampler",
    "default_out",
    "download",
    "download_file",
    "get_normalization",
    "get_sampler",
    "get_source",
    "ingest",
    "open_store",
    "safe_extract",
    "validate_store",
]
