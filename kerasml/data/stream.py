"""Batch streams from a kerasml store: ``keras.utils.PyDataset`` subclasses.

:class:`TrainStream` yields the sampler's structured batches (N-pair, triplet, m-per-class)
through augmentation; :class:`EvalStream` yields a split in row order through the
deterministic evaluation transform. Both return ``(images float32 [B, H, W, 3], labels
int32 [B])`` (channels first when Keras' ``image_data_format`` is ``channels_first``), or with
``dtype="uint8"`` the images as uint8 pixels, 4x fewer bytes to pass from the workers and to copy
to an accelerator, for a model that normalises its input
(``MetricModel(..., input_normalization=...)``, `kerasml.layers.InputNormalization`).

Parallelism: ``workers`` and ``use_multiprocessing`` are passed to ``PyDataset``. The
HDF5 file is opened lazily in each process and never pickled, so the streams work with
threads, ``fork`` and ``spawn`` worker processes (the only start method on Windows).

Determinism: batch ``i`` of epoch ``e`` depends only on ``(seed, e, i)`` (the sampler's
plan and a per-batch random generator), never on which worker builds it or in which
order. The epoch advances in :meth:`TrainStream.on_epoch_end`. ``fit(shuffle=True)``
only reorders whole batches; their composition comes from the sampler.
"""

import keras
import numpy as np

from kerasml._validation import check_choice
from kerasml.data.augment import DTYPES, Augment
from kerasml.data.samplers import Sampler, get_sampler
from kerasml.data.store import Store

__all__ = ["EvalStream", "TrainStream"]


def _as_store(store):
    return store if isinstance(store, Store) else Store(store)


def _layout(images, data_format):
    if (data_format or keras.config.image_data_format()) == "channels_first":
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return images


class TrainStream(keras.utils.PyDataset):
    """Structured, augmented training batches from a kerasml store.

    Args:
        store: a store path or :class:`~kerasml.data.store.Store`.
        sampler: a :class:`~kerasml.data.samplers.Sampler` built on
            ``store.split_labels(split)``, or a name (``"npair"``, ``"triplet"``,
            ``"m_per_class"``) built here with ``batch_size``, ``seed`` and
            ``sampler_options``.
        split: the split to sample. Defaults to ``"train"``.
        batch_size: the batch size when ``sampler`` is a name.
        image_size: the model's input side. Defaults to 224 (ignored if ``augment`` is an
            :class:`~kerasml.data.augment.Augment`).
        augment: ``True`` for ``Augment(image_size, normalization=...)``, an ``Augment``,
            or ``False`` for the deterministic evaluation transform. Defaults to ``True``.
        normalization: see :func:`~kerasml.data.augment.get_normalization` (a name, a
            backbone name or ``(mean, std)``). Defaults to ``"imagenet"``.
        dtype: ``"float32"`` (normalised images) or ``"uint8"`` (pixels; the model normalises).
            Defaults to the ``augment``'s when it is an ``Augment``, else ``"float32"``.
        seed: the seed of the augmentation (and of a sampler built here). Defaults to 0.
        sampler_options: further sampler arguments (``m``, ``batches_per_epoch``, ...).
        data_format: ``"channels_last"`` / ``"channels_first"``; defaults to Keras' setting.
        workers: ``PyDataset`` workers. Defaults to 1.
        use_multiprocessing: worker processes instead of threads. Defaults to ``False``.
        max_queue_size: batches queued ahead. Defaults to 10.

    Raises:
        StoreError: for a file that is not a valid store.
        ValueError: for an impossible sampler request (with the numbers).

    Example:

    >>> stream = TrainStream("data/cub-20.h5", "npair", batch_size=32, workers=2,
    ...                      use_multiprocessing=True)  # doctest: +SKIP
    >>> model.fit(stream, epochs=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        store,
        sampler="npair",
        *,
        split="train",
        batch_size=None,
        image_size=224,
        augment=True,
        normalization="imagenet",
        seed=0,
        sampler_options=None,
        dtype=None,
        data_format=None,
        workers=1,
        use_multiprocessing=False,
        max_queue_size=10,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        self.store = _as_store(store)
        self.split = split
        self.rows = self.store.split_rows(split)
        labels = self.store.labels[self.rows]
        if isinstance(sampler, Sampler):
            if len(sampler.labels) != len(labels) or not np.array_equal(sampler.labels, labels):
                raise ValueError(
                    f"The sampler was built on {len(sampler.labels)} labels that are not those of the "
                    f"{split!r} split of {self.store.path} ({len(labels)} images). Build it on "
                    f"store.split_labels({split!r})."
                )
            self.sampler = sampler
        else:
            if batch_size is None:
                raise ValueError("TrainStream needs `batch_size` when `sampler` is a name (e.g. 'npair').")
            options = {"seed": seed, **(sampler_options or {})}
            self.sampler = get_sampler(sampler, labels, batch_size, **options)
        self._random = augment is not False and augment is not None
        if dtype is not None:
            check_choice("dtype", dtype, DTYPES)
        if augment is True:
            augment = Augment(image_size, normalization=normalization, dtype=dtype or "float32")
        elif not self._random:
            augment = Augment(image_size, normalization=normalization, flip=False, dtype=dtype or "float32")
        elif not isinstance(augment, Augment):
            raise ValueError(
                f"Invalid value for argument `augment`. Expected a bool or an Augment. Received: {augment!r}"
            )
        elif dtype is not None and augment.dtype != dtype:
            raise ValueError(
                f"Invalid value for argument `dtype`: {dtype!r} differs from the `augment`'s dtype "
                f"{augment.dtype!r}. Build the Augment with dtype={dtype!r}, or leave `dtype` out."
            )
        self.augment = augment
        self.seed = int(seed)
        self.data_format = data_format
        self.epoch = 0

    def __len__(self):
        return len(self.sampler)

    @property
    def batch_size(self):
        """Images per batch."""
        return self.sampler.batch_size

    def set_epoch(self, epoch):
        """Choose the epoch whose plan the next batches follow."""
        self.epoch = int(epoch)

    def batch_positions(self, index, epoch=None):
        """The split positions of batch ``index`` (of ``epoch``, default the current one)."""
        return self.sampler.batch(self.epoch if epoch is None else epoch, index)

    @property
    def dtype(self):
        """``"float32"`` (normalised images) or ``"uint8"`` (pixels): what the batches' images are."""
        return self.augment.dtype

    def __getitem__(self, index):
        """Batch ``index`` of the current epoch: ``(images float32 or uint8, labels int32)``."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"TrainStream index {index} out of range [0, {len(self)})")
        positions = self.sampler.batch(self.epoch, index)
        images = self.store.read(self.rows[positions])
        if self._random:
            rng = np.random.default_rng([self.seed, self.epoch, int(index), 0xA6])
            x = self.augment.train(images, rng)
        else:
            x = self.augment.eval(images)
        y = self.store.labels[self.rows[positions]].astype(np.int32)
        return _layout(x, self.data_format), y

    def on_epoch_end(self):
        """Advance to the next epoch's plan."""
        self.epoch += 1


class EvalStream(keras.utils.PyDataset):
    """A split in row order through the evaluation transform (for embeddings / Recall@K).

    Args:
        store: a store path or :class:`~kerasml.data.store.Store`.
        split: ``"test"`` (default), ``"train"`` or ``"all"``.
        batch_size: images per batch (the last batch may be smaller). Defaults to 64.
        image_size: the model's input side. Defaults to 224.
        normalization: see :func:`~kerasml.data.augment.get_normalization`. Defaults to
            ``"imagenet"``.
        dtype: ``"float32"`` (normalised images) or ``"uint8"`` (pixels; the model normalises).
            Defaults to ``"float32"``.
        data_format: defaults to Keras' setting.
        workers: ``PyDataset`` workers. Defaults to 1.
        use_multiprocessing: worker processes instead of threads. Defaults to ``False``.
        max_queue_size: batches queued ahead. Defaults to 10.

    Attributes:
        labels: int32 labels of the whole split, in stream order.
    """

    def __init__(
        self,
        store,
        split="test",
        *,
        batch_size=64,
        image_size=224,
        normalization="imagenet",
        dtype="float32",
        data_format=None,
        workers=1,
        use_multiprocessing=False,
        max_queue_size=10,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"Invalid value for argument `batch_size`. Expected an int >= 1. Received: {batch_size!r}")
        self.store = _as_store(store)
        self.split = split
        self.rows = self.store.split_rows(split)
        if self.rows.size == 0:
            raise ValueError(f"The {split!r} split of {self.store.path} has no images.")
        self.batch_size = int(batch_size)
        self.augment = Augment(image_size, normalization=normalization, flip=False, dtype=dtype)
        self.data_format = data_format
        self.labels = self.store.labels[self.rows].astype(np.int32)

    def __len__(self):
        return -(-len(self.rows) // self.batch_size)

    @property
    def dtype(self):
        """``"float32"`` (normalised images) or ``"uint8"`` (pixels): what the batches' images are."""
        return self.augment.dtype

    def __getitem__(self, index):
        """Batch ``index``: ``(images float32 or uint8, labels int32)`` of rows in order."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"EvalStream index {index} out of range [0, {len(self)})")
        rows = self.rows[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.augment.eval(self.store.read(rows))
        return _layout(x, self.data_format), self.store.labels[rows].astype(np.int32)
