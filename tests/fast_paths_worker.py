"""Save and load a small MetricModel for the fast-path cross-backend test (run per backend).

``python tests/fast_paths_worker.py save DIR``: trains a small-CNN MetricModel two steps (through
the backend's fast path where there is one), saves ``DIR/<backend>/model.keras``, and prints
JSON ``{"fast": embeddings, "plain": embeddings}`` of the fixed images (``plain``: the fast paths
turned off).
``python tests/fast_paths_worker.py load DIR``: loads every ``DIR/*/model.keras`` under the
active backend and prints JSON ``{saver: {"fast": ..., "plain": ...}}``.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from kerasml import _backend
from kerasml.models import MetricModel, backbones


def images():
    """The fixed images every backend embeds: ``[6, 16, 16, 3]`` float32."""
    return np.random.default_rng(7).standard_normal((6, 16, 16, 3)).astype("float32")


def embeddings(model):
    """``{"fast": ..., "plain": ...}`` inference-mode embeddings of `images`, as lists."""
    result = {}
    for name, enabled in (("fast", True), ("plain", False)):
        with _backend.fast_paths(enabled):
            result[name] = np.asarray(keras.ops.convert_to_numpy(model(images(), training=False))).tolist()
    return result


def save(folder):
    """Train two steps, save ``folder/<backend>/model.keras``; return its embeddings."""
    keras.utils.set_random_seed(0)
    backbone = backbones.get("small_cnn", input_shape=(16, 16, 3), feature_dim=16, filters=(8,))
    model = MetricModel(backbone, embedding_dim=8, loss="npair")
    model.compile(learning_rates={"metric": 1e-2})
    rng = np.random.default_rng(1)
    labels = np.concatenate([np.arange(6), np.arange(6)]).astype("int32")
    for _ in range(2):
        model.train_on_batch(rng.standard_normal((12, 16, 16, 3)).astype("float32"), labels)
    target = Path(folder) / keras.backend.backend()
    target.mkdir(parents=True, exist_ok=True)
    model.save(target / "model.keras")
    return embeddings(model)


def load(folder):
    """Embeddings of every saved model under ``folder``, by the backend that saved it."""
    return {
        path.parent.name: embeddings(keras.saving.load_model(path))
        for path in sorted(Path(folder).glob("*/model.keras"))
    }


if __name__ == "__main__":
    command, directory = sys.argv[1], sys.argv[2]
    print(json.dumps(save(directory) if command == "save" else load(directory)))
