"""A custom JAX training loop with kerasml's functional losses.

The model is a plain Keras model used statelessly (`stateless_call`), the loss is
`kerasml.losses.triplet_loss` (semi-hard triplets mined from the labels of each batch) plus
`kerasml.losses.npair_loss` on batches laid out as ``[a_1..a_N; p_1..p_N]``, and one step is a
`jax.jit`-compiled function: value and gradient with `jax.value_and_grad`, update with the
optimizer's `stateless_apply`. Recall@1 on held-out classes is printed before and after.

    python examples/custom_loop_jax.py              # sets KERAS_BACKEND=jax itself
    python examples/custom_loop_jax.py --steps 300
"""

import argparse
import os

os.environ["KERAS_BACKEND"] = "jax"  # this loop is JAX code: choose the backend before Keras is imported

import jax
import keras
import numpy as np

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
    return x[rows], labels[rows]


def recall_at_1(model, x, labels):
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
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    print(f"backend: {keras.backend.backend()}, Recall@1 before training: {recall_at_1(model, x_test, y_test):.3f}")

    def objective(trainable, non_trainable, x, labels):
        embeddings, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        loss = kerasml.losses.triplet_loss(labels, embeddings, margin=1.0, mining="semihard")
        loss = loss + kerasml.losses.npair_loss(labels, embeddings, l2_reg=0.002)
        return loss, non_trainable

    @jax.jit
    def train_step(state, x, labels):
        trainable, non_trainable, optimizer_vars = state
        (loss, non_trainable), grads = jax.value_and_grad(objective, has_aux=True)(trainable, non_trainable, x, labels)
        trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_vars)

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    for step in range(1, steps + 1):
        loss, state = train_step(state, *npair_batch(rng, x_train, y_train))
        if step % max(1, steps // 4) == 0:
            print(f"step {step}: loss {float(loss):.4f}")
    # write the trained values back into the Keras variables
    for variable, value in zip(model.trainable_variables, state[0], strict=True):
        variable.assign(value)
    for variable, value in zip(model.non_trainable_variables, state[1], strict=True):
        variable.assign(value)
    print(f"Recall@1 after training: {recall_at_1(model, x_test, y_test):.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps (default: 200)")
    main(parser.parse_args().steps)
