"""Batch samplers: which images form each batch, deterministically per ``(seed, epoch)``.

A sampler is built on the labels of one split and returns, for an epoch, a plan of
``len(sampler)`` batches of positions into those labels. The plan depends only on
``(seed, epoch)``, so every worker process computes the same batches independently.

=================== =========================================== =====================================
sampler             batch layout (B = batch_size)               an epoch
=================== =========================================== =====================================
``TripletSampler``  ``[anchors; positives; negatives]``, n=B/3  every image is an anchor once
``NPairSampler``    ``[a_1..a_N; p_1..p_N]``, N=B/2 classes     classes in shuffled rounds, each
                                                                class's images in shuffled rounds
``MPerClassSampler``B/m classes x m images, grouped by class    as N-pair, m images per class
=================== =========================================== =====================================

Impossible requests fail at construction with the numbers: a batch size that does not fit
the layout, more classes per batch than the split has, or a class with a single image
(it has no positive; pass ``drop_singletons=True`` to leave such classes out).
"""

import math

import numpy as np

from kerasml.losses import layouts

__all__ = ["MPerClassSampler", "NPairSampler", "Sampler", "TripletSampler", "get_sampler"]


class Sampler:
    """Base class: per-class bookkeeping, epoch plans and their cache.

    Args:
        labels: int class ids ``[n]`` of the split's images (positions 0..n-1).
        batch_size: images per batch.
        seed: the seed of every plan. Defaults to 0.
        batches_per_epoch: batches per epoch; ``None`` for about one pass over the images
            (``ceil(images / batch_size)``).
        drop_singletons: leave out classes with a single image instead of raising.
            Defaults to ``False``.
    """

    #: the name used by :func:`get_sampler` and in specs.
    name = "sampler"

    def __init__(self, labels, batch_size, *, seed=0, batches_per_epoch=None, drop_singletons=False):
        labels = np.asarray(labels).reshape(-1)
        if labels.size == 0:
            raise ValueError(f"{type(self).__name__} needs a non-empty split. Received 0 labels.")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{type(self).__name__} needs int class ids. Received labels of dtype {labels.dtype}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"Invalid value for argument `batch_size`. Expected an int >= 1. Received: {batch_size!r}")
        self.labels = labels.astype(np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_singletons = bool(drop_singletons)
        classes, inverse, counts = np.unique(self.labels, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        members = np.split(order, np.cumsum(counts)[:-1])
        singles = classes[counts < 2]
        if singles.size and self._needs_positives and not self.drop_singletons:
            shown = ", ".join(str(int(c)) for c in singles[:8])
            raise ValueError(
                f"{type(self).__name__} needs at least 2 images in every class (an anchor and a positive). "
                f"{singles.size} of {classes.size} classes have 1 image (class ids {shown}"
                f"{', ...' if singles.size > 8 else ''}). Pass drop_singletons=True to leave them out, or ingest "
                "classes with more images."
            )
        keep = counts >= 2 if self._needs_positives else counts >= 1
        #: the class ids a batch can draw from, and the positions of each.
        self.classes = classes[keep]
        self.members = [m for m, k in zip(members, keep, strict=True) if k]
        self.num_images = int(sum(len(m) for m in self.members))
        self._check()
        if batches_per_epoch is None:
            batches_per_epoch = max(1, math.ceil(self.num_images / self.batch_size))
        if (
            isinstance(batches_per_epoch, bool)
            or not isinstance(batches_per_epoch, (int, np.integer))
            or batches_per_epoch < 1
        ):
            raise ValueError(
                f"Invalid value for argument `batches_per_epoch`. Expected an int >= 1 or None. "
                f"Received: {batches_per_epoch!r}"
            )
        self.batches_per_epoch = int(batches_per_epoch)
        self._cache = (None, None)

    _needs_positives = True

    #: the `kerasml.losses.layouts.Layout` whose batches this sampler builds (it owns the batch-size rule).
    layout = layouts.ANY

    def _check(self):
        """Validate the layout against the split (subclasses)."""

    def _check_layout(self):
        problem = self.layout.batch_size_problem(self.batch_size, type(self).__name__)
        if problem is not None:
            expected, fix = problem
            raise ValueError(
                f"{type(self).__name__} needs batch_size = {expected}. Received: batch_size={self.batch_size}. {fix}"
            )

    def __len__(self):
        return self.batches_per_epoch

    def __repr__(self):
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, classes={len(self.classes)}, "
            f"images={self.num_images}, batches_per_epoch={self.batches_per_epoch}, seed={self.seed})"
        )

    def _plan(self, rng):
        raise NotImplementedError

    def epoch(self, epoch):
        """The plan of one epoch: int64 ``[batches_per_epoch, batch_size]`` positions.

        Deterministic in ``(seed, epoch)``; the last plan is cached.
        """
        epoch = int(epoch)
        if self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 0x5A])
            plan = np.asarray(self._plan(rng), dtype=np.int64).reshape(self.batches_per_epoch, self.batch_size)
            self._cache = (epoch, plan)
        return self._cache[1]

    def batch(self, epoch, index):
        """The positions of batch ``index`` of ``epoch`` (int64 ``[batch_size]``).

        Raises:
            IndexError: if ``index`` is outside ``[0, len(self))``.
        """
        if not 0 <= index < self.batches_per_epoch:
            raise IndexError(f"batch index {index} out of range [0, {self.batches_per_epoch})")
        return self.epoch(epoch)[index]

    def batch_labels(self, epoch, index):
        """The labels of batch ``index`` of ``epoch``."""
        return self.labels[self.batch(epoch, index)]

    def get_config(self):
        """The constructor arguments other than ``labels``."""
        return {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "batches_per_epoch": self.batches_per_epoch,
            "drop_singletons": self.drop_singletons,
        }


class _Cycle:
    """Endless shuffled rounds over a set of items; ``take(k)`` returns k distinct items."""

    def __init__(self, items, rng):
        self.items = np.asarray(items)
        self.rng = rng
        self.order = rng.permutation(self.items)
        self.pos = 0
        self.deferred = []

    def take(self, k):
        out, seen = [], set()
        keep = []
        for item in self.deferred:
            if len(out) < k and item not in seen:
                out.append(item)
                seen.add(item)
            else:
                keep.append(item)
        self.deferred = keep
        while len(out) < k:
            if self.pos == len(self.order):
                self.order = self.rng.permutation(self.items)
                self.pos = 0
            item = self.order[self.pos].item()
            self.pos += 1
            if item in seen:
                self.deferred.append(item)
            else:
                out.append(item)
                seen.add(item)
        return out


def _class_too_small(name, needed, available, what, fix):
    return ValueError(
        f"{name} needs {needed} distinct classes per batch ({what}), but the split has {available} "
        f"class(es) with enough images. {fix}"
    )


class NPairSampler(Sampler):
    """N-pair batches ``[a_1..a_N; p_1..p_N]``: N distinct classes, two images each.

    Anchor ``i`` and positive ``i`` are two different images of the same class; the N
    classes of a batch are distinct. Classes are visited in shuffled rounds (each class
    once per round) and each class's images in shuffled rounds, so an epoch covers every
    class, and every image when the classes are balanced. Batches satisfy
    :func:`kerasml.losses.check_npair_batch`.

    Args:
        labels: int class ids ``[n]`` of the split.
        batch_size: ``2N``; must be even.
        seed: the seed. Defaults to 0.
        batches_per_epoch: defaults to ``ceil(images / batch_size)``.
        drop_singletons: leave out classes with one image. Defaults to ``False``.

    Raises:
        ValueError: for an odd ``batch_size``, N larger than the classes of the split,
            or a class with one image.

    Example:

    >>> import numpy as np
    >>> sampler = NPairSampler(np.repeat(np.arange(8), 4), batch_size=8, seed=0)
    >>> labels = sampler.batch_labels(epoch=0, index=0)
    >>> bool((labels[:4] == labels[4:]).all()), len(set(labels[:4].tolist()))
    (True, 4)
    """

    name = "npair"
    layout = layouts.NPAIR

    def _check(self):
        self._check_layout()
        n = self.batch_size // 2
        if n > len(self.classes):
            raise _class_too_small(
                "NPairSampler",
                n,
                len(self.classes),
                f"N = batch_size / 2 = {self.batch_size} / 2",
                f"Use batch_size <= {2 * len(self.classes)}, or ingest more classes (kerasml ingest --classes).",
            )

    def _plan(self, rng):
        n = self.batch_size // 2
        classes = _Cycle(np.arange(len(self.classes)), rng)
        images = {}
        plan = np.empty((self.batches_per_epoch, self.batch_size), np.int64)
        for b in range(self.batches_per_epoch):
            for i, c in enumerate(classes.take(n)):
                if c not in images:
                    images[c] = _Cycle(self.members[c], rng)
                plan[b, i], plan[b, n + i] = images[c].take(2)
        return plan


class TripletSampler(Sampler):
    """Triplet batches ``[anchors; positives; negatives]`` of ``n = batch_size / 3`` each.

    Anchors run through a shuffled permutation of every image (of classes with two or
    more images), so each image is an anchor once per epoch; positive ``i`` is another
    image of anchor ``i``'s class, negative ``i`` an image of another class (uniform over
    images). Batches satisfy :func:`kerasml.losses.check_triplet_batch`.

    Args:
        labels: int class ids ``[n]`` of the split.
        batch_size: ``3n``; must be a multiple of 3.
        seed: the seed. Defaults to 0.
        batches_per_epoch: defaults to ``ceil(anchors / n)``.
        drop_singletons: leave out classes with one image as anchors (they still serve as
            negatives). Defaults to ``False``.

    Raises:
        ValueError: for a batch size that is not a multiple of 3, a split of one class,
            or a class with one image.
    """

    name = "triplet"
    layout = layouts.TRIPLET

    def __init__(self, labels, batch_size, *, seed=0, batches_per_epoch=None, drop_singletons=False):
        n = int(batch_size) // 3 if isinstance(batch_size, (int, np.integer)) and batch_size >= 3 else 1
        if batches_per_epoch is None:
            labels_arr = np.asarray(labels).reshape(-1)
            _, counts = np.unique(labels_arr, return_counts=True)
            anchors = int(counts[counts >= 2].sum()) or labels_arr.size
            batches_per_epoch = max(1, math.ceil(anchors / n))
        super().__init__(
            labels, batch_size, seed=seed, batches_per_epoch=batches_per_epoch, drop_singletons=drop_singletons
        )

    def _check(self):
        self._check_layout()
        if np.unique(self.labels).size < 2:
            raise ValueError(
                f"TripletSampler needs at least 2 classes for negatives; the split has {np.unique(self.labels).size}."
            )

    def _plan(self, rng):
        n = self.batch_size // 3
        total = self.batches_per_epoch * n
        anchors_pool = np.concatenate(self.members)
        rounds = math.ceil(total / anchors_pool.size)
        anchors = np.concatenate([rng.permutation(anchors_pool) for _ in range(rounds)])[:total]
        # positive: another member of the anchor's class, uniform
        class_of = {}
        rank = {}
        for c, member in enumerate(self.members):
            for r, pos in enumerate(member):
                class_of[int(pos)] = c
                rank[int(pos)] = r
        positives = np.empty(total, np.int64)
        for i, a in enumerate(anchors.tolist()):
            member = self.members[class_of[a]]
            j = int(rng.integers(len(member) - 1))
            positives[i] = member[j + (j >= rank[a])]
        # negative: uniform over the images of other classes (rejection)
        negatives = rng.integers(0, self.labels.size, size=total)
        bad = self.labels[negatives] == self.labels[anchors]
        while bad.any():
            negatives[bad] = rng.integers(0, self.labels.size, size=int(bad.sum()))
            bad = self.labels[negatives] == self.labels[anchors]
        shape = (self.batches_per_epoch, n)
        return np.concatenate([anchors.reshape(shape), positives.reshape(shape), negatives.reshape(shape)], axis=1)


class MPerClassSampler(Sampler):
    """Batches of ``batch_size / m`` distinct classes with ``m`` images each, grouped by class.

    ``[c_1 x m, c_2 x m, ...]``. A class with fewer than ``m`` (but at least 2) images
    repeats some of them. Any loss that mines pairs or triplets from labels (contrastive,
    triplet ``mining="all"|"hard"|"semihard"``, lifted structure) trains well on these.

    Args:
        labels: int class ids ``[n]`` of the split.
        batch_size: a multiple of ``m``.
        m: images per class. Defaults to 4.
        seed: the seed. Defaults to 0.
        batches_per_epoch: defaults to ``ceil(images / batch_size)``.
        drop_singletons: leave out classes with one image. Defaults to ``False``.

    Raises:
        ValueError: for ``batch_size`` not a multiple of ``m``, more classes per batch than
            the split has, or a class with one image.
    """

    name = "m_per_class"

    def __init__(self, labels, batch_size, *, m=4, seed=0, batches_per_epoch=None, drop_singletons=False):
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 2:
            raise ValueError(
                f"Invalid value for argument `m`. Expected an int >= 2 (images per class). Received: {m!r}"
            )
        self.m = int(m)
        super().__init__(
            labels, batch_size, seed=seed, batches_per_epoch=batches_per_epoch, drop_singletons=drop_singletons
        )

    def _check(self):
        if self.batch_size % self.m:
            raise ValueError(
                f"MPerClassSampler needs batch_size to be a multiple of m={self.m}. Received: "
                f"batch_size={self.batch_size}. Use {self.m * max(1, round(self.batch_size / self.m))}."
            )
        k = self.batch_size // self.m
        if k > len(self.classes):
            raise _class_too_small(
                "MPerClassSampler",
                k,
                len(self.classes),
                f"batch_size / m = {self.batch_size} / {self.m}",
                f"Use batch_size <= {self.m * len(self.classes)}, a larger m, or ingest more classes.",
            )

    def _plan(self, rng):
        k = self.batch_size // self.m
        classes = _Cycle(np.arange(len(self.classes)), rng)
        images = {}
        plan = np.empty((self.batches_per_epoch, self.batch_size), np.int64)
        for b in range(self.batches_per_epoch):
            for i, c in enumerate(classes.take(k)):
                member = self.members[c]
                if c not in images:
                    images[c] = _Cycle(member, rng)
                if len(member) >= self.m:
                    chosen = images[c].take(self.m)
                else:
                    chosen = list(member) + rng.choice(member, self.m - len(member)).tolist()
                plan[b, i * self.m : (i + 1) * self.m] = chosen
        return plan

    def get_config(self):
        """The constructor arguments other than ``labels``."""
        return {**super().get_config(), "m": self.m}


_SAMPLERS = {
    "npair": NPairSampler,
    "n_pair": NPairSampler,
    "triplet": TripletSampler,
    "m_per_class": MPerClassSampler,
    "mperclass": MPerClassSampler,
}


def get_sampler(name, labels, batch_size, **kwargs):
    """Build a sampler by name: ``"npair"``, ``"triplet"`` or ``"m_per_class"``.

    Args:
        name: the sampler name (case-insensitive), or a :class:`Sampler` class.
        labels: int class ids of the split.
        batch_size: images per batch.
        **kwargs: further constructor arguments (``seed``, ``m``, ...).

    Raises:
        ValueError: for an unknown name (and the sampler's own checks).
    """
    if isinstance(name, type) and issubclass(name, Sampler):
        return name(labels, batch_size, **kwargs)
    key = str(name).lower().replace("-", "_")
    if key not in _SAMPLERS:
        raise ValueError(
            "Invalid value for argument `sampler`. Expected one of 'npair', 'triplet', 'm_per_class'. "
            f"Received: {name!r}"
        )
    return _SAMPLERS[key](labels, batch_size, **kwargs)
