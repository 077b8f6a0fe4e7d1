"""CUB-200-2011 (birds): 200 classes, 11,788 images.

Reads ``CUB_200_2011.tgz`` as downloaded, or the folder it extracts to. Layout (top folder
``CUB_200_2011/``): ``images/<NNN.Class_name>/<file>.jpg``, ``images.txt``
(``<image_id> <path under images/>``), ``image_class_labels.txt`` (``<image_id> <class_id>``)
and ``classes.txt`` (``<class_id> <NNN.Class_name>``). Standard metric-learning split:
classes 1-100 train, 101-200 test.
"""

from pathlib import Path

import numpy as np

from kerasml.data.archives import ArchiveReader, read_text
from kerasml.data.errors import SourceError
from kerasml.data.sources.base import Catalog, Source, first_half_split, iter_from_reader, parse_table, require_path

__all__ = ["CUBSource"]

_META = ("images.txt", "image_class_labels.txt", "classes.txt")
_HINT = (
    "Pass the downloaded CUB_200_2011.tgz, the folder holding it, or the extracted CUB_200_2011/ folder "
    "(get it with `kerasml download cub --to data/raw`)."
)


class CUBSource(Source):
    """CUB-200-2011 from ``CUB_200_2011.tgz`` or its extracted folder.

    Args:
        path: the archive, a folder containing it, the extracted ``CUB_200_2011/``
            folder or its parent.
    """

    name = "cub"
    standard_split = "classes 1-100 train, 101-200 test (the lower half of the class ids)"

    def _locate(self):
        path = require_path(self, _HINT)
        if path.is_file():
            return ArchiveReader(path)
        for folder in (path, path / "CUB_200_2011"):
            if (folder / "images.txt").is_file():
                return ArchiveReader(folder)
        archive = path / "CUB_200_2011.tgz"
        if archive.is_file():
            return ArchiveReader(archive)
        raise SourceError(f"No CUB-200-2011 data in {path}: found neither images.txt nor CUB_200_2011.tgz. {_HINT}")

    def _build_catalog(self):
        self._reader = self._locate()
        if self._reader.kind == "dir":
            root = self._reader.path
            self._prefix = ""
            missing = [name for name in _META if not (root / name).is_file()]
            if missing:
                raise SourceError(f"{root} lacks {', '.join(missing)}. {_HINT}")
            meta = {name: (root / name).read_bytes() for name in _META}
        else:
            _, kept = self._reader.scan(keep=lambda n: Path(n).name in _META)
            found = sorted((n for n in kept if Path(n).name == "images.txt"), key=len)
            if not found:
                raise SourceError(f"{self._reader.path} has no images.txt: it is not the CUB-200-2011 archive. {_HINT}")
            self._prefix = found[0][: -len("images.txt")]
            meta = {}
            for name in _META:
                if self._prefix + name not in kept:
                    raise SourceError(f"{self._reader.path} lacks {self._prefix + name}. {_HINT}")
                meta[name] = kept[self._prefix + name]
        where = self._reader.path
        images = parse_table(read_text(meta["images.txt"]), 2, f"{where}: images.txt")
        labels = dict(parse_table(read_text(meta["image_class_labels.txt"]), 2, f"{where}: image_class_labels.txt"))
        classes = parse_table(read_text(meta["classes.txt"]), 2, f"{where}: classes.txt")
        try:
            class_ids = np.array([int(cid) for cid, _ in classes], dtype=np.int64)
            image_class = np.array([int(labels[iid]) for iid, _ in images], dtype=np.int64)
        except (KeyError, ValueError) as error:
            raise SourceError(
                f"{where}: images.txt, image_class_labels.txt and classes.txt do not match ({error}). "
                f"The files are corrupt: download the dataset again. {_HINT}"
            ) from error
        order = np.argsort(class_ids)
        unknown = np.setdiff1d(image_class, class_ids)
        if unknown.size:
            raise SourceError(
                f"{where}: image_class_labels.txt uses class ids {unknown[:5].tolist()} not in classes.txt."
            )
        keys = [f"{self._prefix}images/{path}" for _, path in images]
        return Catalog(
            class_ids=class_ids[order],
            class_names=[classes[i][1] for i in order],
            train_class_ids=first_half_split(class_ids),
            image_keys=keys,
            image_class_ids=image_class,
            image_paths=[path for _, path in images],
        )

    def iter_images(self, keys):
        """Yield ``(key, jpeg bytes)`` (or ``None`` when missing) for the requested images."""
        self.catalog()
        yield from iter_from_reader(self._reader, keys)
