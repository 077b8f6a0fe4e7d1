"""Checks of the batch layouts that the N-pair and structured triplet losses need.

They run on concrete NumPy labels and raise `ValueError` naming the rule that
failed and the sampler that produces the right layout.
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
