"""uint8 input pipeline: streams hand over pixels, the model normalises them (`InputNormalization`).

The reference is the maths of each normalisation in float64 (``(x[order] * scale - mean) / std``);
the uint8 path must give the float pipeline's embeddings (1e-5) and cross backends in a .keras file.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasml import data
from kerasml.data import Augment, EvalStream, TrainStream
from kerasml.experiment import input_dtype
from kerasml.layers import InputNormalization
from kerasml.models import MetricModel, backbones
from kerasml.preprocessing import GOOGLENET_NORMALIZATIONS, NORMALIZATIONS

BACKENDS = ("tensorflow", "torch", "jax")
SIZE = 16


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("uint8") / "proc.h5"
    data.ingest("procedural", path, classes=6, image_size=20, quiet=True, source_options={"images_per_class": 4})
    return path


def reference_normalization(x, mean, std, scale, bgr, channels_first):
    """``(x[..., order] * scale - mean) / std`` in float64, channels on the last (or first) axis."""
    x = np.asarray(x, np.float64)
    if channels_first:
        x = np.moveaxis(x, 1, -1)
    if bgr:
        x = x[..., ::-1]
    out = (x * scale - np.asarray(mean)) / np.asarray(std)
    return np.moveaxis(out, -1, 1) if channels_first else out


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_input_normalization_matches_the_maths_and_the_data_pipeline(data_format):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    pixels[0, 0, 0] = (0, 128, 255)
    channels_first = data_format == "channels_first"
    layout = (lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))) if channels_first else (lambda a: a)
    cases = {**NORMALIZATIONS, "googlenet_caffe": GOOGLENET_NORMALIZATIONS["caffe"]}
    for name, norm in cases.items():
        layer = InputNormalization(norm, data_format=data_format)
        out = keras.ops.convert_to_numpy(layer(layout(pixels)))
        assert out.dtype == np.float32 and out.shape == layout(pixels).shape, name
        expected = reference_normalization(layout(pixels), norm.mean, norm.std, norm.scale, norm.bgr, channels_first)
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=2e-5, err_msg=name)
        # The data pipeline's NumPy normalisation (what the float streams return), then laid out.
        np.testing.assert_allclose(out, layout(norm(pixels)), rtol=1e-6, atol=1e-6, err_msg=name)
        # Float pixels on the 0-255 scale give the same as uint8.
        as_float = keras.ops.convert_to_numpy(layer(layout(pixels).astype("float32")))
        np.testing.assert_array_equal(as_float, out, err_msg=name)


def test_input_normalization_stays_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = InputNormalization("imagenet")
    finally:
        keras.config.set_dtype_policy(previous)
    out = layer(np.full((1, 2, 2, 3), 200, np.uint8))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert InputNormalization.from_config(layer.get_config()).normalization == NORMALIZATIONS["imagenet"]


def _twin_models(norm):
    """The same backbone and projector weights, one model taking pixels, one taking normalised images."""
    keras.utils.set_random_seed(0)
    backbone = backbones.get("small_cnn", input_shape=(SIZE, SIZE, 3), feature_dim=12)
    pixels_model = MetricModel(backbone, embedding_dim=6, input_normalization=norm)
    float_model = MetricModel(backbone, embedding_dim=6)
    float_model.projector.set_weights(pixels_model.projector.get_weights())
    return pixels_model, float_model


def test_uint8_streams_give_the_float_pipelines_batches_and_embeddings(store_path):
    norm = "tf"
    pixels_model, float_model = _twin_models(norm)
    assert input_dtype(pixels_model) == "uint8" and input_dtype(float_model) == "float32"

    train_u = TrainStream(store_path, "npair", batch_size=6, image_size=SIZE, normalization=norm, dtype="uint8")
    train_f = TrainStream(store_path, "npair", batch_size=6, image_size=SIZE, normalization=norm)
    (xu, yu), (xf, yf) = train_u[1], train_f[1]
    assert xu.dtype == np.uint8 and xf.dtype == np.float32 and train_u.dtype == "uint8"
    assert xf.nbytes == 4 * xu.nbytes
    np.testing.assert_array_equal(yu, yf)
    np.testing.assert_array_equal(NORMALIZATIONS[norm](xu), xf)  # same crops and flips, not normalised
    clone = pickle.loads(pickle.dumps(train_u))  # what a spawn worker receives
    np.testing.assert_array_equal(clone[1][0], xu)

    eval_u = EvalStream(store_path, "test", batch_size=5, image_size=SIZE, normalization=norm, dtype="uint8")
    eval_f = EvalStream(store_path, "test", batch_size=5, image_size=SIZE, normalization=norm)
    from kerasml.experiment import embed

    zu, lu = embed(pixels_model, eval_u)
    zf, lf = embed(float_model, eval_f)
    np.testing.assert_array_equal(lu, lf)
    assert np.abs(zf).max() > 0
    np.testing.assert_allclose(zu, zf, rtol=1e-5, atol=1e-6)
    # Training mode (batch statistics) too.
    tu = keras.ops.convert_to_numpy(pixels_model(xu, training=True))
    tf_ = keras.ops.convert_to_numpy(float_model(xf, training=True))
    np.testing.assert_allclose(tu, tf_, rtol=1e-5, atol=1e-6)


def test_saved_model_keeps_its_input_normalization(tmp_path):
    pixels_model, _ = _twin_models("caffe")
    pixels = np.random.default_rng(1).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    before = pixels_model.embed(pixels)
    pixels_model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert input_dtype(loaded) == "uint8"
    assert loaded.input_normalization.normalization == NORMALIZATIONS["caffe"]
    np.testing.assert_allclose(loaded.embed(pixels), before, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loaded.embed(pixels.astype("float32")), before, rtol=1e-6, atol=1e-7)


_LOAD_ON_OTHER_BACKEND = """
import json, sys, keras, numpy as np
import kerasml.models
model = keras.saving.load_model(sys.argv[1])
pixels = np.load(sys.argv[2])
print(json.dumps(model.embed(pixels).tolist()))
"""


@pytest.mark.cross_backend
def test_a_pixels_model_crosses_backends(tmp_path):
    pixels_model, _ = _twin_models("caffe")
    pixels = np.random.default_rng(2).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    pixels_model.save(tmp_path / "m.keras")
    expected = pixels_model.embed(pixels)
    for backend in BACKENDS:
        if backend == keras.backend.backend():
            continue
        done = subprocess.run(
            [sys.executable, "-c", _LOAD_ON_OTHER_BACKEND, str(tmp_path / "m.keras"), str(tmp_path / "pixels.npy")],
            env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        got = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=backend)


def test_dtype_arguments_are_checked(store_path):
    with pytest.raises(ValueError, match="dtype"):
        Augment(8, dtype="uint16")
    with pytest.raises(ValueError, match="differs from the `augment`'s dtype"):
        TrainStream(store_path, "npair", batch_size=6, image_size=8, augment=Augment(8), dtype="uint8")
    with pytest.raises(ValueError, match="dtype"):
        EvalStream(store_path, batch_size=4, image_size=8, dtype="float16")
    assert TrainStream(store_path, "npair", batch_size=6, image_size=8, augment=Augment(8, dtype="uint8")).dtype == (
        "uint8"
    )


@pytest.mark.parametrize("variant, mean", [("caffe", (104.0, 117.0, 123.0)), ("torchvision", (0.485, 0.456, 0.406))])
def test_auto_normalization_follows_the_backbone_variant(variant, mean):
    from kerasml.experiment import normalization_for
    from kerasml.preprocessing import get_normalization
    from kerasml.spec import load_spec

    overrides = [f'model.backbone_options.variant="{variant}"', 'model.weights=""', 'data.normalization="auto"']
    root = Path(__file__).resolve().parents[1]
    spec = load_spec(root / "specs" / "cub_npair_hdml.toml", overrides, check_files=False)
    assert get_normalization(normalization_for(spec)).mean == pytest.approx(mean)
