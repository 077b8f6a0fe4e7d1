"""Build what a spec describes: the loss, the data store and streams, the compiled model; embed and evaluate.

The functions behind `kerasml.experiment.run`, `kerasml evaluate` and `kerasml embed`; each choice comes from
the resolved spec (`kerasml.spec`).
"""

from pathlib import Path

import keras
import numpy as np

from kerasml import _backend, distribution
from kerasml import data as kdata
from kerasml import losses as klosses
from kerasml.hdml import HDMLModel
from kerasml.models import MetricModel, backbones


# --------------------------------------------------------------------------- building
def train_classes(store):
    """The number of training classes (classes are indexed train first: 0..C-1)."""
    return sum(1 for split in store.class_splits if split == "train")


def build_loss(spec, store=None):
    """The spec's loss: ``loss.type`` with its arguments ``loss.params``, in a cross-batch memory with ``loss.memory``.

    With a ``store``, a loss with trainable class parameters (proxies, class weights)
    is sized to the store's training classes.
    """
    loss = klosses.get({"type": spec.loss.type, **spec.loss.params})
    if spec.loss.memory is not None:
        loss = klosses.CrossBatchMemory(loss, spec.loss.memory.size, start_step=spec.loss.memory.start_step)
    return loss if store is None else loss.configure(num_classes=train_classes(store))


def open_data(spec, run_dir, console=None):
    """The store of the spec: ``data.path``, or a built-in dataset ingested into the run folder."""
    data = spec.data
    if data.path:
        return kdata.open_store(data.path)
    out = Path(run_dir) / "data" / f"{data.builtin}.h5"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        kdata.ingest(
            data.builtin,
            out=out,
            classes=data.classes or None,  # 0: the dataset fixes its classes
            seed=spec.experiment.seed,
            quiet=True,
            console=console,
        )
    return kdata.open_store(out)


def normalization_for(spec):
    """The data normalisation: ``data.normalization``, or with ``"auto"`` the backbone's own preprocessing.

    The backbone's preprocessing depends on its options too (GoogLeNet's ``variant="caffe"`` takes BGR minus
    the BVLC means, its other variants the ImageNet mean/std): `kerasml.models.backbones.preprocessing` decides.
    """
    value = spec.data.normalization
    if value != "auto":
        return value
    return backbones.preprocessing(spec.model.backbone, **spec.model.backbone_options)


def input_dtype(model):
    """What streams hand ``model``: ``"uint8"`` pixels if it normalises them (`build_model`'s), else ``"float32"``."""
    return "uint8" if getattr(model, "input_normalization", None) is not None else "float32"


def build_streams(spec, store, epoch_steps=None, dtype="uint8"):
    """``(train stream, evaluation stream)`` of the spec, the images ``dtype`` (see `input_dtype`).

    ``epoch_steps`` caps the train stream's plan at that many batches per epoch.
    """
    data, train = spec.data, spec.train
    size = data.image_size
    normalization = normalization_for(spec)
    augment = kdata.Augment(size, normalization=normalization, crop=data.crop, dtype=dtype) if data.augment else False
    images = {"image_size": size, "normalization": normalization, "dtype": dtype}
    train_stream = kdata.TrainStream(
        store,
        build_loss(spec).layout.sampler,
        batch_size=train.batch_size,
        augment=augment,
        **images,
        seed=spec.experiment.seed,
        sampler_options={"batches_per_epoch": epoch_steps} if epoch_steps else None,
        workers=max(1, data.workers),
        use_multiprocessing=data.use_multiprocessing and data.workers > 0,
    )
    eval_stream = kdata.EvalStream(store, spec.eval.split, batch_size=spec.eval.batch_size, **images)
    return train_stream, eval_stream


def build_model(spec, store):
    """The `kerasml.hdml.HDMLModel` / `kerasml.models.MetricModel` of the spec, compiled, normalising its input.

    Each parameter group (``model.group_learning_rates``) gets an Adam optimizer at its
    learning rate, decayed by ``train.lr_decay_factor`` at each of ``train.lr_decay_steps``.
    """
    size = spec.data.image_size
    with _backend.precision(spec.train.precision):
        backbone = backbones.get(
            spec.model.backbone,
            input_shape=(size, size, 3),
            weights=spec.model.weights or None,
            **spec.model.backbone_options,
        )
        common = {
            "embedding_dim": spec.model.embedding_dim,
            "loss": build_loss(spec, store),
            "weight_decay": spec.train.weight_decay,
            "input_normalization": normalization_for(spec),
        }
        if spec.model.hdml:
            model = HDMLModel(backbone, num_classes=train_classes(store), **common, **spec.hdml.model_dump())
        else:
            model = MetricModel(backbone, **common)
    rates = model.group_learning_rates(spec.train.learning_rate)
    model.compile(
        optimizer={
            group: keras.optimizers.Adam(learning_rate_schedule(rate, spec.train), epsilon=1e-8)
            for group, rate in rates.items()
        },
        jit_compile=_backend.jit_compile(spec.train.compile),
    )
    return model


def learning_rate_schedule(rate, train):
    """``rate``, or a piecewise-constant decay by ``train.lr_decay_factor`` at each of ``train.lr_decay_steps``."""
    if not train.lr_decay_steps:
        return rate
    values = [rate * train.lr_decay_factor**i for i in range(len(train.lr_decay_steps) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(list(train.lr_decay_steps), values)


# --------------------------------------------------------------------------- evaluation
def embed(model, stream, sharded=False):
    """Embeddings ``[N, D]`` (float32) and labels of an evaluation stream, in order.

    Each batch goes through the backend's compiled inference function (`kerasml._backend.predict_batches`:
    ``tf.function``, ``jax.jit``, ``torch.no_grad``); under a JAX ``DataParallel`` distribution or a
    ``tf.distribute`` strategy of several replicas each batch is split across the replicas and gathered
    back in order. ``sharded``: every process of a PyTorch process group calls it together and embeds a
    consecutive share of the batches (`kerasml.distribution.gather_arrays`).
    """
    labels = []
    processes, rank = distribution.process_shard() if sharded else (1, 0)
    sharding = 1 < processes <= len(stream)
    first, stop = distribution.shard_bounds(len(stream), processes, rank) if sharding else (0, len(stream))

    def images():
        for index in range(first, stop):
            x, y = stream[index]
            labels.append(y)
            yield x

    chunks = list(_backend.predict_batches(model, images()))
    if sharding:
        return distribution.gather_arrays(np.concatenate(chunks), np.concatenate(labels))
    return np.concatenate(chunks), np.concatenate(labels)


def evaluate_model(model, stream, spec):
    """The spec's metrics on the evaluation stream (``recall@K``, ``nmi``, ``f1``...).

    Every process of a PyTorch process group calls it together (each embeds its share of the
    stream); the metrics are computed once, on process 0, and the other processes get ``{}``.
    """
    from kerasml.evaluation import evaluate

    embeddings, labels = embed(model, stream, sharded=True)
    if distribution.process_shard()[1] != 0:
        return {}
    return evaluate(embeddings, labels, ks=spec.eval.ks, metrics=spec.eval.metrics, seed=spec.experiment.seed)
