"""Every loss trains a small Keras model through compile/fit on every backend."""

import keras
import numpy as np
import pytest

import kerasml.losses as L

CLASSES, FEATURES, STEPS = 6, 16, 16


def _sample(rng, centres, labels):
    return centres[labels] + 0.6 * rng.normal(size=(labels.size, FEATURES))


def _batches(layout, rng):
    """Labels for STEPS batches in the layout the loss needs, concatenated."""
    batches = []
    for _ in range(STEPS):
        if layout == "npair":
            half = rng.permutation(CLASSES)
            batches.append(np.concatenate([half, half]))
        elif layout == "triplet":
            anchors = rng.integers(0, CLASSES, size=8)
            negatives = (anchors + rng.integers(1, CLASSES, size=8)) % CLASSES
            batches.append(np.concatenate([anchors, anchors, negatives]))
        else:
            batches.append(rng.permutation(np.repeat(np.arange(CLASSES), 4)))
    return batches


CASES = [
    ("contrastive", lambda: L.ContrastiveLoss(margin=2.0), "any"),
    ("triplet-all", lambda: L.TripletLoss(mining="all"), "any"),
    ("triplet-semihard", lambda: L.TripletLoss(mining="semihard", distance="euclidean"), "any"),
    ("triplet-structured", lambda: L.TripletLoss(mining="structured"), "triplet"),
    ("lifted", lambda: L.LiftedStructureLoss(), "any"),
    ("npair", lambda: L.NPairLoss(), "npair"),
    ("angular", lambda: L.AngularLoss(npair_weight=1.0, angular_weight=2.0), "npair"),
    ("divergence", lambda: L.DivergenceLoss(margin=4.0), "divergence"),
]


@pytest.mark.parametrize(("name", "make_loss", "layout"), CASES, ids=[c[0] for c in CASES])
def test_fit_lowers_the_loss(name, make_loss, layout):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(CLASSES, FEATURES)) * 1.5
    batches = _batches(layout, rng)
    batch = batches[0].size
    y = np.concatenate(batches).astype("int32")
    x = _sample(rng, centres, y).astype("float32")

    layers = [keras.Input((FEATURES,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(8)]
    if layout == "divergence":
        layers.append(keras.layers.Reshape((4, 2)))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=make_loss())

    before = model.evaluate(x, y, batch_size=batch, verbose=0)
    history = model.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0)
    after = model.evaluate(x, y, batch_size=batch, verbose=0)

    assert np.all(np.isfinite(history.history["loss"]))
    assert after < 0.8 * before, f"{name}: loss {before:.4f} -> {after:.4f}"
