"""Any labelled images: one subfolder per class.

``DIR/<class name>/<image>`` (any depth below the class folder), or ``DIR/train/<class>/...``
plus ``DIR/test/<class>/...`` to fix the split. Images are files ending with ``.jpg``,
``.jpeg``, ``.png``, ``.bmp``, ``.webp``, ``.tif``, ``.tiff``, ``.ppm`` or ``.pgm``
(any case). Class ids are 0, 1, ... in the sorted order of the class folder names.
"""

import numpy as np

from kerasml.data.archives import ArchiveReader
from kerasml.data.errors import SourceError
from kerasml.data.sources.base import Catalog, Source, iter_from_reader, require_path

__all__ = ["IMAGE_SUFFIXES", "FolderSource"]

#: the file name endings read as images.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_HINT = "Give --from a folder with one subfolder of images per class (or train/ and test/ folders of those)."


def _class_folders(root):
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder):
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


class FolderSource(Source):
    """Images in one subfolder per class (any user data).

    Without ``train/`` and ``test/`` folders there is no standard split: leaving out
    ``--classes`` splits all classes 50/50 at random (seeded).

    Args:
        path: the folder.
    """

    name = "folder"
    from_placeholder = "YOUR_IMAGE_FOLDER"
    standard_split = "train/ and test/ folders if present, else all classes split 50/50 at random (seeded)"

    def _build_catalog(self):
        root = require_path(self, _HINT)
        if not root.is_dir():
            raise SourceError(f"{root} is not a folder. {_HINT}")
        self._reader = ArchiveReader(root)
        parts = [root / "train", root / "test"]
        self._fixed_split = all(p.is_dir() for p in parts) and all(_class_folders(p) for p in parts)
        groups = [(p, p.name == "train") for p in parts] if self._fixed_split else [(root, True)]
        names, train_flags, keys, labels = [], [], [], []
        for base, is_train in groups:
            for folder in _class_folders(base):
                files = _images(folder)
                if not files:
                    continue
                name = folder.relative_to(root).as_posix() if self._fixed_split else folder.name
                names.append(name)
                train_flags.append(is_train)
                keys.extend(f.relative_to(root).as_posix() for f in files)
                labels.extend([len(names) - 1] * len(files))
        if len(names) < 2:
            raise SourceError(f"{root} has {len(names)} class folder(s) with images; at least 2 are needed. {_HINT}")
        if self._fixed_split:
            bare = [n.split("/", 1)[1] for n in names]
            shared = sorted({n for n in bare if bare.count(n) > 1})
            if shared:
                raise SourceError(
                    f"{root}: the classes {shared[:5]} are in both train/ and test/. Metric learning evaluates on "
                    "unseen classes: move each class to one side."
                )
        class_ids = np.arange(len(names), dtype=np.int64)
        return Catalog(
            class_ids=class_ids,
            class_names=names,
            train_class_ids=class_ids[np.array(train_flags)],
            image_keys=keys,
            image_class_ids=np.array(labels, dtype=np.int64),
        )

    def split_classes(self, classes=None, seed=0):
        """The train/ and test/ folders, or a seeded 50/50 split (see :meth:`Source.split_classes`)."""
        catalog = self.catalog()
        if classes is None and not self._fixed_split:
            return super().split_classes(catalog.num_classes, seed)
        return super().split_classes(classes, seed)

    def iter_images(self, keys):
        """Yield ``(key, file bytes)`` (or ``None`` when missing) for the requested images."""
        self.catalog()
        yield from iter_from_reader(self._reader, keys)
