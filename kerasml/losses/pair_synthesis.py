"""HDML for pair-based losses: a loss's own formula on the synthetic pairs of a labelled batch.

HDML (Zheng et al., CVPR 2019) synthesises hard negatives for tuple layouts
(N-pair, structured triplets). kerasml extends it to the losses that compare
every pair of any labelled batch (docs/hdml.md, "HDML beyond tuples"):

- eq. (1) pulls every negative ``z_j`` of every anchor ``z_i`` (``y_j ≠ y_i``)
  toward ``z_i``, never closer than the anchor's farthest positive
  (`kerasml.hdml.ops.pull_pair_negatives`): a ``[B, B]`` grid whose row ``i``
  holds every sample seen from anchor ``i``, its negatives pulled;
- the generator and projector map the anchors and the grid to ``ã`` ``[B, D]``
  and ``ñ`` ``[B, B, D]``;
- ``J_syn`` is the loss's formula on the row-wise matrix ``M̃_ij = s(ã_i, ñ_ij)``
  in place of the batch's ``M_ij = s(z_i, z_j)`` (``s`` the loss's distance or
  similarity): row ``i`` pairs anchor ``i`` with its (regenerated) positives and
  with its synthetic negatives, with the loss's miner applied to ``M̃`` (a miner
  that reads the embeddings' own geometry, `DistanceWeightedMiner`, sees ``ã``).

A loss opts in by listing `PairSynthesis` before `MetricLoss` in its bases and
implementing ``synthetic_pair_loss(labels, anchors, tuples)``.
"""

from keras import ops

from kerasml.losses._base import check_convention
from kerasml.losses.layouts import ANY
from kerasml.losses.pairwise import as_embeddings, as_labels

#: The ``hdml_layout`` of the pair-based losses: any labelled batch.
PAIR_SYNTHESIS = ANY.name


def row_matrix(distance, anchors, tuples):
    """``M̃_ij = s(ã_i, ñ_ij)``: the ``[B, B]`` matrix of a distance between each anchor and its row.

    Args:
        distance: a `kerasml.losses.distances.Distance` (its ``paired`` form).
        anchors: ``ã`` ``[B, D]``.
        tuples: ``ñ`` ``[B, C, D]``, row ``i`` holding what anchor ``i`` is compared with.

    Returns:
        float32 ``[B, C]``.
    """
    return distance.paired(ops.expand_dims(as_embeddings(anchors), 1), as_embeddings(tuples))


class PairSynthesis:
    """Mixin of the pair-based losses that HDML synthesises negatives for (``hdml_layout == "any"``).

    Only ``convention="kerasml"`` applies: the HDML authors' code has N-pair and
    triplet synthesis only, so no "authors" form of it exists.
    """

    hdml_summary = "yes: one synthetic negative per anchor–negative pair (B² rows)"
    hdml_conventions = ("kerasml",)
    hdml_convention_note = (
        "The HDML authors' code synthesises for N-pair and triplet batches only; the pair-based synthesis is "
        "kerasml's extension and has no 'authors' form."
    )

    @property
    def hdml_layout(self):
        """``"any"``: HDML pulls every anchor–negative pair of any labelled batch."""
        return PAIR_SYNTHESIS

    def synthetic_loss(self, labels, anchors, tuples, convention="kerasml"):
        """HDML's ``J_syn``: this loss's formula on ``M̃_ij = s(ã_i, ñ_ij)`` (see the module docstring).

        Args:
            labels: int labels ``[B]`` of the real batch.
            anchors: the synthetic anchors ``ã`` ``[B, D]``.
            tuples: ``ñ`` ``[B, B, D]``: row ``i``, column ``j`` is ``z_j`` (pulled
                toward ``z_i`` when ``y_j ≠ y_i``) through the generator and projector.
            convention: ``"kerasml"`` only. Defaults to ``"kerasml"``.

        Raises:
            ValueError: for ``convention="authors"``.
        """
        check_convention(convention)
        if convention not in self.hdml_conventions:
            raise ValueError(
                f"Invalid value for argument `convention` of {type(self).__name__}.synthetic_loss. "
                f"{self.hdml_convention_note} Expected: 'kerasml'. Received: convention={convention!r}."
            )
        return self.synthetic_pair_loss(as_labels(labels), as_embeddings(anchors), as_embeddings(tuples))

    def synthetic_pair_loss(self, labels, anchors, tuples):
        """The loss on the row-wise synthetic matrix; each pair-based loss implements it."""
        raise NotImplementedError
