"""Batch layouts: the one place that knows how a loss's batch must be ordered.

A `Layout` answers every question the rest of kerasml asks about a batch
structure: which sampler builds it (`kerasml.data.get_sampler` names), whether a
batch size can have it, how many distinct classes a batch needs, and whether
concrete labels follow it. Each loss returns its layout from
`MetricLoss.layout`; the spec, the CLI, the experiment and HDML ask the loss.

=========  ==============================================  =================
layout     batch                                           sampler
=========  ==============================================  =================
`ANY`      any labelled batch (pairs/triplets mined)       ``"m_per_class"``
`NPAIR`    ``[a_1..a_N; p_1..p_N]``, N distinct classes    ``"npair"``
`PAIRS`    N distinct classes x 2 samples, any order       ``"npair"``
`TRIPLET`  ``[anchors; positives; negatives]``             ``"triplet"``
`HEADS`    ``y_pred [B, M, D]`` (M embedding heads)        ``"m_per_class"``
=========  ==============================================  =================

The checks run on concrete NumPy labels and raise `ValueError` naming the
rule that failed and the sampler that produces the right layout.
"""

import numpy as np


def _preview(values, limit=8):
    values = [int(v) for v in np.asarray(values).reshape(-1)]
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def check_npair_batch(labels, loss_name="NPairLoss"):
    """Check the N-pair layout ``[a_1..a_N; p_1..p_N]`` of a label vector.

    Rules: the batch size is even and at least 2; ``labels[i] == labels[N + i]``
    (anchor i and positive i share a class); the N labels of a half are distinct.

    Args:
        labels: class ids ``[2N]`` (array-like of ints).
        loss_name: name used in the error message.

    Raises:
        ValueError: naming the first rule that fails.
    """
    labels = np.asarray(labels).reshape(-1)
    fix = (
        "Build N-pair batches with `kerasml.data.NPairSampler` (N distinct classes, "
        "anchors first, then their positives in the same class order)."
    )
    size = labels.shape[0]
    if size < 2 or size % 2:
        raise ValueError(
            f"{loss_name} needs an even batch [a_1..a_N; p_1..p_N] of N >= 1 pairs. "
            f"Received a batch of {size} samples. {fix}"
        )
    n = size // 2
    anchors, positives = labels[:n], labels[n:]
    mismatch = np.flatnonzero(anchors != positives)
    if mismatch.size:
        i = int(mismatch[0])
        raise ValueError(
            f"{loss_name} needs labels[i] == labels[N + i] (anchor i and positive i of "
            f"one class). With N={n}, labels[{i}]={int(anchors[i])} but "
            f"labels[{n + i}]={int(positives[i])} ({mismatch.size} pair(s) differ). {fix}"
        )
    values, counts = np.unique(anchors, return_counts=True)
    repeated = values[counts > 1]
    if repeated.size:
        raise ValueError(
            f"{loss_name} needs N distinct classes in each half of the batch. "
            f"With N={n}, class(es) {_preview(repeated)} appear more than once in "
            f"the anchors {_preview(anchors)}. {fix}"
        )


def check_pairs_batch(labels, loss_name="NPairLoss"):
    """Check an N-pair batch in any order: N distinct classes, each exactly twice.

    Rules: the batch size is even and at least 2; every class that appears,
    appears exactly twice. ``[a_1..a_N; p_1..p_N]`` is one such order.

    Args:
        labels: class ids ``[2N]`` (array-like of ints).
        loss_name: name used in the error message.

    Raises:
        ValueError: naming the first rule that fails.
    """
    labels = np.asarray(labels).reshape(-1)
    fix = (
        "Build N-pair batches with `kerasml.data.NPairSampler` (N distinct classes, two samples each), "
        "or use a loss that mines pairs from any labelled batch (e.g. contrastive)."
    )
    size = labels.shape[0]
    if size < 2 or size % 2:
        raise ValueError(
            f"{loss_name} needs an even batch of N >= 1 pairs (N distinct classes, each exactly twice, "
            f"in any order). Received a batch of {size} samples. {fix}"
        )
    values, counts = np.unique(labels, return_counts=True)
    wrong = values[counts != 2]
    if wrong.size:
        seen = ", ".join(f"{int(v)}: {int(c)}x" for v, c in list(zip(values[counts != 2], counts[counts != 2]))[:8])
        raise ValueError(
            f"{loss_name} needs N distinct classes, each exactly twice (an anchor and its positive). "
            f"Class(es) {_preview(wrong)} appear another number of times ({seen}). {fix}"
        )


def check_triplet_batch(labels, loss_name="TripletLoss(mining='structured')"):
    """Check the structured triplet layout ``[anchors; positives; negatives]``.

    Rules: the batch size is a positive multiple of 3; with ``n = B/3``,
    ``labels[i] == labels[n + i]`` and ``labels[i] != labels[2n + i]``.

    Args:
        labels: class ids ``[3n]`` (array-like of ints).
        loss_name: name used in the error message.

    Raises:
        ValueError: naming the first rule that fails.
    """
    labels = np.asarray(labels).reshape(-1)
    fix = (
        "Build triplet batches with `kerasml.data.TripletSampler`, or use "
        "mining='all', 'hard' or 'semihard', which mine triplets from any labelled batch."
    )
    size = labels.shape[0]
    if size < 3 or size % 3:
        raise ValueError(
            f"{loss_name} needs a batch [anchors; positives; negatives] whose size is a "
            f"multiple of 3. Received a batch of {size} samples. {fix}"
        )
    n = size // 3
    anchors, positives, negatives = labels[:n], labels[n : 2 * n], labels[2 * n :]
    bad = np.flatnonzero(anchors != positives)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{loss_name} needs labels[i] == labels[n + i] (anchor and positive of one "
            f"class). With n={n}, labels[{i}]={int(anchors[i])} but "
            f"labels[{n + i}]={int(positives[i])}. {fix}"
        )
    bad = np.flatnonzero(anchors == negatives)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{loss_name} needs labels[i] != labels[2n + i] (the negative of another "
            f"class). With n={n}, labels[{i}] and labels[{2 * n + i}] are both "
            f"{int(anchors[i])}. {fix}"
        )


class Layout:
    """A batch structure a loss needs; the base class is any labelled batch.

    Attributes:
        name: ``"any"``, ``"npair"``, ``"triplet"`` or ``"heads"``.
        description: the structure in the docs' notation.
        sampler: the `kerasml.data.get_sampler` name whose batches have it.
    """

    name = "any"
    description = "any labelled batch"
    sampler = "m_per_class"

    def check_labels(self, labels, loss_name):
        """Raise `ValueError` if concrete ``labels`` ``[B]`` break the layout."""
        del labels, loss_name

    def batch_size_problem(self, batch_size, loss_name):
        """Why ``batch_size`` cannot have this layout, or ``None``.

        Args:
            batch_size: the number of samples per batch.
            loss_name: how the loss is called in the message (e.g. its spec name).

        Returns:
            ``None``, or ``(expected, fix)``: what a valid batch size is, and
            the nearest valid sizes.
        """
        del loss_name
        if batch_size < 2:
            return "an int >= 2 (a batch needs two samples to compare)", "Use 2 or more."
        return None

    def classes_needed(self, batch_size):
        """``(distinct classes, of which with >= 2 images)`` one batch draws.

        For `ANY` a batch of one class is valid for the loss but teaches
        nothing, so 2 distinct classes (1 with a pair) are required.
        """
        del batch_size
        return 2, 1

    def __repr__(self):
        return f"Layout({self.name!r})"


class _NPairLayout(Layout):
    name = "npair"
    description = "[a_1..a_N; p_1..p_N]"
    sampler = "npair"

    def check_labels(self, labels, loss_name):
        check_npair_batch(labels, loss_name=loss_name)

    def batch_size_problem(self, batch_size, loss_name):
        if batch_size >= 2 and batch_size % 2 == 0:
            return None
        fix = "Use 2." if batch_size < 2 else f"Use {batch_size - 1} or {batch_size + 1}."
        return (
            f"an even int >= 2 for {loss_name} (N = batch_size/2 pairs of distinct classes)",
            fix,
        )

    def classes_needed(self, batch_size):
        n = batch_size // 2
        return n, n


class _PairsLayout(_NPairLayout):
    name = "pairs"
    description = "N classes x 2 samples in any order ([a_1..a_N; p_1..p_N] is the fast path)"

    def check_labels(self, labels, loss_name):
        check_pairs_batch(labels, loss_name=loss_name)


class _TripletLayout(Layout):
    name = "triplet"
    description = "[anchors; positives; negatives]"
    sampler = "triplet"

    def check_labels(self, labels, loss_name):
        check_triplet_batch(labels, loss_name=loss_name)

    def batch_size_problem(self, batch_size, loss_name):
        if batch_size >= 3 and batch_size % 3 == 0:
            return None
        lower, upper = 3 * (batch_size // 3), 3 * (batch_size // 3 + 1)
        fix = f"Use {upper}." if lower < 3 else f"Use {lower} or {upper}."
        return f"a multiple of 3 for {loss_name} (batches {self.description})", fix

    def classes_needed(self, batch_size):
        n = batch_size // 3
        return 2 * n, n


class _HeadsLayout(Layout):
    name = "heads"
    description = "y_pred [B, M, D] (M embedding heads)"

    def batch_size_problem(self, batch_size, loss_name):
        del loss_name
        return None if batch_size >= 1 else ("an int >= 1", "Use 1 or more.")

    def classes_needed(self, batch_size):
        del batch_size
        return 1, 0


ANY = Layout()
NPAIR = _NPairLayout()
PAIRS = _PairsLayout()
TRIPLET = _TripletLayout()
HEADS = _HeadsLayout()
LAYOUTS = {layout.name: layout for layout in (ANY, NPAIR, PAIRS, TRIPLET, HEADS)}
