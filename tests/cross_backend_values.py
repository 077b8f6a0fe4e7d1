"""Loss values and gradient norms on fixed NumPy batches, as JSON (run per backend).

``python tests/cross_backend_values.py`` prints them for the backend named by
KERAS_BACKEND; `test_cross_backend.py` compares the three backends.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from helpers import npair_labels, triplet_labels, value_and_grad

import kerasml.losses as L


def cases():
    """(name, loss, labels, embeddings) on fixed seeds: the same on every backend."""
    rng = np.random.default_rng(2024)
    any_labels = rng.integers(0, 5, size=24)
    x24 = rng.normal(size=(24, 32)).astype(np.float32)
    x24_near = (0.2 * x24).astype(np.float32)
    npair = npair_labels(rng, 12, classes=40)
    structured = triplet_labels(rng, 8, classes=6)
    heads = rng.normal(size=(24, 4, 8)).astype(np.float32) * 0.3
    return [
        ("contrastive", L.ContrastiveLoss(), any_labels, x24_near),
        ("triplet-all", L.TripletLoss(mining="all"), any_labels, x24_near),
        ("triplet-hard", L.TripletLoss(mining="hard", distance="euclidean"), any_labels, x24),
        ("triplet-semihard", L.TripletLoss(mining="semihard"), any_labels, x24_near),
        ("triplet-structured", L.TripletLoss(mining="structured"), structured, x24_near),
        ("lifted", L.LiftedStructureLoss(), any_labels, x24_near),
        ("npair", L.NPairLoss(), npair, x24_near),
        ("angular", L.AngularLoss(npair_weight=1.0, angular_weight=2.0), npair, x24),
        ("divergence", L.DivergenceLoss(), any_labels, heads),
    ]


def compute():
    """{name: [loss value, gradient L2 norm]} on the active backend."""
    results = {}
    for name, loss, labels, x in cases():
        value, grad = value_and_grad(lambda t, loss=loss, labels=labels: loss(labels, t), x)
        results[name] = [value, float(np.linalg.norm(grad))]
    return results


if __name__ == "__main__":
    print(json.dumps(compute()))
