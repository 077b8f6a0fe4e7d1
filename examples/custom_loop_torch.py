"""A custom PyTorch training loop with kerasml's functional losses.

With the PyTorch backend a Keras model is a `torch.nn.Module`: its weights are torch parameters,
so a plain `torch.optim` loop trains it. The loss is `kerasml.losses.triplet_loss` (semi-hard
triplets mined from the labels of each batch) plus `kerasml.losses.npair_loss` on batches laid
out as ``[a_1..a_N; p_1..p_N]``; `loss.backward()` and `optimizer.step()` do the rest. Recall@1
on held-out classes is printed before and after.

    python examples/custom_loop_torch.py              # sets KERAS_BACKEND=torch itself
    python examples/custom_loop_torch.py --steps 300
"""

import argparse
import os

os.environ["KERAS_BACKEND"] = "torch"  # this loop is PyTorch code: choose the backend before Keras is imported

import keras
import numpy as np
import torch

import kerasml

FEATURES, EMBEDDING, PAIRS = 32, 16, 8


def make_data(rng, classes, per_class):
    """Gaussian clusters whose class signal hides in 4 of 32 noisy features."""
    centres = np.zeros((classes, FEATURES))
    centres[:, :4] = rng.normal(size=(classes, 4)) * 2.0
    labels = np.repeat(np.arange(classes), per_class)
    x = centres[labels] + rng.normal(size=(labels.size, FEATURES)) * np.r_[[0.5] * 4, [2.0] * 28]
    return x.astype("float32"), labels.astype("int32")


def npair_batch(rng, x, labels):
    """One ``[a_1..a_N; p_1..p_N]`` batch: N distinct classes, an anchor and a positive of each."""
    classes = rng.choice(np.unique(labels), size=PAIRS, replace=False)
    pairs = np.array([rng.choice(np.flatnonzero(labels == c), size=2, replace=False) for c in classes])
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    return torch.from_numpy(x[rows]), torch.from_numpy(labels[rows])


def recall_at_1(model, x, labels):
    with torch.no_grad():
        embeddings = keras.ops.convert_to_numpy(model(x, training=False))
    return kerasml.evaluation.recall_at_k(embeddings, labels, ks=(1,))["recall@1"]


def main(steps):
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x_train, y_train = make_data(rng, classes=20, per_class=30)
    x_test, y_test = make_data(rng, classes=10, per_class=30)  # classes never seen in training
    model = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(EMBEDDING)]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    print(f"backend: {keras.backend.backend()}, Recall@1 before training: {recall_at_1(model, x_test, y_test):.3f}")
    for step in range(1, steps + 1):
        x, labels = npair_batch(rng, x_train, y_train)
        embeddings = model(x, training=True)
        loss = kerasml.losses.triplet_loss(labels, embeddings, margin=1.0, mining="semihard")
        loss = loss + kerasml.losses.npair_loss(labels, embeddings, l2_reg=0.002)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, steps // 4) == 0:
            print(f"step {step}: loss {loss.item():.4f}")
    print(f"Recall@1 after training: {recall_at_1(model, x_test, y_test):.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps (default: 200)")
    main(parser.parse_args().steps)
