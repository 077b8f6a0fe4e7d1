"""Augmentation and PyDataset streams: layouts, determinism, evaluation order, spawn workers."""

import multiprocessing
import pickle

import keras
import numpy as np
import pytest

from kerasml import data
from kerasml.data import Augment, EvalStream, NPairSampler, TrainStream, get_normalization
from kerasml.losses import check_npair_batch, check_triplet_batch


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "proc.h5"
    data.ingest("procedural", path, classes=12, image_size=24, quiet=True, source_options={"images_per_class": 4})
    return path


def test_augment_shapes_determinism_and_normalisation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 40, 3), dtype=np.uint8)
    augment = Augment(16, normalization="unit")
    a = augment.train(images, np.random.default_rng(7))
    b = augment.train(images, np.random.default_rng(7))
    c = augment.train(images, np.random.default_rng(8))
    assert a.shape == (5, 16, 16, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0
    # evaluation: the centre crop, exactly
    centre = Augment(16, normalization="none").eval(images)
    assert np.array_equal(centre, images[:, 8:24, 12:28].astype(np.float32))
    # flips only: crop="random" at full size with flip gives the image or its mirror
    flips = Augment(32, crop="random", normalization="none").train(images[:, :, :32], np.random.default_rng(1))
    for out, image in zip(flips, images[:, :, :32], strict=True):
        assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
    pixel = np.full((1, 1, 1, 3), 255, np.uint8)
    np.testing.assert_allclose(get_normalization("tf")(pixel).reshape(-1), [1, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(
        get_normalization("caffe")(pixel).reshape(-1), [255 - 103.939, 255 - 116.779, 255 - 123.68], rtol=1e-5
    )
    np.testing.assert_allclose(
        get_normalization("imagenet")(pixel).reshape(-1),
        [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225],
        rtol=1e-5,
    )
    from kerasml.models import backbones

    images_f = images.astype(np.float32)
    for name in ("googlenet", "small_cnn"):  # the backbones' own preprocessing, exactly
        np.testing.assert_allclose(
            get_normalization(name)(images), backbones.preprocessing(name).apply(images_f), rtol=1e-5, atol=1e-5
        )
    with pytest.raises(ValueError, match="normalization"):
        get_normalization("bogus")


def test_train_stream_npair_and_triplet_layouts(store_path):
    stream = TrainStream(store_path, "npair", batch_size=8, image_size=16, seed=1)
    assert len(stream) == 3  # 24 training images / 8
    x, y = stream[0]
    assert x.shape == (8, 16, 16, 3) and x.dtype == np.float32 and y.dtype == np.int32
    check_npair_batch(y)
    assert set(y.tolist()) <= set(range(6))  # training classes only
    triplets = TrainStream(store_path, "triplet", batch_size=6, image_size=16, normalization="unit")
    check_triplet_batch(triplets[1][1])
    store = data.open_store(store_path)
    sampler = NPairSampler(store.split_labels("train"), 4, seed=0)
    assert TrainStream(store, sampler, image_size=16)[0][1].shape == (4,)
    with pytest.raises(ValueError, match=r"N = batch_size / 2 = 16 / 2.*has 6 class"):
        TrainStream(store_path, "npair", batch_size=16)
    with pytest.raises(ValueError, match="not those of the 'test' split"):
        TrainStream(store, sampler, split="test")


def test_identical_batches_for_equal_seeds_and_epochs(store_path):
    a = TrainStream(store_path, "npair", batch_size=8, image_size=16, seed=3)
    b = TrainStream(store_path, "npair", batch_size=8, image_size=16, seed=3)
    c = TrainStream(store_path, "npair", batch_size=8, image_size=16, seed=4)
    for i in range(len(a)):
        assert np.array_equal(a[i][0], b[i][0]) and np.array_equal(a[i][1], b[i][1])
    assert not np.array_equal(a[0][0], c[0][0])
    first = a[0][0]
    a.on_epoch_end()
    assert a.epoch == 1 and not np.array_equal(a[0][0], first)
    b.set_epoch(1)
    assert np.array_equal(a[0][0], b[0][0])
    clone = pickle.loads(pickle.dumps(a))  # what a spawn worker receives: no open HDF5 handle
    assert np.array_equal(clone[0][0], a[0][0])


def test_eval_stream_in_order(store_path):
    store = data.open_store(store_path)
    stream = EvalStream(store, "test", batch_size=10, image_size=24, normalization="none")
    assert len(stream) == 3  # 24 test images
    xs, ys = zip(*(stream[i] for i in range(len(stream))), strict=True)
    assert [len(y) for y in ys] == [10, 10, 4]
    assert np.array_equal(np.concatenate(ys), stream.labels)
    assert np.array_equal(stream.labels, store.split_labels("test"))
    assert np.array_equal(np.concatenate(xs), store.read(store.split_rows("test")).astype(np.float32))
    first = EvalStream(store_path, "test", batch_size=4, image_size=16, data_format="channels_first")[0][0]
    assert first.shape == (4, 3, 16, 16)


def test_fit_on_a_stream(store_path):
    stream = TrainStream(store_path, "npair", batch_size=8, image_size=16, workers=2)  # threads
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    from kerasml.losses import NPairLoss

    model.compile(optimizer="sgd", loss=NPairLoss())
    history = model.fit(stream, epochs=2, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"]).all()
    assert stream.epoch >= 2  # the plan advanced with every epoch


def test_stream_under_spawn_with_two_workers(store_path):
    """Worker processes started with `spawn` (as on Windows) give the very batches built in-process."""
    expected_stream = TrainStream(store_path, "npair", batch_size=8, image_size=16, seed=9)
    expected = np.concatenate([expected_stream[i][0] for i in range(len(expected_stream))])
    stream = TrainStream(store_path, "npair", batch_size=8, image_size=16, seed=9, workers=2, use_multiprocessing=True)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten()])
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        predicted = model.predict(stream, verbose=0)
    finally:
        multiprocessing.set_start_method(previous, force=True)
    np.testing.assert_allclose(predicted, expected.reshape(len(expected), -1), rtol=1e-6, atol=1e-6)
