"""Global-batch semantics: a step on 2 replicas equals the step on 1 device with the same global batch.

The multi-replica runs need another device count than this pytest process (which stays on one
device), so they run in one subprocess per backend pass (``tests/distribution_worker.py``) and are
marked ``multiprocess``: 2 logical CPU devices under ``tf.distribute.MirroredStrategy`` (through
``strategy.scope()``, ``compile`` and ``fit``), 2 forced host devices under
``keras.distribution.DataParallel`` (JAX), 2 ``gloo`` processes on 127.0.0.1 (PyTorch).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

import kerasml
from kerasml import distribution

BACKEND = keras.backend.backend()
WORKER = Path(__file__).resolve().parent / "distribution_worker.py"
LOSSES = ("npair", "structured", "all", "contrastive")
MODEL_CASES = [f"metric_{loss}" for loss in LOSSES] + ["hdml_npair", "hdml_structured"]
# A user's own Keras model compiled with a kerasml loss: the TensorFlow headline case; on PyTorch it needs
# `kerasml.distribution.synchronize(model)`; JAX's SPMD program needs nothing, so it is left out there.
KERAS_CASES = [] if BACKEND == "jax" else [f"keras_{loss}" for loss in LOSSES]
CASES = KERAS_CASES + MODEL_CASES
WEIGHT_TOLERANCE = 1e-5  # |w_2 - w_1| <= tol * max(max|w_1|, 1), per variable
UPDATE_TOLERANCE = 1e-4  # |Δw_2 - Δw_1| <= tol * max|Δw_1|, per variable that moved by > 1e-3
TERM_TOLERANCE = 1e-5  # every logged value, relative


# ------------------------------------------------------------------ one device: the API is the identity
def test_one_device_is_untouched():
    labels = ops.convert_to_tensor(np.array([0, 1, 0, 1], "int32"))
    z = ops.convert_to_tensor(np.arange(8, dtype="float32").reshape(4, 2))
    assert distribution.replica_count() == 1
    gathered_labels, gathered_z = distribution.gather_batch(labels, z)
    assert gathered_labels is labels and gathered_z is z
    assert distribution.scale_loss(z) is z
    mean, variance = distribution.batch_moments(z)
    np.testing.assert_allclose(ops.convert_to_numpy(mean), [3.0, 4.0])
    np.testing.assert_allclose(ops.convert_to_numpy(variance), [5.0, 5.0])


def test_global_batch_scope_nests():
    with distribution.global_batch_scope():
        with distribution.global_batch_scope():
            assert distribution.replica_count() == 1
        assert distribution.replica_count() == 1
    assert distribution.replica_count() == 1


def test_shards_are_consecutive_slices_that_reassemble_the_global_batch():
    assert [distribution.shard_bounds(12, 2, r) for r in range(2)] == [(0, 6), (6, 12)]
    assert [distribution.shard_bounds(10, 4, r) for r in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    # N-pair global batches [a_1..a_N; p_1..p_N]: shards concatenated in replica order are the global batch.
    labels = np.concatenate([np.array([3, 1, 4, 0, 5, 2] * 2), np.array([7, 6, 2, 1, 0, 3] * 2)])
    shards = [distribution.shard(labels, 12, 3, r) for r in range(3)]
    batches = [np.concatenate([s.reshape(2, -1)[b] for s in shards]) for b in range(2)]
    np.testing.assert_array_equal(np.concatenate(batches), labels)


def test_shard_errors_say_what_to_fix():
    with pytest.raises(ValueError, match="replica"):
        distribution.shard_bounds(12, 2, 2)
    with pytest.raises(ValueError, match="whole global batches"):
        distribution.shard(np.zeros(13), 12, 2, 0)


def test_top_level_module_is_lazy_and_public():
    assert kerasml.distribution is distribution


# ------------------------------------------------------------- two replicas against one device
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every case on this pass's backend: one device, then 2 replicas (one subprocess)."""
    out = tmp_path_factory.mktemp(f"distribution_{BACKEND}")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, str(WORKER), BACKEND, str(out), ",".join(CASES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return np.load(out / "results.npz"), json.loads((out / "logs.json").read_text())


def _weights(arrays, case, mode):
    return [arrays[f"{case}/{mode}/w{i}"] for i in range(int(arrays[f"{case}/count"]))]


@pytest.mark.multiprocess
def test_two_replicas_really_ran(runs):
    _, logs = runs
    assert logs["replicas"] == 2


@pytest.mark.multiprocess
@pytest.mark.parametrize("case", CASES)
def test_two_replicas_equal_one_device(runs, case):
    arrays, logs = runs
    initial = _weights(arrays, case, "initial")
    single = _weights(arrays, case, "single")
    modes = ["replicated", "rank1"] if BACKEND == "torch" else ["replicated"]
    for mode in modes:
        replicated = _weights(arrays, case, mode)
        for i, (w0, w1, w2) in enumerate(zip(initial, single, replicated)):
            scale = max(float(np.abs(w1).max()), 1.0)
            assert np.abs(w2 - w1).max() <= WEIGHT_TOLERANCE * scale, f"{mode}: variable {i} differs"
            moved = float(np.abs(w1 - w0).max())
            if moved > 1e-3:
                error = float(np.abs((w2 - w0) - (w1 - w0)).max())
                assert error <= UPDATE_TOLERANCE * moved, f"{mode}: update of variable {i} differs by {error / moved}"
        one, two = dict(logs["logs"][case]["single"]), dict(logs["logs"][case][mode])
        if BACKEND == "tensorflow":  # each MirroredVariable's per-replica copies, compared in the worker
            assert two.pop("replica_spread") == 0.0
        assert sorted(one) == sorted(two)
        for name, value in one.items():
            assert two[name] == pytest.approx(value, rel=TERM_TOLERANCE, abs=1e-12), f"{mode}: logged {name}"
    assert any(np.abs(w1 - w0).max() > 1e-3 for w0, w1 in zip(initial, single)), "the step did not train"
