"""The kerasml HDF5 store: images, labels, classes, split and provenance in one file.

Layout (format version 1)::

    /                       attrs: kerasml_format="kerasml.store", format_version=1,
                                   complete=1 (written last), source, image_size, fit,
                                   provenance (JSON: source, seed, sampled class ids, version, ...)
    /images                 uint8 [N, S, S, 3] RGB, one chunk per image
    /labels                 int32 [N]  index into /classes (0..C-1, training classes first)
    /paths                  str   [N]  where each image came from
    /classes/name           str   [C]
    /classes/source_id      int64 [C]  the dataset's own class id
    /classes/split          str   [C]  "train" or "test"
    /splits/train           int64 [n]  rows of the training split (ascending)
    /splits/test            int64 [m]  rows of the test split (ascending)

Stores are written to a temporary name next to the target and renamed at the end
(:class:`StoreWriter`), so an interrupted ingest never leaves a file that
:func:`open_store` or ``kerasml info`` accepts.
"""

import json
import os
import re
import uuid
from pathlib import Path

import numpy as np

from kerasml.data.errors import StoreError
from kerasml.data.sources import store_hint

__all__ = ["FORMAT", "FORMAT_VERSION", "Store", "StoreWriter", "open_store", "remove_stale_partials", "validate_store"]

FORMAT = "kerasml.store"
FORMAT_VERSION = 1
SPLITS = ("train", "test")
_REQUIRED = (
    "images",
    "labels",
    "paths",
    "classes/name",
    "classes/source_id",
    "classes/split",
    "splits/train",
    "splits/test",
)


def _h5py():
    import h5py

    return h5py


def _strings(values):
    return np.array([str(v) for v in values], dtype=object)


# The temporary files of the writers open in this process (never stale).
_LIVE = set()


def _partial_name(path):
    return re.compile(rf"\.{re.escape(Path(path).name)}\.[0-9a-f]{{8}}\.partial")


def _held(tmp):
    """Whether a running writer holds ``tmp``: HDF5 refuses to open a file another process writes."""
    if tmp.resolve() in _LIVE:
        return True
    try:
        with _h5py().File(tmp, "r"):
            pass
    except OSError as error:
        return "lock" in str(error).lower()
    return False


def remove_stale_partials(path):
    """Delete the temporary files that interrupted writes of the store ``path`` left behind.

    A :class:`StoreWriter` writes to a hidden ``.<name>.<hash>.partial`` next to ``path``. An
    exception or Ctrl-C deletes it; a hard kill (``kill -9``, a power cut) cannot, and it can
    be as large as the dataset. This removes every such file that no running ingest holds
    (HDF5 locks the file it writes; on systems where HDF5 does not lock, the file of a running
    ingest cannot be deleted while it is open).

    Args:
        path: the store's final path.

    Returns:
        ``(removed, held)``: the removed files as ``(path, bytes)`` pairs, and the partial files
        left in place because a running ingest holds them.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return [], []
    pattern = _partial_name(path)
    removed, held = [], []
    for candidate in sorted(folder.iterdir()):
        if not pattern.fullmatch(candidate.name) or not candidate.is_file():
            continue
        if _held(candidate):
            held.append(candidate)
            continue
        size = candidate.stat().st_size
        try:
            candidate.unlink()
        except OSError:  # open in another process (Windows)
            held.append(candidate)
        else:
            removed.append((candidate, size))
    return removed, held


class StoreWriter:
    """Writes a store to a temporary file and renames it into place on :meth:`commit`.

    Images are appended one at a time (:meth:`append`); labels, classes, splits and
    provenance are written by :meth:`commit`, which marks the file complete last and then
    renames it. :meth:`abort` (or leaving a ``with`` block by an exception, including
    ``KeyboardInterrupt``) deletes the temporary file. A hard kill cannot: the next writer of the
    same path removes what such kills left (:func:`remove_stale_partials`; see
    :attr:`removed_partials` and :attr:`held_partials`).

    Args:
        path: the final file name.
        image_size: the square side of every image in pixels.
        compression: ``None``, ``"lzf"`` or ``"gzip"`` for the image dataset.
        overwrite: replace an existing file at ``path``. Defaults to ``False``.

    Attributes:
        tmp_path: the temporary file being written.
        removed_partials: ``(path, bytes)`` of each stale temporary file of ``path`` removed on
            construction (left by a hard-killed earlier write).
        held_partials: the temporary files of ``path`` that another running write holds.

    Raises:
        StoreError: if ``path`` exists and ``overwrite`` is false, or cannot be written.
    """

    def __init__(self, path, image_size, *, compression=None, overwrite=False):
        self.path = Path(path)
        self.removed_partials, self.held_partials = remove_stale_partials(self.path)
        if self.path.exists() and not overwrite:
            raise StoreError(
                f"{self.path} already exists. Pass --overwrite (overwrite=True) to replace it, or choose another --out."
            )
        if compression not in (None, "none", "lzf", "gzip"):
            raise StoreError(f"Invalid compression {compression!r}: expected none, lzf or gzip.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.partial")
        self.image_size = int(image_size)
        size = self.image_size
        try:
            self._file = _h5py().File(self.tmp_path, "w")
        except OSError as error:
            raise StoreError(
                f"Cannot write {self.tmp_path} ({error}). Check the folder's permissions and space."
            ) from error
        _LIVE.add(self.tmp_path.resolve())
        self._file.attrs["kerasml_format"] = FORMAT
        self._file.attrs["format_version"] = FORMAT_VERSION
        self._images = self._file.create_dataset(
            "images",
            shape=(0, size, size, 3),
            maxshape=(None, size, size, 3),
            dtype=np.uint8,
            chunks=(1, size, size, 3),
            compression=None if compression == "none" else compression,
        )
        self._count = 0
        self._capacity = 0

    @property
    def count(self):
        """The number of images appended so far."""
        return self._count

    def append(self, image):
        """Append one ``uint8 [S, S, 3]`` image; returns its row."""
        if self._count == self._capacity:
            self._capacity = max(64, self._capacity * 2)
            self._images.resize(self._capacity, axis=0)
        self._images[self._count] = image
        self._count += 1
        return self._count - 1

    def commit(self, *, labels, paths, class_names, class_source_ids, class_splits, provenance, attrs=None):
        """Write the tables, mark the store complete and rename it to its final name.

        Args:
            labels: int ``[N]``, the class index (into the class table) of each row.
            paths: ``[N]`` strings, where each row came from.
            class_names: ``[C]`` class names.
            class_source_ids: ``[C]`` the dataset's class ids.
            class_splits: ``[C]`` ``"train"`` or ``"test"``.
            provenance: a JSON-serialisable dict.
            attrs: further scalar root attributes.

        Returns:
            The final path.
        """
        labels = np.asarray(labels, dtype=np.int32)
        if len(labels) != self._count or len(paths) != self._count:
            raise StoreError(f"internal: {self._count} images but {len(labels)} labels and {len(paths)} paths")
        file = self._file
        self._images.resize(self._count, axis=0)
        string = _h5py().string_dtype("utf-8")
        file.create_dataset("labels", data=labels)
        file.create_dataset("paths", data=_strings(paths), dtype=string)
        classes = file.create_group("classes")
        classes.create_dataset("name", data=_strings(class_names), dtype=string)
        classes.create_dataset("source_id", data=np.asarray(class_source_ids, dtype=np.int64))
        classes.create_dataset("split", data=_strings(class_splits), dtype=string)
        class_splits = np.asarray([str(s) for s in class_splits])
        splits = file.create_group("splits")
        for split in SPLITS:
            in_split = np.flatnonzero(class_splits == split)
            rows = np.flatnonzero(np.isin(labels, in_split)).astype(np.int64)
            splits.create_dataset(split, data=rows)
        for key, value in (attrs or {}).items():
            file.attrs[key] = value
        file.attrs["provenance"] = json.dumps(provenance, sort_keys=True)
        file.flush()
        file.attrs["complete"] = 1  # last: an interrupted write never has it
        file.close()
        os.replace(self.tmp_path, self.path)
        _LIVE.discard(self.tmp_path.resolve())
        return self.path

    def abort(self):
        """Close and delete the temporary file (nothing at the final name is touched)."""
        try:
            if self._file.id.valid:
                self._file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)
            _LIVE.discard(self.tmp_path.resolve())

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None or self.tmp_path.exists():
            self.abort()
        return False


def _invalid(path, reason, fix="Create it with `kerasml ingest` (see `kerasml ingest --help`)."):
    return StoreError(f"{path} is not a valid kerasml store: {reason}. {fix}")


def validate_store(path):
    """Check that ``path`` is a complete kerasml store; returns nothing or raises.

    Args:
        path: the file to check.

    Raises:
        StoreError: saying what is wrong (missing, not HDF5, not written by kerasml,
            incomplete, newer format, missing or inconsistent datasets) and what to do.
    """
    path = Path(path)
    if not path.exists():
        where = "" if path.is_absolute() else f" (in the working directory {Path.cwd()})"
        raise StoreError(f"{path} does not exist{where}. {store_hint(path)}")
    if path.is_dir():
        raise _invalid(path, "it is a folder, not an HDF5 file")
    h5py = _h5py()
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise _invalid(path, f"it cannot be opened as HDF5 ({error})") from error
    with file:
        attrs = file.attrs
        if attrs.get("kerasml_format") != FORMAT:
            raise _invalid(path, "it is an HDF5 file that kerasml did not write (no kerasml_format attribute)")
        if int(attrs.get("complete", 0)) != 1:
            raise _invalid(
                path,
                "its ingest did not finish (interrupted or failed; the file is not marked complete)",
                "Delete it and run `kerasml ingest` again.",
            )
        version = int(attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise _invalid(
                path, f"it has format version {version}, newer than this kerasml ({FORMAT_VERSION})", "Upgrade kerasml."
            )
        for name in _REQUIRED:
            if name not in file:
                raise _invalid(path, f"the dataset /{name} is missing", "Run `kerasml ingest` again.")
        n = file["images"].shape[0]
        shape = file["images"].shape
        if len(shape) != 4 or shape[3] != 3 or file["images"].dtype != np.uint8:
            raise _invalid(path, f"/images has shape {shape} and dtype {file['images'].dtype}, not [N, S, S, 3] uint8")
        for name in ("labels", "paths"):
            if file[name].shape != (n,):
                raise _invalid(path, f"/{name} has {file[name].shape[0]} entries for {n} images")
        labels = file["labels"][()]
        classes = file["classes/name"].shape[0]
        if n and (labels.min() < 0 or labels.max() >= classes):
            raise _invalid(path, f"/labels holds values outside the {classes} classes")
        for split in SPLITS:
            rows = file[f"splits/{split}"][()]
            if rows.size and (rows.min() < 0 or rows.max() >= n):
                raise _invalid(path, f"/splits/{split} points outside the {n} images")


class Store:
    """A read-only kerasml store: metadata in memory, images read lazily.

    The HDF5 file is opened on the first image read in each process (and reopened after a
    fork), and never pickled: a ``Store`` can be sent to ``spawn`` workers (Windows).

    Args:
        path: the store file (validated on construction).

    Attributes:
        path: the file.
        image_size: the square side of the images.
        labels: int32 ``[N]`` class index of every row.
        paths: where each row came from.
        class_names: ``[C]`` class names.
        class_source_ids: int64 ``[C]`` the dataset's own class ids.
        class_splits: ``[C]`` ``"train"`` or ``"test"``.
        provenance: dict (source, seed, sampled class ids, kerasml version, ...).
        attrs: the root attributes.

    Raises:
        StoreError: if the file is not a valid, complete store.
    """

    def __init__(self, path):
        self._file = None
        self._pid = None
        self.path = Path(path)
        validate_store(self.path)
        with _h5py().File(self.path, "r") as file:
            self.num_images = int(file["images"].shape[0])
            self.image_size = int(file["images"].shape[1])
            self.compression = file["images"].compression
            self.labels = file["labels"][()].astype(np.int32)
            self.paths = [p.decode() if isinstance(p, bytes) else str(p) for p in file["paths"][()]]
            self.class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in file["classes/name"][()]]
            self.class_source_ids = file["classes/source_id"][()].astype(np.int64)
            self.class_splits = [s.decode() if isinstance(s, bytes) else str(s) for s in file["classes/split"][()]]
            self._splits = {split: file[f"splits/{split}"][()].astype(np.int64) for split in SPLITS}
            self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in file.attrs.items()}
        try:
            self.provenance = json.loads(self.attrs.get("provenance", "{}"))
        except ValueError:
            self.provenance = {}

    def __repr__(self):
        counts = ", ".join(f"{s}={len(self._splits[s])}" for s in SPLITS)
        return f"Store({str(self.path)!r}, images={self.num_images}, classes={len(self.class_names)}, {counts})"

    def __len__(self):
        return self.num_images

    @property
    def num_classes(self):
        """The number of classes (both splits)."""
        return len(self.class_names)

    def split_rows(self, split):
        """The rows (ascending int64) of ``"train"``, ``"test"`` or ``"all"``.

        Raises:
            ValueError: for another split name.
        """
        if split == "all":
            return np.arange(self.num_images, dtype=np.int64)
        if split not in self._splits:
            raise ValueError(
                f"Invalid value for argument `split`. Expected 'train', 'test' or 'all'. Received: {split!r}"
            )
        return self._splits[split]

    def split_labels(self, split):
        """The labels of the rows of a split, in row order."""
        return self.labels[self.split_rows(split)]

    def _dataset(self):
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            self._file = _h5py().File(self.path, "r")
            self._pid = pid
        return self._file["images"]

    def read(self, rows):
        """Read images by row (any order, repeats allowed).

        Args:
            rows: int array-like ``[k]``.

        Returns:
            ``uint8 [k, S, S, 3]`` RGB.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size == 0:
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        unique, inverse = np.unique(rows, return_inverse=True)
        dataset = self._dataset()
        block = np.empty((unique.size, *dataset.shape[1:]), dtype=np.uint8)
        # one slice per run of consecutive rows: h5py's fancy (point list) selection is
        # orders of magnitude slower than a few hyperslab reads
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, unique.size], strict=True):
            first = int(unique[start])
            dataset.read_direct(block, np.s_[first : first + (stop - start)], np.s_[start:stop])
        return block[inverse]

    def summary(self):
        """A JSON-serialisable summary (what ``kerasml info`` prints)."""
        per_class = np.bincount(self.labels, minlength=self.num_classes)
        splits = {}
        for split in SPLITS:
            classes = [i for i, s in enumerate(self.class_splits) if s == split]
            counts = per_class[classes] if classes else np.zeros(0, int)
            splits[split] = {
                "images": len(self._splits[split]),
                "classes": len(classes),
                "images_per_class_min": int(counts.min()) if counts.size else 0,
                "images_per_class_max": int(counts.max()) if counts.size else 0,
            }
        return {
            "path": str(self.path),
            "format": f"{FORMAT} v{self.attrs.get('format_version')}",
            "file_bytes": self.path.stat().st_size,
            "images": self.num_images,
            "image_shape": [self.image_size, self.image_size, 3],
            "compression": self.compression,
            "classes": self.num_classes,
            "splits": splits,
            "provenance": self.provenance,
        }

    def close(self):
        """Close the HDF5 handle of this process (reopened on the next read)."""
        if getattr(self, "_file", None) is not None and self._pid == os.getpid():
            try:
                self._file.close()
            except Exception:  # closing at interpreter exit may fail harmlessly
                pass
        self._file = None
        self._pid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __del__(self):
        self.close()


def open_store(path):
    """Open a kerasml HDF5 store for reading.

    Args:
        path: the ``.h5`` file written by :func:`kerasml.data.ingest` / ``kerasml ingest``.

    Returns:
        A :class:`Store`.

    Raises:
        StoreError: if the file is missing, not HDF5, incomplete or not a kerasml store.

    Example:

    >>> from kerasml.data import open_store
    >>> store = open_store("data/digits.h5")  # doctest: +SKIP
    >>> store.read(store.split_rows("train")[:4]).shape  # doctest: +SKIP
    (4, 32, 32, 3)
    """
    return Store(path)
