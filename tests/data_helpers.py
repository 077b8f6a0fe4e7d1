"""Tiny datasets in the original formats (CUB, Cars196, SOP, folders), built with OpenCV.

Each image is a small flat-coloured JPEG whose colour encodes its class, so tests can check
that the right pixels landed under the right label.
"""

import io
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import scipy.io


def class_colour(class_id):
    """A distinct RGB colour per class id."""
    rng = np.random.default_rng(int(class_id) + 1000)
    return rng.integers(30, 226, 3).astype(np.uint8)


def jpeg(class_id, height=20, width=28):
    """JPEG bytes of a ``height x width`` image of the class colour (RGB)."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = class_colour(class_id)
    ok, data = cv2.imencode(".jpg", image[..., ::-1])
    assert ok
    return data.tobytes()


def png(class_id, size=24):
    ok, data = cv2.imencode(".png", np.full((size, size, 3), class_colour(class_id)[::-1], np.uint8))
    assert ok
    return data.tobytes()


def _tar_add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_cub(root, classes=6, per_class=3, corrupt=0, as_archive=True):
    """A tiny ``CUB_200_2011.tgz`` (or extracted folder) under ``root``.

    Returns:
        The archive path (or the ``CUB_200_2011`` folder) and ``{class_id: n_images}``.
    """
    root = Path(root)
    files = {}
    images, labels = [], []
    image_id = 0
    for c in range(1, classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        for k in range(per_class):
            image_id += 1
            rel = f"{folder}/Bird_{c}_{k:04d}.jpg"
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            data = jpeg(c)
            if corrupt and k == 0 and c <= corrupt:
                data = b"\xff\xd8 this is not a jpeg"
            files[f"CUB_200_2011/images/{rel}"] = data
    files["CUB_200_2011/images.txt"] = ("\n".join(images) + "\n").encode()
    files["CUB_200_2011/image_class_labels.txt"] = ("\n".join(labels) + "\n").encode()
    files["CUB_200_2011/classes.txt"] = "".join(f"{c} {c:03d}.Bird_{c}\n" for c in range(1, classes + 1)).encode()
    files["CUB_200_2011/train_test_split.txt"] = "".join(f"{i} {i % 2}\n" for i in range(1, image_id + 1)).encode()
    files["attributes.txt"] = b"1 has_bill_shape::curved\n"
    if as_archive:
        root.mkdir(parents=True, exist_ok=True)
        path = root / "CUB_200_2011.tgz"
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                _tar_add(tar, name, data)
        return path, {c: per_class for c in range(1, classes + 1)}
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root / "CUB_200_2011", {c: per_class for c in range(1, classes + 1)}


def make_cars(root, classes=6, per_class=3, extracted=False, zipped=False):
    """A tiny Cars196, the original release: ``cars_annos.mat`` (scipy.io.savemat) plus ``car_ims.tgz``,
    ``car_ims/`` (``extracted``), or both in one ``CARS196.zip`` (``zipped``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = classes * per_class
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.zeros((1, n), dtype=[(f, "O") for f in fields])
    images = {}
    for i in range(n):
        c = i % classes + 1  # interleaved classes, as in the real file
        rel = f"car_ims/{i + 1:06d}.jpg"
        images[rel] = jpeg(100 + c, 18, 30)
        annotations[0, i] = (rel, 1, 2, 27, 16, c, i % 2)
    names = _cars_names(classes)
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": names})
    if zipped:  # one zip holding the original release, as Stanford's CVGL server serves it
        with zipfile.ZipFile(root / "CARS196.zip", "w") as zf:
            zf.write(root / "cars_annos.mat", "cars196/cars_annos.mat")
            for rel, data in images.items():
                zf.writestr(f"cars196/{rel}", data)
        (root / "cars_annos.mat").unlink()
    elif extracted:
        for rel, data in images.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
    else:
        with tarfile.open(root / "car_ims.tgz", "w:gz") as tar:
            for rel, data in images.items():
                _tar_add(tar, rel, data)
    return root


def _cars_names(classes):
    names = np.empty((1, classes), dtype=object)
    for c in range(classes):
        names[0, c] = f"Maker Model {c + 1} 2012"
    return names


def _mat_bytes(variables):
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    return buffer.getvalue()


def make_cars_train_test(root, classes=6, per_class=3, layout="folders"):
    """The same tiny Cars196 as :func:`make_cars`, as the train/test release.

    ``cars_train/`` and ``cars_test/`` (images ``00001.jpg`` ... numbered per split; even images of
    :func:`make_cars`'s order go to train), the devkit (``cars_meta.mat``,
    ``cars_train_annos.mat``, ``cars_test_annos.mat`` without labels) and
    ``cars_test_annos_withlabels.mat``.

    Args:
        layout: ``"folders"`` (``cars_train/``, ``devkit/``), ``"kaggle"`` (nested
            ``cars_train/cars_train/``, ``car_devkit/devkit/``), ``"archives"``
            (``cars_train.tgz``, ``cars_test.tgz``, ``car_devkit.tgz``) or ``"zip"`` (everything
            in one ``stanford-cars.zip``, as a Kaggle download).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    splits = {"cars_train": [], "cars_test": []}
    for i in range(classes * per_class):
        c = i % classes + 1
        splits["cars_train" if i % 2 == 0 else "cars_test"].append(c)
    files = {}
    annotations = {}
    nest = layout == "kaggle"
    for split, labels in splits.items():
        records = np.zeros((1, len(labels)), dtype=[(f, "O") for f in fields])
        for k, c in enumerate(labels):
            fname = f"{k + 1:05d}.jpg"
            records[0, k] = (1, 2, 27, 16, c, fname)
            files[f"{split}/{split + '/' if nest else ''}{fname}"] = jpeg(100 + c, 18, 30)
        annotations[split] = records
    unlabelled = np.zeros((1, len(splits["cars_test"])), dtype=[(f, "O") for f in fields if f != "class"])
    for k in range(unlabelled.shape[1]):
        unlabelled[0, k] = (1, 2, 27, 16, f"{k + 1:05d}.jpg")
    devkit = "car_devkit/devkit/" if nest else "devkit/"
    files[devkit + "cars_meta.mat"] = _mat_bytes({"class_names": _cars_names(classes)})
    files[devkit + "cars_train_annos.mat"] = _mat_bytes({"annotations": annotations["cars_train"]})
    files[devkit + "cars_test_annos.mat"] = _mat_bytes({"annotations": unlabelled})
    files["cars_test_annos_withlabels.mat"] = _mat_bytes({"annotations": annotations["cars_test"]})
    if layout in ("folders", "kaggle"):
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    elif layout == "archives":
        for archive, prefix in (
            ("cars_train.tgz", "cars_train/"),
            ("cars_test.tgz", "cars_test/"),
            ("car_devkit.tgz", "devkit/"),
        ):
            with tarfile.open(root / archive, "w:gz") as tar:
                for name, data in files.items():
                    if name.startswith(prefix):
                        _tar_add(tar, name, data)
        (root / "cars_test_annos_withlabels.mat").write_bytes(files["cars_test_annos_withlabels.mat"])
    else:
        with zipfile.ZipFile(root / "stanford-cars.zip", "w") as zf:
            for name, data in files.items():
                zf.writestr(f"stanford_cars/{name}", data)
    return root


def make_sop(root, train_classes=4, test_classes=4, per_class=(2, 3)):
    """A tiny ``Stanford_Online_Products.zip``; returns its path and the class ids of each split."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    supers = ["bicycle", "chair", "kettle"]
    rows = {"train": [], "test": []}
    files = {}
    image_id = 0
    class_id = 0
    for split, count in (("train", train_classes), ("test", test_classes)):
        for _ in range(count):
            class_id += 1
            super_id = class_id % len(supers)
            product = 111000000000 + class_id
            for k in range(per_class[class_id % len(per_class)]):
                image_id += 1
                rel = f"{supers[super_id]}_final/{product}_{k}.JPG"
                rows[split].append(f"{image_id} {class_id} {super_id + 1} {rel}")
                files[f"Stanford_Online_Products/{rel}"] = jpeg(200 + class_id, 24, 24)
    for split in rows:
        header = "image_id class_id super_class_id path\n"
        files[f"Stanford_Online_Products/Ebay_{split}.txt"] = (header + "\n".join(rows[split]) + "\n").encode()
    files["Stanford_Online_Products/Ebay_info.txt"] = b"image_id class_id super_class_id path\n"
    path = root / "Stanford_Online_Products.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    train_ids = list(range(1, train_classes + 1))
    test_ids = list(range(train_classes + 1, train_classes + test_classes + 1))
    return path, train_ids, test_ids


def make_folder(root, classes=4, per_class=3, split_folders=False):
    """One subfolder of PNGs per class (optionally under train/ and test/)."""
    root = Path(root)
    for c in range(classes):
        base = root
        if split_folders:
            base = root / ("train" if c < classes // 2 else "test")
        folder = base / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            (folder / f"img_{k}.png").write_bytes(png(300 + c))
        (folder / "notes.txt").write_text("not an image")
    return root
