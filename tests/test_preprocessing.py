"""kerasml.preprocessing: each normalisation against its definition, and one definition for data and backbones."""

import ast
import doctest
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasml.preprocessing as P
from kerasml import data
from kerasml.data import augment
from kerasml.models import backbones

KERASML = Path(__file__).resolve().parents[1] / "kerasml"


def rgb_images(shape=(2, 5, 4, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# The definitions, re-typed from the module's table (RGB x on the 0–255 scale).
REFERENCES = {
    "imagenet": lambda x: (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
    "caffe": lambda x: x[..., ::-1] - np.array([103.939, 116.779, 123.68]),
    "tf": lambda x: x / 127.5 - 1.0,
    "unit": lambda x: x / 255.0,
    "none": lambda x: x,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_named_normalizations_match_their_definition(name):
    images = rgb_images()
    expected = REFERENCES[name](images.astype(np.float64))
    normalization = P.get_normalization(name)
    for given in (images, images.astype(np.float32), images.astype(np.float64)):
        out = normalization(given)
        assert out.dtype == np.float32 and out.shape == images.shape
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(normalization.apply(images), normalization(images))
    assert set(P.NORMALIZATIONS) == set(REFERENCES)


def test_extremes_are_exact_enough():
    pixel = np.array([[[0, 255, 255]]], np.uint8)
    np.testing.assert_allclose(P.get_normalization("tf")(pixel), [[[-1.0, 1.0, 1.0]]], atol=1e-6)
    np.testing.assert_allclose(P.get_normalization("unit")(pixel), [[[0.0, 1.0, 1.0]]], atol=1e-6)
    assert P.get_normalization("unit")(np.full((4, 4, 3), 255, np.uint8)).max() <= 1.0


@pytest.mark.parametrize("name", ["tf", "unit", "none"])
def test_channel_free_normalizations_take_greyscale(name):
    grey = rgb_images((2, 3, 3, 1))
    out = P.get_normalization(name)(grey)
    assert out.shape == grey.shape
    np.testing.assert_allclose(out, REFERENCES[name](grey.astype(np.float64)), rtol=1e-6, atol=1e-5)


def test_googlenet_caffe_and_general_affine_definition():
    images = rgb_images(seed=1)
    caffe = backbones.preprocessing("googlenet", variant="caffe")
    expected = images[..., ::-1].astype(np.float64) - np.array([104.0, 117.0, 123.0])
    np.testing.assert_allclose(caffe(images), expected, atol=1e-5)
    custom = P.Normalization(mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0), channel_order="BGR", scale=0.5)
    expected = (images[..., ::-1] * 0.5 - np.array([10.0, 20.0, 30.0])) / np.array([2.0, 4.0, 8.0])
    np.testing.assert_allclose(custom(images), expected, rtol=1e-6, atol=1e-5)
    assert custom.bgr and not P.Normalization().bgr
    assert P.Normalization(**custom.to_config()) == custom


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("googlenet", {}),
        ("googlenet", {"variant": "caffe"}),
        ("small_cnn", {}),
        ("ResNet50", {}),
        ("DenseNet121", {}),
        ("mobilenet_v2", {}),
        ("EfficientNetB0", {}),
    ],
)
def test_backbone_preprocessing_is_the_data_pipelines(name, kwargs):
    from_backbones = backbones.preprocessing(name, **kwargs)
    assert isinstance(from_backbones, P.Normalization)
    assert from_backbones == P.backbone_normalization(name, **kwargs)
    images = rgb_images(seed=2)
    if not kwargs:  # the data pipeline takes a backbone name for its default variant
        assert data.get_normalization(name) == from_backbones
        assert data.Augment(8, normalization=name).normalization == from_backbones
    np.testing.assert_array_equal(from_backbones(images), from_backbones.apply(images.astype(np.float32)))


def test_own_backbones_use_the_named_normalizations():
    assert backbones.preprocessing("googlenet") is P.NORMALIZATIONS["imagenet"]
    assert backbones.preprocessing("small_cnn") is P.NORMALIZATIONS["tf"]
    assert backbones.preprocessing("ResNet50") == P.NORMALIZATIONS["caffe"]
    assert tuple(P.GOOGLENET_NORMALIZATIONS) == backbones.GOOGLENET_VARIANTS


def test_one_class_behind_every_public_name():
    assert data.Normalization is augment.Normalization is backbones.Preprocessing is P.Normalization
    assert data.get_normalization is augment.get_normalization is P.get_normalization
    assert augment.NORMALIZATIONS is P.NORMALIZATIONS


def test_application_normalizations_follow_preprocess_input():
    images = rgb_images((2, 4, 4, 3), seed=3).astype(np.float32)
    for name, module in (("ResNet50", "resnet50"), ("DenseNet121", "densenet"), ("MobileNetV2", "mobilenet_v2")):
        reference = keras.ops.convert_to_numpy(getattr(keras.applications, module).preprocess_input(images.copy()))
        np.testing.assert_allclose(P.get_normalization(name)(images), reference, rtol=1e-4, atol=1e-4)


def test_get_normalization_accepts_pairs_objects_and_none():
    assert P.get_normalization(None) is P.NORMALIZATIONS["none"]
    pair = P.get_normalization(((0.5, 0.25, 0.0), (0.5, 0.5, 1.0)))
    images = rgb_images(seed=4)
    expected = (images / 255.0 - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.5, 1.0])
    np.testing.assert_allclose(pair(images), expected, rtol=1e-6, atol=1e-5)

    class Like:  # anything with the four attributes
        mean, std, scale, channel_order = (1.0,), (2.0,), 1.0, "bgr"

    assert P.get_normalization(Like()) == P.Normalization(mean=(1.0,), std=(2.0,), channel_order="BGR")
    assert P.get_normalization("ImageNet") is P.NORMALIZATIONS["imagenet"]


def test_errors_name_the_argument_and_the_fix():
    with pytest.raises(
        ValueError, match=r"`normalization`.*Received: normalization='imagenett'.*Did you mean 'imagenet'"
    ):
        P.get_normalization("imagenett")
    with pytest.raises(ValueError, match=r"`normalization`.*pair of 3 floats"):
        P.get_normalization(((0.5, 0.5), (0.5, 0.5)))
    with pytest.raises(ValueError, match=r"Invalid value for argument `channel_order`.*Received: channel_order='GBR'"):
        P.Normalization(channel_order="GBR")
    with pytest.raises(ValueError, match=r"`std`. Expected values > 0"):
        P.Normalization(std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"`mean` and `std`. Expected the same number of channels"):
        P.Normalization(mean=(1.0, 2.0), std=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r"Invalid value for argument `variant`.*Did you mean 'caffe'"):
        P.backbone_normalization("googlenet", variant="cafe")
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet5O'.*Did you mean 'ResNet50'"):
        P.canonical_backbone_name("resnet5O")


def imported_modules(path):
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_preprocessing_sits_below_data_and_models():
    kerasml_imports = {m for m in imported_modules(KERASML / "preprocessing.py") if m.startswith("kerasml")}
    assert kerasml_imports == {"kerasml._validation"}
    assert not {m for m in imported_modules(KERASML / "_validation.py") if m.startswith("kerasml")}
    for path in sorted((KERASML / "data").rglob("*.py")):  # data no longer reaches up into models
        assert not {m for m in imported_modules(path) if m.startswith("kerasml.models")}, path


def test_named_normalizations_load_no_framework():
    code = (
        "import sys, kerasml.preprocessing as P; P.get_normalization('imagenet'); "
        "print(sorted(m for m in ('keras', 'tensorflow', 'torch', 'jax') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_docstring_examples():
    result = doctest.testmod(P, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0
