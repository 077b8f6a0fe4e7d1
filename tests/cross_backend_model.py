"""Save an HDMLModel under one backend; load it under another (run per backend).

``python tests/cross_backend_model.py save DIR``: trains a small HDMLModel two
steps, saves ``DIR/model.keras`` and the fixed inputs ``DIR/batch.npz``.
``python tests/cross_backend_model.py load DIR``: loads the model under the
active backend and prints, as JSON, its embeddings of the saved images and the
HDML loss terms of one (non-updating) step on the saved batch.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import digits_npair_batches, tiny_backbone

from kerasml.hdml import HDMLModel


def save(folder):
    """Train two steps and save the model and a batch to ``folder``."""
    folder = Path(folder)
    keras.utils.set_random_seed(0)
    x, y = digits_npair_batches(np.random.default_rng(0), steps=3, pairs=6)
    model = HDMLModel(tiny_backbone(), embedding_dim=8, num_classes=10, generator_units=16, block_size=1)
    model.compile()
    model.fit(x[:24], y[:24], batch_size=12, epochs=1, shuffle=False, verbose=0)
    model.save(folder / "model.keras")
    np.savez(folder / "batch.npz", x=x[24:], y=y[24:])


def terms(model, x, y):
    """Loss terms of one step on ``(x, y)`` without touching the model's state."""
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in model.non_trainable_variables]
    for tracker in model.term_trackers.values():
        tracker.reset_state()
    model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    values = {name: float(keras.ops.convert_to_numpy(t.result())) for name, t in model.term_trackers.items()}
    for variable, value in zip(model.non_trainable_variables, before):
        variable.assign(value)
    return values


def load(folder):
    """Embeddings and loss terms of the saved model under the active backend."""
    folder = Path(folder)
    model = keras.saving.load_model(folder / "model.keras")
    batch = np.load(folder / "batch.npz")
    x, y = batch["x"], batch["y"]
    return {"embeddings": model.embed(x).tolist(), "terms": terms(model, x, y)}


if __name__ == "__main__":
    command, target = sys.argv[1], sys.argv[2]
    if command == "save":
        save(target)
    else:
        print(json.dumps(load(target)))
