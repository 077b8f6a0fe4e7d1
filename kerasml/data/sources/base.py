"""The base class of dataset sources (the study's ``DatasetIngestion``).

A source knows one dataset's layout: it lists the classes and images (:meth:`Source.catalog`),
reads image payloads from the original archive or folder (:meth:`Source.iter_images`), and
chooses the classes of a store (:meth:`Source.split_classes`: the dataset's standard split, or
N classes sampled at random and split 50/50 by class, the study's ``-n N``).
"""

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasml.data.errors import SourceError

__all__ = ["RAW_FOLDER", "STORE_FOLDER", "Catalog", "Source", "SplitCounts", "store_filename"]

#: where ``kerasml download`` writes and ``kerasml ingest`` reads by default.
RAW_FOLDER = "data/raw"
#: where ``kerasml ingest`` writes its stores by default.
STORE_FOLDER = "data"


def store_filename(name, classes=None, seed=0):
    """The default file name of a store: ``<name>.h5``, ``<name>-<N>.h5`` or ``<name>-<N>-seed<S>.h5``.

    The class count is set off by a hyphen so that it never reads as part of the name
    (``cars196-20.h5``: 20 of Cars196's classes); a seed other than 0 is named too, because
    it draws other classes.

    Args:
        name: the source name (``"cub"``).
        classes: the ``--classes`` of the ingest, or ``None`` for the standard split.
        seed: the ``--seed`` of the ingest. Defaults to 0 (not named).

    Returns:
        The file name (a string).

    Example:

    >>> store_filename("cars196", 20), store_filename("cub"), store_filename("sop", 2300, seed=3)
    ('cars196-20.h5', 'cub.h5', 'sop-2300-seed3.h5')
    """
    stem = str(name)
    if classes is not None:
        stem += f"-{int(classes)}"
    if seed:
        stem += f"-seed{int(seed)}"
    return f"{stem}.h5"


def _quoted(text):
    """A command-line argument, in double quotes when it holds a space."""
    text = str(text)
    return f'"{text}"' if any(ch.isspace() for ch in text) or not text else text


@dataclass
class Catalog:
    """Every class and image of a dataset.

    Attributes:
        class_ids: the dataset's own class ids (int64 ``[C]``, ascending).
        class_names: a name per class id (same order).
        train_class_ids: the class ids of the dataset's standard training split.
        image_keys: one key per image, passed back to :meth:`Source.iter_images`
            (an archive-relative path for files).
        image_class_ids: the class id of each image (int64 ``[N]``).
        image_paths: a human-readable path per image (for provenance and error reports).
    """

    class_ids: np.ndarray
    class_names: list
    train_class_ids: np.ndarray
    image_keys: list
    image_class_ids: np.ndarray
    image_paths: list = field(default=None)

    def __post_init__(self):
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64)
        self.train_class_ids = np.asarray(self.train_class_ids, dtype=np.int64)
        self.image_class_ids = np.asarray(self.image_class_ids, dtype=np.int64)
        if self.image_paths is None:
            self.image_paths = [str(key) for key in self.image_keys]

    @property
    def num_classes(self):
        """The number of classes."""
        return len(self.class_ids)

    def name_of(self, class_id):
        """The name of one class id."""
        index = int(np.searchsorted(self.class_ids, class_id))
        return self.class_names[index]


@dataclass(frozen=True)
class SplitCounts:
    """How many classes and images one split of a dataset holds (what a batch layout can ask of it).

    Attributes:
        classes: the distinct classes.
        images: the images.
        classes_with_pairs: the classes with 2 or more images (an anchor and a positive).
    """

    classes: int
    images: int
    classes_with_pairs: int

    @classmethod
    def from_labels(cls, labels):
        """The counts of a split from its image labels (any int array-like)."""
        labels = np.asarray(labels).reshape(-1)
        per_class = np.unique(labels, return_counts=True)[1] if labels.size else np.zeros(0, np.int64)
        return cls(classes=int(per_class.size), images=int(labels.size), classes_with_pairs=int((per_class >= 2).sum()))


class Source(abc.ABC):
    """One dataset: how to list it, read it and choose its classes.

    Subclasses set :attr:`name`, :attr:`needs_path`, :attr:`default_image_size` and
    implement :meth:`catalog` and :meth:`iter_images`.

    Args:
        path: the original archive or extracted folder (``--from``); sources with
            ``needs_path = False`` ignore it.
    """

    #: the name used on the command line (``kerasml ingest NAME``).
    name = "source"
    #: whether the source reads files (``--from``).
    needs_path = True
    #: the default ``--image-size`` of its stores (pixels of the square side).
    default_image_size = 256
    #: how the standard split is defined (shown by ``kerasml info``).
    standard_split = ""
    #: the classes a generated dataset has when none are asked for (``None``: the data fixes them).
    default_classes = None
    #: the most classes a generated dataset can have (``None``: the data fixes them).
    max_classes = None
    #: what ``--from`` is, in the ingest command of :meth:`commands` (``None``: the default ``data/raw``).
    from_placeholder = None
    #: a sentence about getting the files, added where :meth:`commands` are shown (``""``: none).
    download_note = ""

    def __init__(self, path=None):
        self.path = None if path is None else Path(path)
        self._catalog = None

    def __repr__(self):
        return f"{type(self).__name__}(path={None if self.path is None else str(self.path)!r})"

    def options(self):
        """Source-specific options recorded in the store's provenance."""
        return {}

    @classmethod
    def commands(cls, store_path=None, classes=None, seed=0):
        """The commands that write a store of this dataset: ``kerasml download`` (if it has files
        to fetch) and ``kerasml ingest``.

        Args:
            store_path: the store to write; ``--out`` is added when it is not the default name
                (:func:`store_filename` under ``data/``). Defaults to the default name.
            classes: the ``--classes`` (``None``: the standard split).
            seed: the ``--seed``. Defaults to 0.

        Returns:
            A list of command lines (strings), to run in that order.

        Example:

        >>> from kerasml.data.sources import SOPSource
        >>> SOPSource.commands("data/sop-2300.h5", 2300)
        ['kerasml download sop --to data/raw', 'kerasml ingest sop --classes 2300']
        """
        from kerasml.data.download import REMOTES

        lines = []
        if cls.name in REMOTES:
            lines.append(f"kerasml download {cls.name} --to {RAW_FOLDER}")
        ingest = f"kerasml ingest {cls.name}"
        if cls.from_placeholder:
            ingest += f" --from {cls.from_placeholder}"
        if classes is not None:
            ingest += f" --classes {int(classes)}"
        if seed:
            ingest += f" --seed {int(seed)}"
        default = Path(STORE_FOLDER) / store_filename(cls.name, classes, seed)
        if store_path is not None and Path(store_path) != default:
            ingest += f" --out {_quoted(store_path)}"
        lines.append(ingest)
        return lines

    @classmethod
    def split_counts(cls, classes=None):
        """The classes and images of the splits `kerasml.data.ingest` writes, known without reading any file.

        Args:
            classes: the ``classes`` given to `kerasml.data.ingest` (``None``: the standard split).

        Returns:
            ``{"train": SplitCounts, "test": SplitCounts}``, or ``None`` when only the data can tell
            (every source that reads files).
        """
        del classes
        return None

    @abc.abstractmethod
    def _build_catalog(self):
        """Build the :class:`Catalog` (called once by :meth:`catalog`)."""

    def catalog(self):
        """The :class:`Catalog` of the dataset (built once, then cached).

        Raises:
            SourceError: if the dataset files cannot be found or parsed.
        """
        if self._catalog is None:
            self._catalog = self._build_catalog()
        return self._catalog

    @abc.abstractmethod
    def iter_images(self, keys: Sequence) -> Iterator[tuple[object, object]]:
        """Yield ``(key, payload)`` for the requested image keys, in any order.

        ``payload`` is the encoded file (``bytes``, decoded with OpenCV), a decoded
        ``uint8`` array (``HxW`` or ``HxWx3`` RGB), or ``None`` when the image is missing.
        Each requested key is yielded exactly once.
        """

    def split_classes(self, classes=None, seed=0):
        """Choose the training and test classes of a store.

        Args:
            classes: ``None`` for the dataset's standard split; else N: N classes drawn at
                random (seeded) and split 50/50 by class (the first ``ceil(N/2)`` drawn are
                training classes), so training and test classes never overlap.
            seed: the seed of the draw.

        Returns:
            ``(train_class_ids, test_class_ids)``: int64 arrays, in drawing order when
            sampled, ascending for the standard split.

        Raises:
            SourceError: if N is not between 2 and the number of classes.
        """
        catalog = self.catalog()
        if classes is None:
            train = np.sort(catalog.train_class_ids)
            test = np.setdiff1d(catalog.class_ids, train)
            return train, test
        total = catalog.num_classes
        if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or not 2 <= classes <= total:
            raise SourceError(
                f"Invalid number of classes for {self.name}: expected an integer from 2 to {total} (the classes "
                f"the dataset has), received {classes!r}. Use --classes N with 2 <= N <= {total}, or leave it out "
                "for the dataset's standard split."
            )
        rng = np.random.default_rng(seed)
        drawn = rng.choice(catalog.class_ids, size=int(classes), replace=False)
        n_train = (int(classes) + 1) // 2
        return drawn[:n_train].astype(np.int64), drawn[n_train:].astype(np.int64)


def require_path(source, hint):
    """The source's path, or a :class:`SourceError` that says how to get the data."""
    if source.path is None:
        raise SourceError(f"The {source.name} source needs --from PATH. {hint}")
    if not source.path.exists():
        raise SourceError(f"{source.path} does not exist ({source.name} source). {hint}")
    return source.path


def iter_from_reader(reader, keys):
    """Yield ``(key, bytes)`` from an :class:`~kerasml.data.archives.ArchiveReader`, then
    ``(key, None)`` for each requested key the archive does not have."""
    missing = dict.fromkeys(keys)
    for key, data in reader.iter_files(list(missing)):
        if key in missing:
            del missing[key]
            yield key, data
    for key in missing:
        yield key, None


def parse_table(text, columns, where):
    """Parse whitespace-separated lines of ``columns`` fields (the last one may hold spaces).

    Args:
        text: the file's text.
        columns: the number of fields per line.
        where: the file name, for error messages.

    Returns:
        A list of lists of strings, one per non-empty line.

    Raises:
        SourceError: naming the file and line of a malformed line.
    """
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(None, columns - 1)
        if len(fields) != columns:
            raise SourceError(
                f"{where}, line {number}: expected {columns} fields, found {len(fields)} ({line[:80]!r}). The file "
                "is corrupt or not from the original dataset: download it again."
            )
        rows.append(fields)
    return rows


def first_half_split(class_ids):
    """The lower half of the sorted class ids: the standard split of CUB (1-100) and Cars196 (1-98)."""
    class_ids = np.sort(np.asarray(class_ids, dtype=np.int64))
    return class_ids[: len(class_ids) // 2] if len(class_ids) > 1 else class_ids
