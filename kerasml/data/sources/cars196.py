"""Cars196 (Stanford Cars): 196 classes, 16,185 images.

Reads ``car_ims.tgz`` (``car_ims/000001.jpg`` ...) or the extracted ``car_ims/`` folder, and
``cars_annos.mat`` (MATLAB v5): an ``annotations`` struct array with ``relative_im_path``,
``class`` (1..196) and ``test`` (classification split only), and a ``class_names`` cell
array. Standard metric-learning split: classes 1-98 train, 99-196 test.
"""

import numpy as np

from kerasml.data.archives import ArchiveReader, as_file
from kerasml.data.errors import SourceError
from kerasml.data.sources.base import Catalog, Source, first_half_split, iter_from_reader, require_path

__all__ = ["Cars196Source"]

_HINT = (
    "Pass the folder holding cars_annos.mat and car_ims.tgz (or the extracted car_ims/ folder), or the path of "
    "cars_annos.mat itself (get them with `kerasml download cars196 --to data/raw`)."
)


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


def _load_annotations(data, where):
    import scipy.io

    try:
        mat = scipy.io.loadmat(as_file(data), squeeze_me=True, struct_as_record=True)
    except Exception as error:  # scipy raises several types for a corrupt file
        raise SourceError(f"{where} is not a readable MATLAB file ({error}). {_HINT}") from error
    if "annotations" not in mat:
        raise SourceError(f"{where} has no 'annotations' variable: it is not cars_annos.mat. {_HINT}")
    annotations = np.asarray(mat["annotations"]).reshape(-1)
    fields = annotations.dtype.names or ()
    for needed in ("relative_im_path", "class"):
        if needed not in fields:
            raise SourceError(f"{where}: 'annotations' has no field {needed!r} (fields: {fields}). {_HINT}")
    paths = [str(p).replace("\\", "/") for p in _flat(annotations["relative_im_path"])]
    classes = np.array([int(c) for c in _flat(annotations["class"])], dtype=np.int64)
    names = [str(n) for n in _flat(mat["class_names"])] if "class_names" in mat else []
    return paths, classes, names


class Cars196Source(Source):
    """Cars196 from ``cars_annos.mat`` plus ``car_ims.tgz`` or the ``car_ims/`` folder.

    Args:
        path: the folder holding ``cars_annos.mat`` and the images, or the ``.mat`` file.
    """

    name = "cars196"
    standard_split = "classes 1-98 train, 99-196 test (the lower half of the class ids)"

    def _locate(self):
        path = require_path(self, _HINT)
        folder = path.parent if path.is_file() else path
        mat = path if path.is_file() else folder / "cars_annos.mat"
        if not mat.is_file():
            raise SourceError(f"No cars_annos.mat in {folder}. {_HINT}")
        if (folder / "car_ims").is_dir():
            reader = ArchiveReader(folder)
        elif (folder / "car_ims.tgz").is_file():
            reader = ArchiveReader(folder / "car_ims.tgz")
        else:
            raise SourceError(f"No car_ims.tgz or car_ims/ folder next to {mat}. {_HINT}")
        return mat, reader

    def _build_catalog(self):
        mat, self._reader = self._locate()
        paths, image_class, names = _load_annotations(mat.read_bytes(), mat)
        class_ids = np.unique(image_class)
        if len(names) >= int(class_ids.max()):
            class_names = [names[int(c) - 1] for c in class_ids]
        else:
            class_names = [f"class_{int(c):03d}" for c in class_ids]
        return Catalog(
            class_ids=class_ids,
            class_names=class_names,
            train_class_ids=first_half_split(class_ids),
            image_keys=paths,
            image_class_ids=image_class,
        )

    def iter_images(self, keys):
        """Yield ``(key, jpeg bytes)`` (or ``None`` when missing) for the requested images."""
        self.catalog()
        yield from iter_from_reader(self._reader, keys)
