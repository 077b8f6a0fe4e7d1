"""Cars196 (Stanford Cars): 196 classes, 16,185 images, in either of its two releases.

The **original release**: ``car_ims.tgz`` (``car_ims/000001.jpg`` ...) or the extracted
``car_ims/`` folder, plus ``cars_annos.mat`` (MATLAB v5): an ``annotations`` struct array with
``relative_im_path``, ``class`` (1..196) and ``test`` (classification split only), and a
``class_names`` cell array. Some mirrors pack both into one zip (``CARS196.zip``).

The **train/test release** (what most mirrors carry since the official host went offline):
``cars_train/`` (8,144 images) and ``cars_test/`` (8,041 images), as folders or as
``cars_train.tgz`` / ``cars_test.tgz``, possibly nested once (``cars_train/cars_train/``); the
devkit (a ``devkit/`` folder or ``car_devkit.tgz``) with ``cars_meta.mat`` (``class_names``) and
``cars_train_annos.mat`` (``annotations`` with ``fname`` and ``class``); and the test labels
``cars_test_annos_withlabels.mat`` (the devkit's own ``cars_test_annos.mat`` has no labels).

Both give the same 196 class ids with the same names, so the same classes in the same order
(and the same ``--classes N --seed S`` draw). Standard metric-learning split: classes 1-98
train, 99-196 test.
"""

import re

import numpy as np

from kerasml.data.archives import ArchiveReader, as_file
from kerasml.data.errors import ArchiveError, SourceError
from kerasml.data.sources.base import Catalog, Source, first_half_split, iter_from_reader, require_path

__all__ = ["Cars196Source"]

_HINT = (
    "Pass the folder (or one archive) holding either release: cars_annos.mat with car_ims.tgz or car_ims/ "
    "(the original release), or cars_train/ and cars_test/ (folders or .tgz) with the devkit (cars_meta.mat, "
    "cars_train_annos.mat) and cars_test_annos_withlabels.mat (the train/test release). The official host is "
    "offline: `kerasml download cars196` lists mirrors."
)
_TEST_LABELS = re.compile(r"cars_test_annos_withlabels.*\.mat")
_IMAGE = re.compile(r".*\.(jpe?g|png)", re.IGNORECASE)
_ARCHIVES = (".zip", ".tgz", ".tar", ".tar.gz")


def _flat(value):
    """A MATLAB cell/field value as a flat list of Python scalars or strings."""
    array = np.asarray(value, dtype=object).reshape(-1)
    out = []
    for item in array:
        if isinstance(item, np.ndarray):
            item = item.reshape(-1)
            item = item[0] if item.size == 1 else "".join(str(x) for x in item)
        out.append(item.item() if isinstance(item, np.generic) else item)
    return out


def _load_mat(data, where):
    import scipy.io

    try:
        return scipy.io.loadmat(as_file(data), squeeze_me=True, struct_as_record=True)
    except Exception as error:  # scipy raises several types for a corrupt file
        raise SourceError(f"{where} is not a readable MATLAB file ({error}). {_HINT}") from error


def _annotations(mat, where, needed):
    """The ``annotations`` struct array of a .mat file, with the ``needed`` fields checked."""
    if "annotations" not in mat:
        raise SourceError(f"{where} has no 'annotations' variable: it is not a Cars196 annotation file. {_HINT}")
    annotations = np.asarray(mat["annotations"]).reshape(-1)
    fields = annotations.dtype.names or ()
    for name in needed:
        if name not in fields:
            raise SourceError(f"{where}: 'annotations' has no field {name!r} (fields: {fields}). {_HINT}")
    return annotations


def _classes(annotations):
    return np.array([int(c) for c in _flat(annotations["class"])], dtype=np.int64)


def _names(mat):
    return [str(n) for n in _flat(mat["class_names"])] if "class_names" in mat else []


class _Files:
    """Every file of a folder and of the Cars196 archives in it (or of one archive), by name.

    ``names`` maps a name (``cars_train/00001.jpg``, ``car_devkit/devkit/cars_meta.mat``) to the
    reader holding it and its name there. The large image archives (``car_ims.tgz``,
    ``cars_train.tgz``, ``cars_test.tgz``) are not listed, which would cost a pass over
    gigabytes: their members sit under the folder they are named after. Other archives in a
    folder are listed only when the folder alone does not hold a release (:meth:`add_archives`).
    """

    STREAMED = {"car_ims.tgz": "car_ims", "cars_train.tgz": "cars_train", "cars_test.tgz": "cars_test"}

    def __init__(self, path):
        self.names = {}
        self.streamed = {}  # image folder -> reader of its large archive
        self._archives = []
        if not path.is_dir():
            self._add(ArchiveReader(path))
            return
        self._add(ArchiveReader(path))
        for archive in sorted(path.iterdir()):
            lower = archive.name.lower()
            if not archive.is_file() or not lower.endswith(_ARCHIVES):
                continue
            if lower in self.STREAMED:
                self.streamed[self.STREAMED[lower]] = ArchiveReader(archive)
            elif "devkit" in lower:
                self._add(ArchiveReader(archive))
            elif lower.endswith(".zip") or "car" in lower:  # not another dataset's tarball
                self._archives.append(archive)

    def _add(self, reader):
        for name in reader.names():
            self.names.setdefault(name, (reader, name))

    def add_archives(self):
        """List the other archives of the folder too; returns whether there were any."""
        archives, self._archives = self._archives, []
        for archive in archives:
            self._add(ArchiveReader(archive))
        return bool(archives)

    def find(self, pattern):
        """The shortest name whose file name is ``pattern`` (a string, or a compiled regex it must match)."""

        def hit(name):
            base = name.rsplit("/", 1)[-1]
            return pattern.fullmatch(base) if isinstance(pattern, re.Pattern) else base == pattern

        matches = [name for name in self.names if hit(name)]
        return min(matches, key=lambda n: (n.count("/"), n)) if matches else None

    def read(self, name):
        """The bytes of one listed file."""
        reader, member = self.names[name]
        return reader.read(member)

    def image_folder(self, folder):
        """Where the images of ``folder`` (``car_ims``, ``cars_train``, ``cars_test``) are.

        Returns:
            ``(reader, prefix)`` with image ``f`` at ``prefix + f`` (``reader`` is ``None`` for
            listed files: look each up in :attr:`names`), or ``None`` when there are none.
        """
        counts = {}
        for name in self.names:
            parent, _, file = name.rpartition("/")
            if parent.rsplit("/", 1)[-1] == folder and _IMAGE.fullmatch(file):
                counts[parent] = counts.get(parent, 0) + 1
        if counts:  # the fullest folder: cars_train/cars_train/ in the Kaggle copy
            return None, max(counts, key=lambda p: (counts[p], -p.count("/"))) + "/"
        if folder in self.streamed:
            return self.streamed[folder], folder + "/"
        return None


class Cars196Source(Source):
    """Cars196 from its original release or from its train/test release (see the module docstring).

    Args:
        path: a folder holding either release (files may sit in subfolders or archives inside
            it), one archive holding it, or the path of ``cars_annos.mat``.
    """

    name = "cars196"
    standard_split = "classes 1-98 train, 99-196 test (the lower half of the class ids)"
    download_note = (
        "(Cars196's official host is offline: `kerasml download cars196` says where the files are now; "
        "`kerasml ingest` reads both of their layouts.)"
    )

    def _build_catalog(self):
        path = require_path(self, _HINT)
        lower = path.name.lower()
        part = lower.endswith(".mat") or lower in _Files.STREAMED or "devkit" in lower
        folder = path.parent if path.is_file() and part else path  # one file of a release: its folder
        try:
            files = _Files(folder)
            if path.name == "cars_annos.mat" and path.is_file():  # the original release's .mat itself
                return self._original(files, path.read_bytes(), path)
            for _ in range(2):
                annos = files.find("cars_annos.mat")
                if annos is not None and files.image_folder("car_ims") is not None:
                    return self._original(files, files.read(annos), f"{folder}: {annos}")
                if files.find("cars_train_annos.mat") is not None and files.image_folder("cars_train") is not None:
                    return self._train_test(files, folder)
                if not files.add_archives():
                    break
        except ArchiveError as error:
            raise SourceError(f"{error} {_HINT}") from error
        if files.find("cars_annos.mat") is not None:
            raise SourceError(f"No car_ims.tgz or car_ims/ images next to cars_annos.mat in {folder}. {_HINT}")
        if files.find("cars_train_annos.mat") is not None or files.image_folder("cars_train") is not None:
            return self._train_test(files, folder)  # says which part is missing
        raise SourceError(f"{folder} holds neither release of Cars196. {_HINT}")

    def _original(self, files, data, where):
        located = files.image_folder("car_ims")
        if located is None:
            raise SourceError(f"No car_ims.tgz or car_ims/ images next to {where}. {_HINT}")
        mat = _load_mat(data, where)
        annotations = _annotations(mat, where, ("relative_im_path", "class"))
        paths = [str(p).replace("\\", "/") for p in _flat(annotations["relative_im_path"])]
        keys = [p if p.startswith("car_ims/") else "car_ims/" + p.rsplit("/", 1)[-1] for p in paths]
        self._where = {key: self._locate(files, *located, key.split("/", 1)[1]) for key in keys}
        return self._catalog_of(keys, _classes(annotations), _names(mat))

    def _train_test(self, files, path):
        def mat(pattern, what):
            name = files.find(pattern)
            if name is None:
                raise SourceError(f"No {what} in {path} (the train/test release of Cars196 needs it). {_HINT}")
            return name, _load_mat(files.read(name), f"{path}: {name}")

        _, meta = mat("cars_meta.mat", "cars_meta.mat (the devkit's class names)")
        train_name, train = mat("cars_train_annos.mat", "cars_train_annos.mat (the devkit's training labels)")
        if files.find(_TEST_LABELS) is None and files.find("cars_test_annos.mat") is not None:
            raise SourceError(
                f"{path} has the devkit's cars_test_annos.mat, which holds no class labels. Add "
                "cars_test_annos_withlabels.mat (the test labels; linked from pytorch/vision issue #7545, see "
                f"docs/datasets.md) next to it. {_HINT}"
            )
        test_name, test = mat(_TEST_LABELS, "cars_test_annos_withlabels.mat (the test labels)")
        keys, classes = [], []
        self._where = {}
        for folder, annotations_name, mat_data in (("cars_train", train_name, train), ("cars_test", test_name, test)):
            located = files.image_folder(folder)
            if located is None:
                raise SourceError(f"No {folder}/ images (a folder or {folder}.tgz) in {path}. {_HINT}")
            annotations = _annotations(mat_data, f"{path}: {annotations_name}", ("fname", "class"))
            for fname, class_id in zip(_flat(annotations["fname"]), _classes(annotations), strict=True):
                fname = str(fname).replace("\\", "/").rsplit("/", 1)[-1]
                key = f"{folder}/{fname}"
                self._where[key] = self._locate(files, *located, fname)
                keys.append(key)
                classes.append(class_id)
        return self._catalog_of(keys, np.asarray(classes, dtype=np.int64), _names(meta))

    @staticmethod
    def _locate(files, reader, prefix, file):
        if reader is not None:  # a large archive read as a stream
            return reader, prefix + file
        name = prefix + file
        return files.names.get(name, (None, name))

    def _catalog_of(self, keys, image_class, names):
        class_ids = np.unique(image_class)
        if len(names) >= int(class_ids.max()):
            class_names = [names[int(c) - 1] for c in class_ids]
        else:
            class_names = [f"class_{int(c):03d}" for c in class_ids]
        return Catalog(
            class_ids=class_ids,
            class_names=class_names,
            train_class_ids=first_half_split(class_ids),
            image_keys=keys,
            image_class_ids=image_class,
        )

    def iter_images(self, keys):
        """Yield ``(key, jpeg bytes)`` (or ``None`` when missing) for the requested images."""
        self.catalog()
        by_reader = {}
        for key in keys:
            reader, member = self._where.get(key, (None, None))
            if reader is None:
                yield key, None
            else:
                by_reader.setdefault(id(reader), (reader, {}))[1][member] = key
        for reader, members in by_reader.values():
            for member, data in iter_from_reader(reader, list(members)):
                yield members[member], data
