"""HDML's two conventions: the paper's clean form (``"kerasml"``) and the authors' code (``"authors"``).

`kerasml.hdml.HDMLModel` runs one training step and asks its convention
object, never ``if convention``, at each point where the HDML authors'
TensorFlow code (the public repository ``wzzheng/HDML``) computes something
other than the paper's maths as kerasml writes it. Both conventions give the
same eq. (1), eq. (2) and gradient routing; they differ in:

======================  ===============================  ==========================================
decision                ``"kerasml"`` (default)          ``"authors"``
======================  ===============================  ==========================================
generator batch         ``[z; ẑ⁻]``                       ``[z; synthetic batch]`` (anchors, and
                                                         triplet positives, twice)
``J_soft``              one mean over synthetic rows     one mean per block of the synthetic batch
                                                         (N-pair: anchors, N² tuples), summed
``J_syn``, ``J_m``      the loss's mean, ``J_syn``       ``loss.*(convention="authors")``: triplet
                        without the N-pair L2 term       sums, N-pair ``J_syn`` with its L2 term
weight decay            kernels (rank ≥ 2)               every variable but batch-norm γ/β
``J_avg`` averages      ``J_m``                          ``w · (J_m + weight decay)``
logged terms            unweighted                       as they enter the objectives
======================  ===============================  ==========================================

The losses answer their part themselves (`kerasml.losses.MetricLoss.real_loss`
and ``synthetic_loss`` take the convention's ``name``). See ``docs/hdml.md``
for the authors' file and line of each difference.
"""

from keras import ops

from kerasml._validation import check_choice
from kerasml.hdml.ops import cross_entropy_rows
from kerasml.losses import HDML_CONVENTIONS

#: Names of the conventions `HDMLModel` accepts.
CONVENTIONS = HDML_CONVENTIONS
# Trainable variables of a normalisation layer (Keras' BatchNormalization, kerasml's projector and
# generator): the authors' weight decay leaves those out by name (main_npair.py:60-64).
_NORMALIZATION_VARIABLES = ("gamma", "beta")


class KerasmlConvention:
    """The paper's step, written cleanly (kerasml's default)."""

    name = "kerasml"

    def generator_batch(self, real, kept, pulled):
        """The generator's input batch and how to read the synthetic rows back from its output.

        Args:
            real: the real embeddings ``z`` ``[B, D]`` (``B = 2N`` or ``3n``).
            kept: how many leading real rows are also synthetics (N-pair: the
                N anchors; triplet: the 2n anchors and positives).
            pulled: the augmented negatives ``ẑ⁻`` ``[M, D]``.

        Returns:
            ``(batch, synthetic)``: ``batch`` ``[B + ..., D]`` starts with ``real``;
            ``synthetic(decoded)`` picks the decoded synthetic batch (``kept``
            rows, then the ``M`` pulled rows) out of the generator's output.
        """
        count = ops.shape(real)[0]

        def synthetic(decoded):
            return ops.concatenate([decoded[:kept], decoded[count:]], axis=0)

        return ops.concatenate([real, pulled], axis=0), synthetic

    def soft_cross_entropy(self, logits, labels, num_classes, blocks):
        """``J_soft`` before ``λ · c_soft``: the mean cross-entropy over every synthetic row.

        Args:
            logits: the classifier's logits of the synthetic batch ``[M, C]``.
            labels: their int labels ``[M]``.
            num_classes: ``C``.
            blocks: sizes of the synthetic batch's blocks (unused here).
        """
        del blocks
        return ops.mean(cross_entropy_rows(logits, labels, num_classes))

    def decayed(self, variables):
        """The variables weight decay acts on: kernels (rank ≥ 2), not biases or normalisation."""
        return [v for v in variables if len(v.shape) >= 2]

    def block_mean_input(self, j_m, regularised, w):
        """What ``J_avg`` averages: the unweighted base loss ``J_m``."""
        del regularised, w
        return j_m

    def logged(self, terms, w, soft_weight, softmax_factor):
        """The terms as ``fit`` logs them: unweighted.

        Args:
            terms: dict of the step's terms (``J_m``, ``regularised`` = ``J_m`` +
                weight decay, and during training ``J_syn``, ``J_recon``, ``J_soft``...).
            w: the step's ``w``; soft_weight, softmax_factor: ``λ`` and ``c_soft``.
        """
        del w, soft_weight, softmax_factor
        return dict(terms)


class AuthorsConvention(KerasmlConvention):
    """The HDML authors' step (``wzzheng/HDML``), except where theirs is not finite.

    The pulling (eq. 1) keeps kerasml's finite form: the authors divide by
    ``d⁻`` before masking (lib/HDML.py:17-29, 38-50), so an anchor equal to a
    negative gives NaN gradients there and finite ones here; they also replace a
    NaN objective by 0 (lib/nn_Ops.py:114), which never arises here.
    """

    name = "authors"

    def generator_batch(self, real, kept, pulled):
        """``[z; synthetic batch]``: the real embeddings, then the kept rows again, then the pulled ones.

        ``HDML.Pulling`` returns ``[anchors; N² tuples]`` (N-pair, lib/HDML.py:30)
        or ``[anchors; positives; pulled]`` (triplet, lib/HDML.py:53), and the
        generator decodes ``[z; that]`` in one batch (main_npair.py:81,
        main_triplet.py:81), so its batch-norm statistics count the anchors
        (and triplet positives) twice.
        """
        count = ops.shape(real)[0]

        def synthetic(decoded):
            return decoded[count:]

        return ops.concatenate([real, real[:kept], pulled], axis=0), synthetic

    def soft_cross_entropy(self, logits, labels, num_classes, blocks):
        """The sum over the synthetic batch's blocks of each block's mean cross-entropy.

        N-pair blocks ``(N, N²)``: ``mean CE(anchors) + mean CE(tuples)``
        (lib/HDML.py:91-95); triplet: one block, one mean (main_triplet.py:119-120).
        """
        rows = cross_entropy_rows(logits, labels, num_classes)
        total, start = 0.0, 0
        for size in blocks:
            total = total + ops.mean(rows[start : start + size])
            start = start + size
        return total

    def decayed(self, variables):
        """Every variable but normalisation scales and offsets, biases included.

        The authors decay every trainable variable of the backbone and projector
        whose name lacks ``batch_normalization`` (main_npair.py:60-64).
        """
        return [v for v in variables if v.name not in _NORMALIZATION_VARIABLES]

    def block_mean_input(self, j_m, regularised, w):
        """``w · (J_m + weight decay)``: the tensor their ``J_avg`` collector reads (main_npair.py:123, 199)."""
        del j_m
        return w * regularised

    def logged(self, terms, w, soft_weight, softmax_factor):
        """The terms with the weights they carry in the objectives, as the authors log them.

        ``J_m`` → ``w (J_m + wd)``, ``J_syn`` → ``(1 − w) J_syn`` (main_npair.py:118-123),
        ``J_recon`` → ``(1 − λ) J_recon`` (:134), ``J_soft`` → ``c_soft λ J_soft``
        (lib/HDML.py:91); ``J_gen`` is then their sum.
        """
        weights = {"J_syn": 1.0 - w, "J_recon": 1.0 - soft_weight, "J_soft": softmax_factor * soft_weight}
        logged = {name: weights[name] * value if name in weights else value for name, value in terms.items()}
        logged["J_m"] = w * terms["regularised"]
        return logged


_CONVENTIONS = {convention.name: convention for convention in (KerasmlConvention(), AuthorsConvention())}


def get(name):
    """The convention object called ``name`` (``"kerasml"`` or ``"authors"``).

    Raises:
        ValueError: for any other name, listing the accepted ones.
    """
    check_choice("convention", name, CONVENTIONS)
    return _CONVENTIONS[name]
