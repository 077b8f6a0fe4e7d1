"""Cross-batch memory (Wang, Zhang, Huang and Scott, 2020): a pair loss against the embeddings of past batches.

The memory is a FIFO of the last ``memory_size`` embeddings and labels, kept in
non-trainable variables of a `MemoryBank` layer (``loss.memory``). Why a layer,
and why the model must own it: ``fit`` on JAX is a pure function of the model's
variables; it carries a non-trainable variable's new value from one step to the
next only for the variables of the model (``stateless_compute_loss`` collects
them), so a memory held by the loss alone would be read as a constant and never
grow. TensorFlow and PyTorch would update it, but it would not be saved with the
model either. Owning it is one line:

- `kerasml.models.MetricModel` (and the specs) owns ``loss.parameters``, which
  for this loss is the memory: ``MetricModel(backbone, loss=CrossBatchMemory(...))``;
- a functional or subclassed `keras.Model` of your own:
  ``model.loss_memory = loss.memory`` (before ``fit``; in a subclass's
  ``__init__``: ``self.loss_memory = loss.memory``), then
  ``model.compile(loss=loss, ...)``. A `keras.Sequential` model does not track
  attributes: wrap it, ``keras.Model(seq.inputs, seq.outputs)``.

On JAX, ``model.compile(loss=CrossBatchMemory(...))`` without that line raises
``ValueError`` at the first step instead of training without memory.
"""

import keras
import numpy as np
from keras import ops

from kerasml._backend import memory_is_tracked
from kerasml._validation import check_int
from kerasml.losses._base import MetricLoss
from kerasml.losses.reference import Reference
from kerasml.losses.registry import get_loss


@keras.saving.register_keras_serializable(package="kerasml")
class MemoryBank(keras.layers.Layer):
    """A FIFO of ``size`` past embeddings and their labels, as non-trainable variables.

    Variables (all non-trainable, saved with a model that owns the layer):
    ``embeddings`` float32 ``[size, D]``, ``labels`` int32 ``[size]``,
    ``position`` (the slot the next row is written to), ``filled`` (how many
    slots hold a row) and ``steps`` (how many batches `enqueue` has seen).

    Args:
        size: number of rows the memory holds.
        embedding_dim: width ``D`` of the embeddings.
        **kwargs: `keras.layers.Layer` arguments (``name``...).
    """

    def __init__(self, size, embedding_dim, **kwargs):
        kwargs["dtype"] = "float32"
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.size = check_int("size", size, "MemoryBank")
        self.embedding_dim = check_int("embedding_dim", embedding_dim, "MemoryBank")
        state = {"trainable": False, "initializer": "zeros"}
        self.embeddings = self.add_weight(shape=(self.size, self.embedding_dim), name="embeddings", **state)
        self.labels = self.add_weight(shape=(self.size,), dtype="int32", name="labels", **state)
        self.position = self.add_weight(shape=(), dtype="int32", name="position", **state)
        self.filled = self.add_weight(shape=(), dtype="int32", name="filled", **state)
        self.steps = self.add_weight(shape=(), dtype="int32", name="steps", **state)
        self.built = True

    def call(self, inputs):
        """The identity: the layer only holds variables."""
        return inputs

    def read(self):
        """``(embeddings [size, D], labels [size], valid [size] bool)``, without gradient."""
        valid = ops.arange(self.size, dtype="int32") < ops.convert_to_tensor(self.filled)
        embeddings = ops.stop_gradient(ops.convert_to_tensor(self.embeddings))
        return embeddings, ops.convert_to_tensor(self.labels), valid

    def enqueue(self, embeddings, labels, active=True):
        """Write a batch ``[B, D]``/``[B]`` after the newest rows, overwriting the oldest; count the step.

        Slot ``s`` receives the last batch row ``i`` with ``(position + i) mod size = s``
        (a batch larger than the memory keeps its last ``size`` rows). Static shapes:
        every slot is rewritten with either its new row or its old content.

        Args:
            embeddings: float ``[B, D]`` (stored without gradient).
            labels: int ``[B]``.
            active: bool scalar; when false only ``steps`` changes.
        """
        embeddings = ops.stop_gradient(ops.cast(embeddings, "float32"))
        labels = ops.cast(labels, "int32")
        rows = ops.shape(labels)[0]
        size = self.size
        position = ops.convert_to_tensor(self.position)
        slots = ops.arange(size, dtype="int32")
        offset = ops.mod(slots - position + size, size)  # rows after `position` that land on each slot
        written = ops.logical_and(offset < rows, active)
        # The last batch row on the slot: offset + size·⌊(B − 1 − offset) / size⌋.
        last = offset + size * ops.floor_divide(ops.maximum(rows - 1 - offset, 0), size)
        row = ops.where(written, last, 0)
        self.embeddings.assign(
            ops.where(
                ops.expand_dims(written, 1), ops.take(embeddings, row, axis=0), ops.convert_to_tensor(self.embeddings)
            )
        )
        self.labels.assign(ops.where(written, ops.take(labels, row, axis=0), ops.convert_to_tensor(self.labels)))
        added = ops.where(active, ops.cast(rows, "int32"), 0)
        self.position.assign(ops.mod(position + added, size))
        self.filled.assign(ops.minimum(ops.convert_to_tensor(self.filled) + added, size))
        self.steps.assign(ops.convert_to_tensor(self.steps) + 1)

    def contents(self):
        """``(embeddings [n, D], labels [n])`` as NumPy arrays, oldest row first (``n`` = filled slots)."""
        filled = int(ops.convert_to_numpy(self.filled))
        position = int(ops.convert_to_numpy(self.position))
        embeddings = np.asarray(ops.convert_to_numpy(self.embeddings))
        labels = np.asarray(ops.convert_to_numpy(self.labels))
        order = (np.arange(filled) + position - filled) % self.size
        return embeddings[order], labels[order]

    def reset(self):
        """Empty the memory (``steps`` included)."""
        self.embeddings.assign(np.zeros((self.size, self.embedding_dim), "float32"))
        for variable in (self.labels, self.position, self.filled, self.steps):
            variable.assign(np.zeros(variable.shape, "int32"))

    def get_config(self):
        return {**super().get_config(), "size": self.size, "embedding_dim": self.embedding_dim}


@keras.saving.register_keras_serializable(package="kerasml")
class CrossBatchMemory(MetricLoss):
    """Cross-batch memory (XBM): a pair-based loss between the batch and the batch plus past embeddings.

    Each step, with ``z`` the batch's embeddings ``[B, D]`` and ``M`` the memory's
    ``n ≤ memory_size`` stored embeddings (no gradient)::

        L = loss(anchors = z, references = [z; M])

    the wrapped loss with every batch sample as an anchor and every other batch
    sample and every memory row as a pair partner (positive when the labels
    match); then ``z`` (detached) and its labels are enqueued, the oldest rows
    dropped. Gradients reach ``z`` as anchor and as batch reference, never the
    memory. With an empty memory it is the wrapped loss. Before ``start_step``
    batches the memory is neither read nor written (the paper's warm-up: the
    embedding drifts fastest at the start, so early rows would be stale).

    Valid wrapped losses are those whose ``reference_problem()`` is ``None``:
    pair-based losses of any labelled batch that read pairs through label masks
    (``supports_reference``): contrastive, multi_similarity, circle, supcon,
    ntxent, tuplet_margin, triplet (``mining`` ``"all"``, ``"hard"``,
    ``"semihard"`` or a miner; not ``"structured"``), with any miner except
    ``DistanceWeightedMiner``. Every step's memory update happens inside the
    compiled train step (TensorFlow, JAX) or eagerly (PyTorch); the model must
    own ``loss.memory`` (see the module's docstring: `MetricModel` does).
    A call outside training (``evaluate``, validation data) enqueues too.

    This is PML's ``CrossBatchMemory(loss, embedding_size, memory_size)`` with
    one difference: PML enqueues the batch first and compares it with the whole
    memory, skipping each anchor's own slot, and a batch's own pairs carry no
    gradient on the reference side; here the batch is compared with itself
    (gradient on both sides, as the wrapped loss) and with the memory of
    *previous* batches, then enqueued. Both use the same pairs, so the values
    agree as long as no row has been dropped (rows seen ≤ ``memory_size``;
    after that PML's memory holds ``B`` fewer earlier rows).

    Tested on one device; with `kerasml.distribution` the memory would
    receive the gathered global batch, which has not been tested.

    Args:
        loss: the wrapped loss: a `kerasml.losses` instance, name or config.
            Defaults to ``"contrastive"`` (the paper's).
        memory_size: rows the memory holds (the paper: e.g. 8192–55000 on
            large datasets, a few thousand on CUB). Defaults to ``1024``.
        embedding_dim: width ``D`` of the embeddings; `configure` (called by
            `kerasml.models.MetricModel`) sets it when ``None``. Defaults to ``None``.
        start_step: batches before the memory is used (warm-up). Defaults to ``0``.
        name, reduction, dtype: as `MetricLoss`.

    Example:

    >>> import numpy as np, kerasml
    >>> xbm = kerasml.losses.CrossBatchMemory("contrastive", memory_size=4, embedding_dim=2)
    >>> x = np.array([[0.0, 0.0], [0.0, 0.5], [2.0, 0.0]])
    >>> round(float(xbm(np.array([0, 0, 1]), x)), 4)  # the contrastive loss of the batch alone
    0.125
    >>> xbm.memory.contents()[1].tolist()
    [0, 0, 1]

    Reference:
        Wang, Zhang, Huang, Scott, "Cross-Batch Memory for Embedding
        Learning", CVPR 2020.
    """

    layout_summary = "any labelled batch (that of the wrapped pair loss)"

    def __init__(
        self,
        loss="contrastive",
        memory_size=1024,
        embedding_dim=None,
        start_step=0,
        name="cross_batch_memory",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.loss = get_loss(loss)
        problem = self.loss.reference_problem() if isinstance(self.loss, MetricLoss) else "it is not a kerasml loss"
        if problem is not None:
            raise ValueError(
                f"Invalid value for argument `loss` of CrossBatchMemory. Expected a pair-based kerasml loss of any "
                f"labelled batch (contrastive, multi_similarity, circle, supcon, ntxent, tuplet_margin, triplet "
                f"with a miner...). Received: loss={type(self.loss).__name__}: {problem}. Pick one of those losses "
                "(for TripletLoss, mining='all', 'hard', 'semihard' or a miner)."
            )
        self.memory_size = check_int("memory_size", memory_size, "CrossBatchMemory")
        self.embedding_dim = check_int("embedding_dim", embedding_dim, "CrossBatchMemory", allow_none=True)
        self.start_step = check_int("start_step", start_step, "CrossBatchMemory", minimum=0)
        self._memory = None
        self._create_memory()

    def _create_memory(self):
        if self._memory is None and self.embedding_dim is not None:
            self._memory = MemoryBank(self.memory_size, self.embedding_dim, name=f"{self.name}_memory")

    def configure(self, num_classes=None, embedding_dim=None):
        """Set ``embedding_dim`` if it was not given and create the memory; returns the loss.

        Raises:
            ValueError: for an ``embedding_dim`` other than the one given at construction.
        """
        self.loss.configure(num_classes=num_classes, embedding_dim=embedding_dim)
        if embedding_dim is not None:
            embedding_dim = check_int("embedding_dim", embedding_dim, "CrossBatchMemory.configure")
            if self.embedding_dim is None:
                self.embedding_dim = embedding_dim
            elif self.embedding_dim != embedding_dim:
                raise ValueError(
                    f"Invalid value for argument `embedding_dim` of CrossBatchMemory.configure. The memory was built "
                    f"with embedding_dim={self.embedding_dim}. Received: embedding_dim={embedding_dim}. Build the "
                    "loss with the model's embedding size."
                )
        self._create_memory()
        return self

    @property
    def memory(self):
        """The `MemoryBank` layer (non-trainable variables) the model must own.

        Raises:
            ValueError: while ``embedding_dim`` is unknown.
        """
        if self._memory is None:
            raise ValueError(
                "CrossBatchMemory has no memory yet: it needs `embedding_dim`. Pass "
                "CrossBatchMemory(..., embedding_dim=...), or call loss.configure(embedding_dim=...) "
                "(kerasml.models.MetricModel sets it itself)."
            )
        return self._memory

    @property
    def parameters(self):
        """The memory (`memory`): the layer `kerasml.models.MetricModel` owns for this loss."""
        return self.memory

    @property
    def layout(self):
        return self.loss.layout

    def hdml_problem(self):
        return "CrossBatchMemory compares the batch with stored embeddings that HDML does not synthesise"

    def call(self, y_true, y_pred):
        bank = self.memory
        if not memory_is_tracked(bank.embeddings):
            raise ValueError(
                "CrossBatchMemory's memory is not a variable of the model being trained, so this backend's "
                "compiled step would never update it. Let the model own it: build "
                "kerasml.models.MetricModel(backbone, loss=xbm), or set `model.loss_memory = xbm.memory` "
                "before fit (in a subclassed model's __init__: `self.loss_memory = xbm.memory`)."
            )
        stored, stored_labels, stored_valid = bank.read()
        active = ops.convert_to_tensor(bank.steps) >= self.start_step
        batch_valid = ops.ones_like(y_true, dtype="bool")
        reference = Reference(
            labels=ops.concatenate([y_true, stored_labels], axis=0),
            embeddings=ops.concatenate([y_pred, ops.cast(stored, y_pred.dtype)], axis=0),
            valid=ops.concatenate([batch_valid, ops.logical_and(stored_valid, active)], axis=0),
        )
        loss = self.loss.call_with_reference(y_true, y_pred, reference)
        bank.enqueue(y_pred, y_true, active)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "memory_size": self.memory_size,
            "embedding_dim": self.embedding_dim,
            "start_step": self.start_step,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)
