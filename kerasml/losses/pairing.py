"""Anchor–positive pairs of an N-pair batch, found from the labels in any order, inside a graph.

An N-pair batch holds N distinct classes, each exactly twice. Samplers deliver it as
``[a_1..a_N; p_1..p_N]`` (the halves order, the fast path), but a user's pipeline may shuffle
the rows. Here each class's first sample (lowest row) is its anchor and its next sample the
positive, with fixed-shape ``[B, B]`` masks only (no boolean indexing, no ``unique``), so the
same code runs eagerly and under ``tf.function`` / ``jax.jit``. On a batch in the halves order
it picks exactly the halves' pairs, so both orders give the same loss and gradients.

A batch that breaks the rule (checked eagerly by `kerasml.losses.layouts.PAIRS`) still gets a
finite, documented result in a graph: a class seen once has no pair and is left out, and a class
seen three times or more pairs its first two samples; later ones are left out of the pairs.
"""

from keras import ops

from kerasml.losses.pairwise import batch_size


def halves_are_pairs(labels):
    """Boolean scalar: the batch is ``[a_1..a_N; p_1..p_N]`` with N distinct classes, each twice.

    Args:
        labels: int labels ``[B]``.
    """
    n = batch_size(labels) // 2
    same = ops.expand_dims(labels, 1) == ops.expand_dims(labels, 0)  # [B, B]
    twice = ops.all(ops.sum(ops.cast(same, "int32"), axis=1) == 2)
    matched = ops.all(labels[:n] == labels[n : 2 * n])
    even = batch_size(labels) % 2 == 0
    return ops.logical_and(ops.logical_and(twice, matched), even)


def pairs_from_labels(labels):
    """``(is_anchor [B] bool, partner [B] int32)``: each class's first sample and the row of its positive.

    ``partner[i]`` is the next row of ``i``'s class after ``i`` (meaningful where ``is_anchor``);
    ``is_anchor[i]`` holds for the first row of each class that has a second one.

    Args:
        labels: int labels ``[B]``.
    """
    rows = ops.arange(batch_size(labels))
    same = ops.expand_dims(labels, 1) == ops.expand_dims(labels, 0)  # [i, j]
    later = ops.expand_dims(rows, 0) > ops.expand_dims(rows, 1)  # j > i
    earlier = ops.expand_dims(rows, 0) < ops.expand_dims(rows, 1)  # j < i
    first = ops.logical_not(ops.any(ops.logical_and(same, earlier), axis=1))
    after = ops.logical_and(same, later)
    has_partner = ops.any(after, axis=1)
    # The lowest j > i of the same class: argmax of a descending score over those columns.
    score = ops.where(after, ops.cast(batch_size(labels), "int32") - ops.cast(ops.expand_dims(rows, 0), "int32"), 0)
    partner = ops.cast(ops.argmax(score, axis=1), "int32")
    return ops.logical_and(first, has_partner), partner
