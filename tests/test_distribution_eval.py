"""Evaluation across replicas: the evaluation split's embeddings on 2 replicas are the 1-device ones, in order.

The 2 replicas need another device count than this pytest process (which stays on one device), so
they run in one subprocess per backend pass (``multiprocess``), this file run as a script: 2 forced
host devices under ``keras.distribution.DataParallel`` (JAX), 2 logical CPU devices under
``tf.distribute.MirroredStrategy`` (TensorFlow), 2 gloo processes (PyTorch: this process is
process 0, the subprocess process 1, each embedding its share of the batches). The split has an
odd number of rows (37), so the last chunk does not split evenly; the metrics are computed once
(on PyTorch's other process they are ``{}``).

Usage as a script: ``python tests/test_distribution_eval.py OUT_DIR`` (``KERAS_BACKEND`` set; on JAX
also ``XLA_FLAGS=--xla_force_host_platform_device_count=2``; on PyTorch ``MASTER_PORT``, where
process 0 waits).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
ROWS = 37  # odd: the last chunk of every chunking leaves a remainder on 2 replicas
CHUNK = 16  # model.embed's batch_size: chunks of 16, 16, 5
STREAM_BATCH = 8  # the evaluation stream's batches: 8, 8, 8, 8, 5
REPLICAS = 2
TOLERANCE = 1e-5
SPEC = {
    "experiment": {"name": "eval", "seed": 0},
    "data": {"builtin": "digits", "image_size": 8},
    "model": {"backbone": "small_cnn"},
    "loss": {"type": "npair"},
    "train": {"batch_size": 10, "max_steps": 1},
    "eval": {"ks": [1, 2], "metrics": ["recall", "nmi"]},
}


def _data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(ROWS, 8, 8, 1)).astype("float32")
    return x, (np.arange(ROWS) % 5).astype("int32")


class _Stream:
    """An evaluation stream's interface (`kerasml.experiment.embed`): batches ``(x, y)`` by index."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return -(-len(self.x) // STREAM_BATCH)

    def __getitem__(self, index):
        rows = slice(index * STREAM_BATCH, (index + 1) * STREAM_BATCH)
        return self.x[rows], self.y[rows]


def _model(weights=None):
    from helpers import tiny_backbone

    import kerasml

    keras.utils.set_random_seed(0)
    model = kerasml.models.MetricModel(tiny_backbone(), embedding_dim=4, loss="npair")
    model(_data()[0][:2])
    if weights is not None:
        model.set_weights(weights)
    return model


def _spec():
    from kerasml.spec import parse_spec

    return parse_spec(SPEC, check_files=False)


def _everything(model, out, tag):
    """Embeddings through `MetricModel.embed` and `kerasml.experiment.embed`, and the metrics, saved under ``tag``."""
    from kerasml.experiment import embed, evaluate_model

    x, y = _data()
    stream = _Stream(x, y)
    results = {f"{tag}/embed": model.embed(x, batch_size=CHUNK)}
    results[f"{tag}/stream"], results[f"{tag}/labels"] = embed(model, stream, sharded=True)
    metrics = evaluate_model(model, stream, _spec())
    np.savez(out / f"{tag}.npz", **results)
    (out / f"{tag}.json").write_text(json.dumps(metrics))


def _torch_rank(out, rank, port):
    """Process ``rank`` of a 2-process gloo group: embed its share of the split, gather, evaluate."""
    import datetime

    import torch.distributed

    from kerasml import distribution

    model = _model()
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=REPLICAS,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        assert distribution.process_shard() == (REPLICAS, rank)
        distribution.synchronize(model)  # process 0's weights everywhere
        _everything(model, out, f"replicated_rank{rank}")
    finally:
        torch.distributed.destroy_process_group()


def _worker(out):
    """Embed on one device, then on 2 replicas (the backend's engine); write ``OUT_DIR/*.npz|json``."""
    from kerasml import distribution
    from kerasml._backend import inference

    if BACKEND == "torch":  # process 1 of the gloo group; the test's own process is process 0
        _torch_rank(out, 1, int(os.environ["MASTER_PORT"]))
        return
    session = distribution.start(distribution.Topology(devices=REPLICAS))  # before the runtime starts
    reference = _model()  # outside the session: one device
    _everything(reference, out, "single")
    with session.scope():
        model = _model(reference.get_weights())
        _everything(model, out, "replicated_rank0")
        parts = inference.replica_outputs(model, _data()[0][:5])
        # A model built outside the distribution, embedded inside it (weights placed on every replica).
        outside = {"outside/embed": reference.embed(_data()[0], batch_size=CHUNK)}
    (out / "parts.json").write_text(json.dumps([[device, len(rows)] for device, rows in parts]))
    np.savez(out / "parts.npz", *[rows for _, rows in parts], **outside)


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory):
    out = tmp_path_factory.mktemp("distribution_eval")
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "2"}
    port = None
    if BACKEND == "jax":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={REPLICAS}"
    if BACKEND == "torch":
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        env["MASTER_PORT"] = str(port)
    log = out / "worker.log"  # a file, not a pipe: nobody reads a pipe while this process is a gloo rank
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, __file__, str(out)], env=env, stdout=stderr, stderr=stderr)
        try:
            if BACKEND == "torch":  # this process is process 0 of the group (one process to start, not two)
                _everything(_model(), out, "single")  # before the group: one device
                _torch_rank(out, 0, port)
            process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, log.read_text()[-4000:]
    return out


def _load(out, tag):
    with np.load(out / f"{tag}.npz") as arrays:
        return dict(arrays), json.loads((out / f"{tag}.json").read_text())


@pytest.mark.multiprocess
def test_two_replicas_embed_the_split_as_one_device_in_order(two_replicas):
    single, single_metrics = _load(two_replicas, "single")
    replicated, metrics = _load(two_replicas, "replicated_rank0")
    y = _data()[1]
    assert single["single/embed"].shape == (ROWS, 4)
    np.testing.assert_array_equal(single["single/labels"], y)
    np.testing.assert_array_equal(replicated["replicated_rank0/labels"], y)
    for kind in ("embed", "stream"):
        np.testing.assert_allclose(replicated[f"replicated_rank0/{kind}"], single["single/embed"], atol=TOLERANCE)
    np.testing.assert_allclose(single["single/stream"], single["single/embed"], atol=TOLERANCE)
    # The metrics, computed once from the gathered embeddings, are the 1-device metrics.
    assert set(metrics) == set(single_metrics) == {"recall@1", "recall@2", "nmi"}
    for name, value in single_metrics.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6)


@pytest.mark.multiprocess
def test_each_replica_embeds_its_share(two_replicas):
    if BACKEND == "torch":
        # Each process embeds a consecutive share of the batches and gets every row back; only process 0
        # computes the metrics.
        rank1, metrics1 = _load(two_replicas, "replicated_rank1")
        rank0, _ = _load(two_replicas, "replicated_rank0")
        np.testing.assert_array_equal(rank1["replicated_rank1/stream"], rank0["replicated_rank0/stream"])
        assert metrics1 == {}
        return
    parts = json.loads((two_replicas / "parts.json").read_text())
    # 5 rows on 2 replicas: padded to 6, split 3 + 3, the padding's row dropped.
    assert [rows for _, rows in parts] == [3, 2]
    assert len({device for device, _ in parts}) == REPLICAS
    with np.load(two_replicas / "parts.npz") as arrays:
        single, _ = _load(two_replicas, "single")
        np.testing.assert_allclose(
            np.concatenate([arrays["arr_0"], arrays["arr_1"]]), single["single/embed"][:5], atol=TOLERANCE
        )
        np.testing.assert_allclose(arrays["outside/embed"], single["single/embed"], atol=TOLERANCE)


def test_one_device_is_one_replica_with_every_row():
    from kerasml._backend import inference

    model = _model()
    x = _data()[0][:5]
    ((device, rows),) = inference.replica_outputs(model, x)
    assert device == ""
    np.testing.assert_allclose(rows, keras.ops.convert_to_numpy(model(x, training=False)), atol=TOLERANCE)


if __name__ == "__main__":
    if BACKEND != "tensorflow":  # keras.utils.set_random_seed would import it (seconds) to seed it too
        sys.modules.setdefault("tensorflow", None)
    _worker(Path(sys.argv[1]))
