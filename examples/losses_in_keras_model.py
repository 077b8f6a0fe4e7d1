"""kerasml.losses in a plain Keras model, on any backend.

Trains a small embedding network on synthetic clustered data with a triplet
loss (semi-hard mining from the labels of each batch), then with an N-pair loss
on batches laid out as [anchors; positives], and prints Recall@1 on held-out
classes before and after. Run it with any backend:

    KERAS_BACKEND=torch python examples/losses_in_keras_model.py
"""

import keras
import numpy as np

import kerasml

FEATURES, EMBEDDING = 32, 16
rng = np.random.default_rng(0)


def make_data(classes, per_class):
    """Gaussian clusters whose class signal hides in 4 of 32 noisy features."""
    centres = np.zeros((classes, FEATURES))
    centres[:, :4] = rng.normal(size=(classes, 4)) * 2.0
    labels = np.repeat(np.arange(classes), per_class)
    x = centres[labels] + rng.normal(size=(labels.size, FEATURES)) * np.r_[[0.5] * 4, [2.0] * 28]
    return x.astype("float32"), labels.astype("int32")


def recall_at_1(model, x, labels):
    z = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    d = np.square(z[:, None, :] - z[None, :, :]).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(labels[np.argmin(d, axis=1)] == labels))


def npair_batches(x, labels, pairs, steps):
    """Rows ordered so that each consecutive batch of 2*pairs is [a_1..a_N; p_1..p_N]."""
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    order = []
    for _ in range(steps):
        classes = rng.choice(list(by_class), size=pairs, replace=False)
        chosen = np.array([rng.choice(by_class[c], size=2, replace=False) for c in classes])
        order.extend(chosen[:, 0])  # anchors
        order.extend(chosen[:, 1])  # their positives, same class order
    order = np.array(order)
    return x[order], labels[order]


x_train, y_train = make_data(classes=20, per_class=30)
x_test, y_test = make_data(classes=10, per_class=30)  # unseen classes

model = keras.Sequential(
    [keras.Input((FEATURES,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(EMBEDDING)]
)
print(f"backend: {keras.backend.backend()}, Recall@1 before training: {recall_at_1(model, x_test, y_test):.3f}")

# 1. Any labelled batch: the loss mines its triplets from y_true.
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=kerasml.losses.TripletLoss(margin=1.0, mining="semihard"))
model.fit(x_train, y_train, batch_size=60, epochs=20, verbose=0)
print(f"Recall@1 after triplet (semi-hard): {recall_at_1(model, x_test, y_test):.3f}")

# 2. N-pair needs [a_1..a_N; p_1..p_N] batches: lay the rows out, keep their order.
x_np, y_np = npair_batches(x_train, y_train, pairs=16, steps=100)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=kerasml.losses.NPairLoss(l2_reg=0.002))
model.fit(x_np, y_np, batch_size=32, epochs=2, shuffle=False, verbose=0)
print(f"Recall@1 after N-pair: {recall_at_1(model, x_test, y_test):.3f}")
