"""Exceptions of :mod:`kerasml.data`.

Every known bad input (a missing file, a corrupt archive, an impossible class count,
a failed download) raises a :class:`DataError` whose message says what was wrong,
where, and how to fix it. The ``kerasml`` command turns them into exit status 2.
"""


class DataError(Exception):
    """Base class of the known, user-fixable errors of :mod:`kerasml.data`."""


class DownloadError(DataError):
    """A download failed (HTTP error, timeout, interrupted transfer)."""


class ChecksumError(DownloadError):
    """A file's checksum differs from the expected one. Nothing is deleted."""


class ArchiveError(DataError):
    """An archive is unsafe (absolute paths, ``..``, escaping links) or unreadable."""


class SourceError(DataError):
    """A dataset source cannot be found or read, or a request on it is impossible."""


class StoreError(DataError):
    """A file is not a valid, complete kerasml HDF5 store."""


class IngestError(DataError):
    """An ingest failed (``--strict`` with unreadable images, nothing to write, ...)."""
