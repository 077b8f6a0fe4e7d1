"""`MetricLoss`: the base class of every kerasml loss."""

import keras
import numpy as np
from keras import ops

from kerasml._backend import is_concrete
from kerasml._validation import check_choice
from kerasml.distribution import gather_batch, global_batch_scope, scale_loss
from kerasml.losses.layouts import ANY
from kerasml.losses.pairwise import as_embeddings, as_labels

#: HDML's conventions (`kerasml.hdml.conventions`), the values ``real_loss`` / ``synthetic_loss`` accept:
#: ``"kerasml"`` (the paper's clean form) and ``"authors"`` (the HDML authors' code, ``wzzheng/HDML``).
HDML_CONVENTIONS = ("kerasml", "authors")


def check_convention(convention):
    """Raise ValueError in Keras' form unless ``convention`` is one of `HDML_CONVENTIONS`."""
    check_choice("convention", convention, HDML_CONVENTIONS)


class MetricLoss(keras.losses.Loss):
    """Base class of kerasml's losses: a whole batch in, one scalar out.

    Compared with `keras.losses.Loss` it changes two things:

    - labels stay integers. `keras.losses.Loss.__call__` casts ``y_true`` to the
      loss dtype, which under float16/bfloat16 merges distinct class ids (256 and
      257 are equal in bfloat16). Here labels become int32 and embeddings float32
      whatever the input dtypes; only the returned scalar takes the loss dtype.
    - the loss is a property of the batch (it compares samples with each other),
      so it is not a per-sample vector and takes no ``sample_weight``.

    A loss answers for itself every question the rest of kerasml asks about it:

    - ``layout``: its batch structure (a `kerasml.losses.layouts.Layout`: the
      sampler that builds it, the batch sizes and classes it needs, the label
      check). Subclasses set the class attribute ``batch_layout`` (default
      `ANY`) or override the property when it depends on arguments.
    - ``hdml_layout``: ``"npair"`` or ``"triplet"`` when HDML can synthesise
      hard tuples for the loss, ``"any"`` when it synthesises a negative for
      every anchor–negative pair of any labelled batch (pair-based losses,
      `kerasml.losses.pair_synthesis`), ``None`` otherwise; such a loss
      implements ``synthetic_loss(labels, anchors, tuples, convention)``, its
      own formula on the synthetic tuples, for the conventions in
      ``hdml_conventions``, may override ``real_loss(labels, z, convention)``
      (``J_m``) where the HDML authors' code computes it differently, and
      ``hdml_problem()`` says why HDML cannot apply.
    - ``names``: its spec name first, then the accepted aliases (the registry,
      `kerasml.losses.get`, is built from them).

    Subclasses implement ``call(y_true, y_pred)`` with ``y_true`` int32 ``[B]``
    and ``y_pred`` float32 ``[B, D]``. The layout's label check runs on the
    labels as a NumPy array whenever they are concrete (eager execution,
    PyTorch, ``run_eagerly=True``) and raises ``ValueError`` on a batch that
    breaks it. Inside a traced graph the check cannot run; each loss then stays
    finite and ignores the tuples its layout rules out.

    Args:
        name: name of the loss instance.
        reduction: kept for Keras compatibility; a batch-level loss is already a
            scalar, so every reduction returns it unchanged.
        dtype: dtype of the returned loss value. Defaults to
            `keras.backend.floatx()`. Computation is float32 regardless.
    """

    #: spec name first, then aliases (``kerasml.losses.get`` accepts each).
    names = ()
    #: the batch layout of every instance (see ``layout``).
    batch_layout = ANY
    #: the layout as one line for tables, when it depends on arguments.
    layout_summary = None
    #: when HDML applies, as one line for tables ("" when never).
    hdml_summary = ""
    #: the HDML conventions whose ``synthetic_loss`` this loss implements.
    hdml_conventions = HDML_CONVENTIONS
    #: why a convention outside ``hdml_conventions`` does not apply (one sentence, for errors).
    hdml_convention_note = ""

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._requested_dtype = dtype

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"Invalid value for argument `sample_weight` of {type(self).__name__}. "
                "A metric loss compares the samples of a batch with each other and "
                "has no per-sample weights. Expected: None. Received: a "
                f"{type(sample_weight).__name__}. Drop `sample_weight`/`class_weight` "
                "from `fit`, or balance classes in the batch sampler instead."
            )
        with keras.name_scope(self.name):
            # On R replicas: the loss of the global batch, as this replica's share (kerasml.distribution).
            labels, embeddings = gather_batch(as_labels(y_true), as_embeddings(y_pred))
            with global_batch_scope():
                if self._checks_layout and is_concrete(labels):
                    self.check_batch(np.asarray(ops.convert_to_numpy(labels)).reshape(-1))
                loss = self.call(labels, embeddings)
            return ops.cast(scale_loss(loss), self.dtype)

    @property
    def _checks_layout(self):
        return type(self.layout).check_labels is not type(ANY).check_labels

    @property
    def layout(self):
        """The `Layout` of this loss's batches."""
        return self.batch_layout

    @property
    def layout_name(self):
        """How this loss is named in layout errors (its class, with arguments that set the layout)."""
        return type(self).__name__

    def check_batch(self, labels):
        """Raise `ValueError` if the concrete ``labels`` break this loss's layout.

        Args:
            labels: NumPy array ``[B]`` of the batch's class ids.
        """
        self.layout.check_labels(labels, self.layout_name)

    def configure(self, num_classes=None, embedding_dim=None):
        """Give the loss the sizes its trainable parameters need; returns the loss.

        Losses without parameters (this base class) ignore both; proxy and
        classifier losses (`kerasml.losses.parametric.ParametricLoss`) create
        their parameters here.
        """
        del num_classes, embedding_dim
        return self

    @property
    def parameters(self):
        """The `LossParameters` layer holding this loss's trainable variables; ``None`` for this loss."""
        return None

    #: whether the loss compares a batch with a reference set (`call_with_reference`): what
    #: `kerasml.losses.CrossBatchMemory` needs. Pair losses whose terms are read from masks set it.
    supports_reference = False

    def reference_problem(self):
        """``None`` when the loss can compare a batch with a reference set (cross-batch memory), else why not."""
        owner = type(self).__name__
        if self.layout.name != "any":
            return f"{self.layout_name} needs batches {self.layout.description}, not any labelled batch"
        if not self.supports_reference:
            return f"{owner} does not compare each sample of a batch with a set of other samples through pair masks"
        miner = getattr(self, "miner", None)
        if miner is not None and not miner.supports_reference:
            return f"its miner {type(miner).__name__} reads the batch's own geometry, not a reference set"
        return None

    def call_with_reference(self, y_true, y_pred, reference):
        """This loss with the batch's anchors ``[B]`` compared with ``reference``'s ``N`` rows.

        Args:
            y_true: int32 labels ``[B]``.
            y_pred: float32 embeddings ``[B, D]`` (the anchors).
            reference: a `kerasml.losses.reference.Reference` whose first ``B``
                rows are the batch itself.

        Raises:
            ValueError: for a loss without that form (see `reference_problem`).
        """
        del y_true, y_pred, reference
        raise ValueError(
            f"{type(self).__name__} cannot compare a batch with a reference set: {self.reference_problem()}."
        )

    @property
    def hdml_layout(self):
        """``"npair"``, ``"triplet"`` or ``"any"``: the tuples HDML synthesises for this loss; ``None`` if it cannot."""
        return None

    def hdml_problem(self):
        """``None`` when HDML can synthesise for this loss, else one sentence saying why not."""
        if self.hdml_layout is not None:
            return None
        return f"{type(self).__name__} has no anchor/positive/negative tuples to synthesise"

    def real_loss(self, labels, embeddings, convention="kerasml"):
        """HDML's ``J_m``: this loss on the real batch, in the form of ``convention``.

        ``"kerasml"``: the loss itself. ``"authors"``: the form of the HDML
        authors' code where it differs from this loss (`TripletLoss` sums over
        triplets); the loss itself otherwise.

        Args:
            labels: int labels ``[B]``.
            embeddings: the real embeddings ``z`` ``[B, D]``.
            convention: ``"kerasml"`` or ``"authors"``. Defaults to ``"kerasml"``.
        """
        check_convention(convention)
        return self(labels, embeddings)

    def synthetic_loss(self, labels, anchors, tuples, convention="kerasml"):
        """HDML's ``J_syn``: this loss on synthetic tuples (see `kerasml.hdml`).

        Args:
            labels: int labels ``[B]`` of the real batch.
            anchors: N-pair layout: the synthetic anchors ``ã`` ``[N, D]``;
                triplet layout: the synthetic batch ``[ã; p̃; ñ]`` ``[3n, D]``;
                ``"any"``: the synthetic anchors ``ã`` ``[B, D]`` (every sample).
            tuples: N-pair layout: ``[N, N, D]``, row ``i`` holding ``ñ_ij``
                (the pulled ``p_j``; ``ñ_ii`` is the positive); triplet: ``None``;
                ``"any"``: ``[B, B, D]``, row ``i`` holding ``ñ_ij`` (``z_j``
                pulled toward ``z_i`` when ``y_j ≠ y_i``, else ``z_j``).
            convention: ``"kerasml"`` (the loss's own terms on the tuples) or
                ``"authors"`` (as the HDML authors' code computes it: each loss
                says how). Defaults to ``"kerasml"``.

        Raises:
            ValueError: for a loss HDML cannot synthesise for.
        """
        del labels, anchors, tuples
        check_convention(convention)
        raise ValueError(f"HDML cannot synthesise for this loss: {self.hdml_problem()}.")

    def get_config(self):
        return {**super().get_config(), "dtype": self._requested_dtype}
