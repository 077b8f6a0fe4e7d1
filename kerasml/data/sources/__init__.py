"""Dataset sources: one class per dataset behind :class:`~kerasml.data.sources.base.Source`.

========== ============================================================ ==============
name       reads                                                        standard split
========== ============================================================ ==============
cub        ``CUB_200_2011.tgz`` or its folder                           classes 1-100 / 101-200
cars196    ``cars_annos.mat`` + ``car_ims.tgz`` or ``car_ims/``         classes 1-98 / 99-196
sop        ``Stanford_Online_Products.zip`` or its folder               Ebay_train / Ebay_test
folder     one subfolder per class (any user data)                      train/ test/, or 50/50
digits     scikit-learn's bundled 8x8 digits (offline)                  digits 0-4 / 5-9
procedural seeded OpenCV renderings, any number of classes (offline)    first half / second half
========== ============================================================ ==============
"""

import re
from pathlib import Path

from kerasml.data.errors import SourceError
from kerasml.data.sources.base import Catalog, Source, SplitCounts, store_filename
from kerasml.data.sources.cars196 import Cars196Source
from kerasml.data.sources.cub import CUBSource
from kerasml.data.sources.digits import DigitsSource
from kerasml.data.sources.folder import FolderSource
from kerasml.data.sources.procedural import ProceduralSource
from kerasml.data.sources.sop import SOPSource

__all__ = [
    "SOURCES",
    "CUBSource",
    "Cars196Source",
    "Catalog",
    "DigitsSource",
    "FolderSource",
    "ProceduralSource",
    "SOPSource",
    "Source",
    "SplitCounts",
    "get_source",
    "parse_store_path",
    "store_commands",
    "store_filename",
    "store_hint",
]

#: name -> Source class.
SOURCES = {cls.name: cls for cls in (CUBSource, Cars196Source, SOPSource, FolderSource, DigitsSource, ProceduralSource)}
_ALIASES = {"cars": "cars196", "stanford_online_products": "sop", "image_folder": "folder", "cub200": "cub"}


def get_source(name, path=None, **options):
    """Build a dataset source by name.

    Args:
        name: ``"cub"``, ``"cars196"``, ``"sop"``, ``"folder"``, ``"digits"`` or
            ``"procedural"`` (case-insensitive; ``"cars"`` and ``"image_folder"`` also work).
        path: the archive or folder to read (``--from``); ignored by digits/procedural.
        **options: source-specific options (procedural: ``classes``,
            ``images_per_class``, ``seed``).

    Returns:
        A :class:`Source`.

    Raises:
        SourceError: for an unknown name or an option the source does not take.

    Example:

    >>> from kerasml.data import get_source
    >>> source = get_source("digits")
    >>> source.catalog().num_classes
    10
    """
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key not in SOURCES:
        raise SourceError(f"Unknown dataset {name!r}. Expected one of: {', '.join(SOURCES)}.")
    cls = SOURCES[key]
    if options and cls is not ProceduralSource:
        raise SourceError(f"The {key} source takes no options; received {sorted(options)}.")
    return cls(path, **options)


_STORE_NAME = re.compile(r"(?P<name>[a-z0-9_]+?)(?:-(?P<classes>\d+))?(?:-seed(?P<seed>\d+))?")


def parse_store_path(path):
    """The dataset, class count and seed a store's file name stands for (:func:`store_filename` reversed).

    Reads ``cub.h5``, ``cars196-20.h5``, ``sop-2300-seed3.h5`` and the names of kerasml before
    0.4 (``cars19620.h5``: the longest dataset name followed by the class count).

    Args:
        path: a store path (only its file name is read).

    Returns:
        ``(source_name, classes, seed)`` (``classes`` is ``None`` for a standard split), or
        ``None`` when the name is not one kerasml gives.

    Example:

    >>> parse_store_path("data/sop-2300.h5"), parse_store_path("data/cub.h5"), parse_store_path("mine.h5")
    (('sop', 2300, 0), ('cub', None, 0), None)
    """
    name = Path(str(path)).name
    if not name.lower().endswith(".h5"):
        return None
    stem = name[:-3].lower()
    match = _STORE_NAME.fullmatch(stem)
    if match and _ALIASES.get(match["name"], match["name"]) in SOURCES:
        classes = None if match["classes"] is None else int(match["classes"])
        return _ALIASES.get(match["name"], match["name"]), classes, int(match["seed"] or 0)
    for source in sorted(SOURCES, key=len, reverse=True):  # the old names: <name><N>.h5
        rest = stem[len(source) :]
        if stem.startswith(source) and rest.isdigit():
            return source, int(rest), 0
    return None


def store_commands(path):
    """The commands that write the store ``path`` (download and ingest), asked from its data source.

    Args:
        path: a store path whose file name kerasml gives (see :func:`parse_store_path`).

    Returns:
        The list of command lines, or ``None`` when the file name names no dataset.

    Example:

    >>> store_commands("data/cars196-20.h5")
    ['kerasml download cars196 --to data/raw', 'kerasml ingest cars196 --classes 20']
    >>> store_commands("data/cub20.h5")
    ['kerasml download cub --to data/raw', 'kerasml ingest cub --classes 20 --out data/cub20.h5']
    """
    parsed = parse_store_path(path)
    if parsed is None:
        return None
    name, classes, seed = parsed
    return SOURCES[name].commands(path, classes, seed)


def store_hint(path):
    """A sentence saying how to create the store ``path``: its exact commands when its file name
    names a dataset (:func:`store_commands`), else the general form.

    Example:

    >>> store_hint("data/sop-2300.h5")
    'Create it with `kerasml download sop --to data/raw`, then `kerasml ingest sop --classes 2300`.'
    """
    commands = store_commands(path)
    if commands is None:
        return (
            f"Create it with `kerasml ingest NAME --out {path}` (NAME: {', '.join(SOURCES)}; see "
            "`kerasml ingest --help`), or point to the store you meant."
        )
    quoted = [f"`{line}`" for line in commands]
    text = f"Create it with {', then '.join(quoted)}."
    note = SOURCES[parse_store_path(path)[0]].download_note
    return f"{text} {note}" if note else text
