"""Stanford Online Products: 22,634 classes, 120,053 images.

Reads ``Stanford_Online_Products.zip`` or its extracted folder (top folder
``Stanford_Online_Products/``): ``Ebay_train.txt`` and ``Ebay_test.txt`` have a header line
``image_id class_id super_class_id path`` and one image a line (``path`` like
``bicycle_final/111085122871_0.JPG``). Standard split: the given files (11,318 training
classes, 11,316 test classes).
"""

import numpy as np

from kerasml.data.archives import ArchiveReader, read_text
from kerasml.data.errors import SourceError
from kerasml.data.sources.base import Catalog, Source, iter_from_reader, parse_table, require_path

__all__ = ["SOPSource"]

_FILES = ("Ebay_train.txt", "Ebay_test.txt")
_HINT = (
    "Pass the downloaded Stanford_Online_Products.zip, the folder holding it, or the extracted "
    "Stanford_Online_Products/ folder (get it with `kerasml download sop --to data/raw`)."
)


def _rows(text, where):
    rows = parse_table(text, 4, where)
    if rows and not rows[0][0].isdigit():
        rows = rows[1:]  # the header line
    try:
        return [(int(cid), path) for _, cid, _, path in rows]
    except ValueError as error:
        raise SourceError(f"{where}: a class id is not an integer ({error}). {_HINT}") from error


class SOPSource(Source):
    """Stanford Online Products from the zip or its extracted folder.

    Args:
        path: the zip, a folder containing it, the extracted ``Stanford_Online_Products/``
            folder or its parent.
    """

    name = "sop"
    standard_split = "Ebay_train.txt (11,318 classes) / Ebay_test.txt (11,316 classes)"

    def _locate(self):
        path = require_path(self, _HINT)
        if path.is_file():
            return ArchiveReader(path)
        for folder in (path, path / "Stanford_Online_Products"):
            if (folder / "Ebay_train.txt").is_file():
                return ArchiveReader(folder)
        archive = path / "Stanford_Online_Products.zip"
        if archive.is_file():
            return ArchiveReader(archive)
        raise SourceError(f"No Stanford Online Products data in {path}: no Ebay_train.txt or zip. {_HINT}")

    def _build_catalog(self):
        self._reader = self._locate()
        if self._reader.kind == "dir":
            self._prefix = ""
            missing = [name for name in _FILES if not (self._reader.path / name).is_file()]
            if missing:
                raise SourceError(f"{self._reader.path} lacks {', '.join(missing)}. {_HINT}")
            meta = {name: (self._reader.path / name).read_bytes() for name in _FILES}
        else:
            _, kept = self._reader.scan(keep=lambda n: n.rsplit("/", 1)[-1] in _FILES)
            found = sorted((n for n in kept if n.endswith("Ebay_train.txt")), key=len)
            if not found:
                raise SourceError(f"{self._reader.path} has no Ebay_train.txt: it is not the SOP archive. {_HINT}")
            self._prefix = found[0][: -len("Ebay_train.txt")]
            if self._prefix + "Ebay_test.txt" not in kept:
                raise SourceError(f"{self._reader.path} lacks {self._prefix}Ebay_test.txt. {_HINT}")
            meta = {name: kept[self._prefix + name] for name in _FILES}
        where = self._reader.path
        train = _rows(read_text(meta["Ebay_train.txt"]), f"{where}: Ebay_train.txt")
        test = _rows(read_text(meta["Ebay_test.txt"]), f"{where}: Ebay_test.txt")
        rows = train + test
        image_class = np.array([cid for cid, _ in rows], dtype=np.int64)
        class_ids = np.unique(image_class)
        first_path = {}
        for cid, path in rows:
            first_path.setdefault(cid, path)
        names = []
        for cid in class_ids:
            folder, _, file = first_path[int(cid)].rpartition("/")
            names.append(f"{folder}/{file.split('_')[0]}")
        train_ids = np.unique(np.array([cid for cid, _ in train], dtype=np.int64))
        overlap = np.intersect1d(train_ids, np.array([cid for cid, _ in test], dtype=np.int64))
        if overlap.size:
            raise SourceError(f"{where}: classes {overlap[:5].tolist()} are in both Ebay_train.txt and Ebay_test.txt.")
        return Catalog(
            class_ids=class_ids,
            class_names=names,
            train_class_ids=train_ids,
            image_keys=[self._prefix + path for _, path in rows],
            image_class_ids=image_class,
            image_paths=[path for _, path in rows],
        )

    def iter_images(self, keys):
        """Yield ``(key, jpeg bytes)`` (or ``None`` when missing) for the requested images."""
        self.catalog()
        yield from iter_from_reader(self._reader, keys)
