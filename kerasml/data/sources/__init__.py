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

from kerasml.data.errors import SourceError
from kerasml.data.sources.base import Catalog, Source, SplitCounts
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
