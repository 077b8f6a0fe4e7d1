"""HDML on your own backbone, trained with Keras' `fit`.

Any Keras model that maps images to a feature vector ``[B, F]`` is a backbone: here a small
convolutional network written in a few lines. `kerasml.hdml.HDMLModel` puts the embedding
projector, HDML's hardness-aware augmentation, generator and classifier on top, and trains it
all with `fit` (one optimizer per parameter group: metric, generator, classifier). The data is
kerasml's offline procedural dataset (rendered shapes and patterns, seeded), written once into
an HDF5 store and streamed as N-pair batches ``[a_1..a_N; p_1..p_N]``; evaluation is on classes
never seen in training.

    python examples/hdml_own_backbone.py                       # any backend (KERAS_BACKEND)
    python examples/hdml_own_backbone.py --classes 60 --steps 400
"""

import argparse
import tempfile
from pathlib import Path

import keras
import numpy as np

import kerasml
from kerasml import data
from kerasml.hdml import HDMLModel


def my_backbone(image_size):
    """Your network: images ``[B, S, S, 3]`` in, features ``[B, F]`` out."""
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name="my_backbone")


def evaluate(model, store, image_size):
    """Recall@K and NMI on the test classes."""
    stream = data.EvalStream(store, "test", batch_size=128, image_size=image_size, normalization="unit")
    chunks, labels = [], []
    for index in range(len(stream)):
        x, y = stream[index]
        chunks.append(keras.ops.convert_to_numpy(model(x, training=False)))
        labels.append(y)
    return kerasml.evaluation.evaluate(
        np.concatenate(chunks), np.concatenate(labels), ks=(1, 2, 4), metrics=("recall", "nmi")
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=40, help="procedural classes, half train (default: 40)")
    parser.add_argument("--images-per-class", type=int, default=12, help="images per class (default: 12)")
    parser.add_argument("--image-size", type=int, default=32, help="image side in pixels (default: 32)")
    parser.add_argument("--steps", type=int, default=200, help="training steps (default: 200)")
    parser.add_argument("--batch-size", type=int, default=16, help="N-pair batch, 2N images (default: 16)")
    parser.add_argument("--store", type=Path, default=None, help="the store to write (default: a temporary one)")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "procedural.h5"
        if not path.exists():
            data.ingest(
                "procedural",
                path,
                classes=args.classes,
                image_size=args.image_size,
                source_options={"images_per_class": args.images_per_class},
                quiet=True,
            )
        store = data.open_store(path)
        train_classes = sum(split == "train" for split in store.class_splits)
        epochs = 4
        train = data.TrainStream(
            store,
            "npair",
            batch_size=args.batch_size,
            image_size=args.image_size,
            augment=False,
            normalization="unit",
            sampler_options={"batches_per_epoch": max(1, args.steps // epochs)},
        )

        model = HDMLModel(
            my_backbone(args.image_size),
            embedding_dim=32,
            loss=kerasml.losses.NPairLoss(l2_reg=0.002),
            num_classes=train_classes,  # HDML's classifier: one output per training class
            block_size=16,  # J_avg and J_gen averaged over blocks of 16 steps
            generator_units=128,
        )
        model.compile(learning_rates={"metric": 1e-3})  # Adam per group; generator 1e-2, classifier 1e-3
        before = evaluate(model, store, args.image_size)
        history = model.fit(train, epochs=epochs, verbose=0)
        after = evaluate(model, store, args.image_size)
        store.close()

    last = {name: values[-1] for name, values in history.history.items()}
    print(f"backend: {keras.backend.backend()}, {train_classes} training classes, {args.steps} steps")
    print("last epoch: " + ", ".join(f"{name} {last[name]:.4g}" for name in ("J_m", "J_syn", "J_gen", "w")))
    for name in ("recall@1", "recall@2", "recall@4", "nmi"):
        print(f"{name}: {before[name]:.3f} before, {after[name]:.3f} after")


if __name__ == "__main__":
    main()
