"""Ingest a dataset source into a kerasml HDF5 store (``kerasml ingest``).

Steps: choose the classes (the standard split, or ``classes=N`` drawn at random with
``seed`` and split 50/50 by class: the study's ``-d DATASET -n N``), decode every image of
those classes with OpenCV, fit it to a square of ``image_size`` pixels and append it to a
:class:`~kerasml.data.store.StoreWriter` (a temporary file renamed at the end).

Resize policy (``fit``): ``"crop"`` (default) scales the *shorter* side to ``image_size``
and cuts the centre square, the usual "resize 256, centre crop" of metric learning (wide
Cars196 images lose some of their left and right ends); ``"pad"`` scales the *longer* side
to ``image_size`` and pads the rest with black, keeping the whole image.

A corrupt or unreadable image is skipped and reported (count and first paths), or fails
the run when ``strict=True`` (``--strict``), leaving no file behind.
"""

import datetime
import platform
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasml.data.errors import IngestError
from kerasml.data.sources import get_source, store_filename
from kerasml.data.sources.base import RAW_FOLDER, STORE_FOLDER
from kerasml.data.store import StoreWriter

__all__ = ["FITS", "IngestResult", "decode_image", "default_out", "fit_image", "ingest"]

FITS = ("crop", "pad")
_SKIP_EXAMPLES = 20


def default_out(name, classes=None, folder=STORE_FOLDER, seed=0):
    """The default store path: ``data/<name>-<N>.h5``, or ``data/<name>.h5`` without ``classes``
    (see :func:`kerasml.data.sources.store_filename`; a seed other than 0 adds ``-seed<S>``).

    Example:

    >>> str(default_out("cars196", 20)).replace("\\\\", "/"), str(default_out("cub")).replace("\\\\", "/")
    ('data/cars196-20.h5', 'data/cub.h5')
    """
    return Path(folder) / store_filename(name, classes, seed)


def decode_image(payload):
    """Decode a payload into ``uint8 [H, W, 3]`` RGB, or ``None`` if it is unreadable.

    Args:
        payload: encoded file bytes (JPEG, PNG, ...; decoded by OpenCV), or a ``uint8``
            array ``[H, W]`` (grey), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA).
    """
    import cv2

    if payload is None:
        return None
    if isinstance(payload, np.ndarray):
        image = payload
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            return None
        return np.ascontiguousarray(image.astype(np.uint8, copy=False))
    data = np.frombuffer(payload, dtype=np.uint8)
    if data.size == 0:
        return None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    if image is None or image.size == 0:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def fit_image(image, size, fit="crop"):
    """Fit an RGB image into a ``size`` x ``size`` square, keeping its aspect ratio.

    Args:
        image: ``uint8 [H, W, 3]``.
        size: the side in pixels.
        fit: ``"crop"``: shorter side to ``size``, centre crop; ``"pad"``: longer side to
            ``size``, black padding around.

    Returns:
        ``uint8 [size, size, 3]``.
    """
    import cv2

    h, w = image.shape[:2]
    scale = size / (min(h, w) if fit == "crop" else max(h, w))
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if fit == "crop":
        new_w, new_h = max(new_w, size), max(new_h, size)
    if (new_w, new_h) != (w, h):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    if fit == "crop":
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return np.ascontiguousarray(image[top : top + size, left : left + size])
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = image
    return out


@dataclass
class IngestResult:
    """What :func:`ingest` wrote.

    Attributes:
        path: the store.
        images: images written.
        train_images: images of the training split.
        test_images: images of the test split.
        train_classes: training classes.
        test_classes: test classes.
        skipped: the number of unreadable images skipped.
        skipped_paths: the first skipped paths.
        seconds: wall time.
        removed_partials: ``(path, bytes)`` of the stale temporary files of earlier, hard-killed
            ingests of the same store that were removed.
        held_partials: temporary files of the same store that another running ingest holds.
    """

    path: Path
    images: int
    train_images: int
    test_images: int
    train_classes: int
    test_classes: int
    skipped: int = 0
    skipped_paths: list = field(default_factory=list)
    seconds: float = 0.0
    removed_partials: list = field(default_factory=list)
    held_partials: list = field(default_factory=list)


def _version():
    from kerasml._version import __version__

    return __version__


def _decode_fit(payload, size, fit):
    image = decode_image(payload)
    return None if image is None else fit_image(image, size, fit)


def ingest(
    name,
    out=None,
    *,
    source_path=None,
    classes=None,
    seed=0,
    image_size=None,
    fit="crop",
    strict=False,
    compression=None,
    overwrite=False,
    workers=None,
    console=None,
    quiet=False,
    source_options=None,
):
    """Ingest a dataset into a kerasml HDF5 store.

    Args:
        name: a source name (see :func:`kerasml.data.get_source`).
        out: the store to write. Defaults to :func:`default_out` (``data/<name>-<N>.h5``).
        source_path: the original archive or folder (``--from``). Defaults to ``data/raw``
            for sources that read files.
        classes: ``None`` for the dataset's standard split; N to draw N classes at random
            (seeded) and split them 50/50 by class (the study's ``-n N``).
        seed: the seed of the class draw (and of the procedural generator). Defaults to 0.
        image_size: the stored square side in pixels. Defaults to the source's default
            (256 for photographs, 32 for digits, 64 for procedural).
        fit: ``"crop"`` (default) or ``"pad"``; see the module docstring.
        strict: fail on the first unreadable image instead of skipping it. Defaults to ``False``.
        compression: ``None``, ``"lzf"`` or ``"gzip"`` for the images. Defaults to ``None``
            (fastest reads).
        overwrite: replace an existing store. Defaults to ``False``.
        workers: decoding threads. Defaults to ``min(4, CPUs)``.
        console: Rich console for the progress bar.
        quiet: no progress bar.
        source_options: options of the source (procedural: ``images_per_class``).

    Returns:
        An :class:`IngestResult`.

    Raises:
        SourceError: the data cannot be found or read, or ``classes`` is impossible.
        IngestError: ``strict`` and an image is unreadable, or no image could be read.
        StoreError: ``out`` exists (without ``overwrite``) or cannot be written.
    """
    import os

    started = time.perf_counter()
    options = dict(source_options or {})
    if fit not in FITS:
        raise IngestError(f"Invalid value for `fit`. Expected 'crop' or 'pad'. Received: fit={fit!r}")
    if name == "procedural":
        if classes is not None:
            options.setdefault("classes", int(classes))
        options.setdefault("seed", seed)
    source = get_source(name, source_path, **options)
    if source.needs_path and source.path is None:
        source.path = Path(RAW_FOLDER)
    size = int(image_size or source.default_image_size)
    if not 8 <= size <= 4096:
        raise IngestError(f"Invalid value for `image_size`. Expected 8 to 4096 pixels. Received: image_size={size}")
    if hasattr(source, "prepare"):
        source.prepare(size)
    out = Path(out) if out is not None else default_out(source.name, classes, seed=seed)

    catalog = source.catalog()
    train_ids, test_ids = source.split_classes(classes, seed)
    kept_ids = np.concatenate([train_ids, test_ids])
    # class table: training classes first, each in ascending source id
    train_sorted, test_sorted = np.sort(train_ids), np.sort(test_ids)
    table_ids = np.concatenate([train_sorted, test_sorted])
    index_of = {int(cid): i for i, cid in enumerate(table_ids)}
    names_by_id = dict(zip(catalog.class_ids.tolist(), catalog.class_names, strict=True))
    selected = [i for i, cid in enumerate(catalog.image_class_ids.tolist()) if cid in index_of]
    selected.sort(key=lambda i: (index_of[int(catalog.image_class_ids[i])], catalog.image_paths[i]))
    keys = [catalog.image_keys[i] for i in selected]
    where = {_hashable(catalog.image_keys[i]): i for i in selected}

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = None
    if not quiet:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
    workers = workers or min(4, os.cpu_count() or 1)
    labels, paths, skipped = [], [], []
    with StoreWriter(out, size, compression=compression, overwrite=overwrite) as writer:
        partials = (writer.removed_partials, writer.held_partials)
        task = None
        if progress is not None:
            progress.start()
            task = progress.add_task(f"ingest {source.name}", total=len(keys))
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                pending = deque()

                def drain(limit):
                    while len(pending) > limit:
                        key, future = pending.popleft()
                        image = future.result()
                        i = where[_hashable(key)]
                        if image is None:
                            skipped.append(catalog.image_paths[i])
                            if strict:
                                raise IngestError(
                                    f"Cannot read image {catalog.image_paths[i]} of {source.name} (corrupt, empty "
                                    f"or missing) and --strict is set; nothing was written to {out}. Re-download "
                                    "the dataset, or run without --strict to skip unreadable images."
                                )
                        else:
                            writer.append(image)
                            labels.append(index_of[int(catalog.image_class_ids[i])])
                            paths.append(catalog.image_paths[i])
                        if task is not None:
                            progress.update(task, advance=1)

                for key, payload in source.iter_images(keys):
                    pending.append((key, pool.submit(_decode_fit, payload, size, fit)))
                    drain(4 * workers)
                drain(0)
        finally:
            if progress is not None:
                progress.stop()
        if not labels:
            raise IngestError(
                f"No image of {source.name} could be read ({len(skipped)} unreadable, first: {skipped[:3]}). Check "
                "--from and the archive (download it again)."
            )
        splits = ["train"] * len(train_sorted) + ["test"] * len(test_sorted)
        provenance = {
            "source": source.name,
            "source_path": None if source.path is None else str(source.path),
            "source_options": source.options(),
            "classes_requested": None if classes is None else int(classes),
            "split": "standard" if classes is None else "sampled 50/50 by class",
            "standard_split": source.standard_split,
            "seed": int(seed),
            "sampled_class_ids": [int(c) for c in kept_ids],
            "train_class_ids": [int(c) for c in train_ids],
            "test_class_ids": [int(c) for c in test_ids],
            "image_size": size,
            "fit": fit,
            "images_requested": len(keys),
            "skipped_count": len(skipped),
            "skipped_paths": skipped[:_SKIP_EXAMPLES],
            "kerasml_version": _version(),
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "opencv": _module_version("cv2"),
            "h5py": _module_version("h5py"),
        }
        writer.commit(
            labels=labels,
            paths=paths,
            class_names=[names_by_id[int(c)] for c in table_ids],
            class_source_ids=table_ids,
            class_splits=splits,
            provenance=provenance,
            attrs={"source": source.name, "image_size": size, "fit": fit, "seed": int(seed)},
        )
    labels = np.asarray(labels)
    n_train_classes = len(train_sorted)
    return IngestResult(
        path=out,
        images=len(labels),
        train_images=int((labels < n_train_classes).sum()),
        test_images=int((labels >= n_train_classes).sum()),
        train_classes=n_train_classes,
        test_classes=len(test_sorted),
        skipped=len(skipped),
        skipped_paths=skipped[:_SKIP_EXAMPLES],
        seconds=time.perf_counter() - started,
        removed_partials=partials[0],
        held_partials=partials[1],
    )


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def _module_version(name):
    try:
        module = __import__(name)
    except ImportError:
        return None
    return str(getattr(module, "__version__", None))
