"""kerasml.models.backbones: architectures, get(), weight files, preprocessing, errors."""

import math

import keras
import numpy as np
import pytest

from kerasml.models import backbones as B

# GoogLeNet's inception modules, re-typed from table 1 of Szegedy et al. (2015):
# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
PAPER_TABLE = [
    ("3a", 64, 96, 128, 16, 32, 32),
    ("3b", 128, 128, 192, 32, 96, 64),
    ("4a", 192, 96, 208, 16, 48, 64),
    ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64),
    ("4e", 256, 160, 320, 32, 128, 128),
    ("5a", 256, 160, 320, 32, 128, 128),
    ("5b", 384, 192, 384, 48, 128, 128),
]


def googlenet_convolutions():
    """(kernel, in, out) of every GoogLeNet convolution, from the paper's table."""
    convs = [(7, 3, 64), (1, 64, 64), (3, 64, 192)]
    channels = 192
    for _, n1, n3r, n3, n5r, n5, pool_proj in PAPER_TABLE:
        convs += [(1, channels, n1), (1, channels, n3r), (3, n3r, n3)]
        convs += [(1, channels, n5r), (5, n5r, n5), (1, channels, pool_proj)]
        channels = n1 + n3 + n5 + pool_proj
    assert channels == 1024
    return convs


def count_params(weights):
    return sum(math.prod(w.shape) for w in weights)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def features(model, images):
    """Inference features as NumPy. `predict` compiles the whole graph once, which on JAX is far
    cheaper than compiling every eager op of an Inception network."""
    return model.predict(images, batch_size=len(images), verbose=0)


def caffe_pool_side(n):
    """Caffe's pooling output side (3×3, stride 2, no pad, rounded up)."""
    return math.ceil((n - 3) / 2) + 1


# ---------------------------------------------------------------------------------------------- googlenet


@pytest.mark.parametrize("variant", ["bn", "caffe"])
def test_googlenet_parameters_layers_and_output(variant):
    model = B.googlenet(input_shape=(224, 224, 3), variant=variant)
    convs = googlenet_convolutions()
    kernels = sum(k * k * i * o for k, i, o in convs)
    channels = sum(o for _, _, o in convs)
    if variant == "caffe":
        expected_trainable, expected_frozen = kernels + channels, 0  # + biases
    else:
        expected_trainable, expected_frozen = kernels + 2 * channels, 2 * channels  # γ, β; moving mean, var
    assert count_params(model.trainable_weights) == expected_trainable
    assert count_params(model.non_trainable_weights) == expected_frozen
    assert 5.9e6 < model.count_params() < 6.1e6  # the paper's 6.8 M less its 1000-way classifier
    assert model.output_shape == (None, 1024)

    layers = {layer.name: layer for layer in model.layers}
    for name, shape in [
        ("conv1_7x7_s2", (None, 112, 112, 64)),
        ("pool1_3x3_s2", (None, 56, 56, 64)),
        ("conv2_3x3", (None, 56, 56, 192)),
        ("inception_3a_output", (None, 28, 28, 256)),
        ("inception_3b_output", (None, 28, 28, 480)),
        ("inception_4e_output", (None, 14, 14, 832)),
        ("inception_5b_output", (None, 7, 7, 1024)),
    ]:
        assert tuple(layers[name].output.shape) == shape, name
    assert "inception_4c_5x5" in layers and tuple(layers["inception_4c_5x5"].kernel.shape) == (5, 5, 24, 64)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Lambda" not in kinds and "Dropout" not in kinds and "Dense" not in kinds
    lrn = [layer.name for layer in model.layers if isinstance(layer, B.LocalResponseNormalization)]
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if variant == "caffe":
        assert lrn == ["pool1_norm1", "conv2_norm2"] and not batch_norms
    else:
        assert not lrn and len(batch_norms) == len(convs)


@pytest.mark.parametrize("side", [227, 100, 33])
def test_googlenet_pools_like_caffe_ceil_mode(side):
    model = B.googlenet(input_shape=(side, side, 3), variant="caffe")
    n = (side + 2 * 3 - 7) // 2 + 1  # conv1: 7×7, stride 2, pad 3
    for pool in ["pool1_3x3_s2", "pool2_3x3_s2", "pool3_3x3_s2", "pool4_3x3_s2"]:
        n = caffe_pool_side(n)
        assert model.get_layer(pool).output.shape[1:3] == (n, n), pool
    if side == 227:  # the HDML authors' crop
        assert n == 7


@pytest.mark.parametrize(("variant", "side"), [("bn", 96), ("caffe", 32)])
def test_googlenet_forward_small_images(variant, side):
    model = B.get("googlenet", input_shape=(None, None, 3), variant=variant)
    images = np.random.default_rng(0).uniform(0, 255, size=(1, side, side, 3)).astype("float32")
    y = features(model, B.preprocessing("googlenet", variant=variant).apply(images))
    assert y.shape == (1, 1024)
    assert np.all(np.isfinite(y)) and np.all(y >= 0) and np.any(y > 0)


def test_googlenet_argument_errors():
    with pytest.raises(ValueError, match=r"Invalid value for argument `variant`.*Received: variant='bvlc'"):
        B.googlenet(variant="bvlc")
    with pytest.raises(ValueError, match=r"at least 32×32 pixels"):
        B.get("googlenet", input_shape=(31, 31, 3))
    with pytest.raises(ValueError, match=r"Expected \(height, width, channels\)"):
        B.googlenet(input_shape=(224, 224))


def test_host_he_normal():
    init = B.HostHeNormal()
    keras.utils.set_random_seed(7)
    kernel = init((3, 3, 64, 256))
    keras.utils.set_random_seed(7)
    np.testing.assert_array_equal(init((3, 3, 64, 256)), kernel)
    fan_in = 3 * 3 * 64
    assert kernel.dtype == np.float32 and np.abs(kernel).max() <= 2 * np.sqrt(2 / fan_in) / 0.8796 + 1e-6
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / fan_in), rtol=0.02)  # as keras.initializers.HeNormal
    seeded = B.HostHeNormal.from_config(B.HostHeNormal(seed=3).get_config())
    np.testing.assert_array_equal(seeded((4, 5)), B.HostHeNormal(seed=3)((4, 5)))


# ---------------------------------------------------------------------------------------------- LRN


def lrn_oracle(x, depth_radius, bias, alpha, beta):
    out = np.empty_like(x, dtype="float64")
    channels = x.shape[-1]
    for c in range(channels):
        lo, hi = max(0, c - depth_radius), min(channels, c + depth_radius + 1)
        out[..., c] = x[..., c] / (bias + alpha * np.sum(x[..., lo:hi] ** 2, axis=-1)) ** beta
    return out


@pytest.mark.parametrize(
    ("depth_radius", "bias", "alpha", "beta"),
    [(5, 1.0, 1e-4, 0.75), (2, 2.0, 0.3, 0.5), (0, 1.0, 1.0, 1.0)],
)
def test_local_response_normalization_matches_oracle(depth_radius, bias, alpha, beta):
    x = np.random.default_rng(1).normal(scale=30.0, size=(2, 3, 4, 13)).astype("float32")
    layer = B.LocalResponseNormalization(depth_radius=depth_radius, bias=bias, alpha=alpha, beta=beta)
    np.testing.assert_allclose(to_numpy(layer(x)), lrn_oracle(x, depth_radius, bias, alpha, beta), rtol=1e-5)


def test_local_response_normalization_matches_tensorflow():
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(2).uniform(0, 200, size=(2, 5, 5, 64)).astype("float32")
    expected = tf.nn.local_response_normalization(x, depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75).numpy()
    np.testing.assert_allclose(to_numpy(B.LocalResponseNormalization()(x)), expected, rtol=1e-5)


def test_local_response_normalization_config():
    layer = B.LocalResponseNormalization(depth_radius=3, bias=2.0, alpha=0.1, beta=0.5, name="lrn")
    clone = B.LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.depth_radius, clone.bias, clone.alpha, clone.beta, clone.name) == (3, 2.0, 0.1, 0.5, "lrn")
    with pytest.raises(ValueError, match="Invalid value for argument `depth_radius`"):
        B.LocalResponseNormalization(depth_radius=-1)


# ---------------------------------------------------------------------------------------------- small_cnn


@pytest.mark.parametrize(("input_shape", "dim"), [((8, 8, 1), 16), ((32, 32, 3), 128), ((5, 7, 3), 8)])
def test_small_cnn_forward(input_shape, dim):
    kwargs = {} if dim == 128 else {"feature_dim": dim}
    model = B.get("small_cnn", input_shape=input_shape, **kwargs)
    assert model.output_shape == (None, dim)
    images = np.random.default_rng(3).uniform(0, 255, size=(4, *input_shape)).astype("float32")
    y = to_numpy(model(B.preprocessing("small_cnn").apply(images), training=True))
    assert y.shape == (4, dim) and np.all(np.isfinite(y))


# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("googlenet", "googlenet"),
        ("GoogLeNet", "googlenet"),
        ("inception_v1", "googlenet"),
        ("small-cnn", "small_cnn"),
        ("SmallCNN", "small_cnn"),
        ("ResNet50", "ResNet50"),
        ("resnet50", "ResNet50"),
        ("mobilenet_v2", "MobileNetV2"),
        ("efficientnet_b0", "EfficientNetB0"),
        ("ResNet50V2", "ResNet50V2"),
    ],
)
def test_canonical_names(name, canonical):
    assert B.canonical_name(name) == canonical


def test_unknown_name_lists_options_and_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Unknown backbone 'googlenett'\. Known names: googlenet, small_cnn, .*"):
        B.get("googlenett")
    with pytest.raises(ValueError, match=r"Did you mean 'googlenet'\?"):
        B.get("googlenett")
    with pytest.raises(ValueError, match=r"Did you mean 'MobileNetV2'\?"):
        B.preprocessing("mobilenet_v22")
    assert {"googlenet", "small_cnn", "ResNet50", "MobileNetV2"} <= set(B.available())


def test_keras_application_backbone():
    model = B.get("mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35)
    assert model.output_shape == (None, 1280)
    images = np.random.default_rng(4).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    y = features(model, B.preprocessing("MobileNetV2").apply(images))
    assert y.shape == (2, 1280) and np.all(np.isfinite(y))
    assert B.feature_dim("MobileNetV2", input_shape=(32, 32, 3), alpha=0.35) == 1280


def test_feature_dim():
    assert B.feature_dim("googlenet") == 1024
    assert B.feature_dim("googlenet", variant="caffe") == 1024
    assert B.feature_dim("small_cnn") == 128
    assert B.feature_dim("small_cnn", feature_dim=64) == 64


# ---------------------------------------------------------------------------------------------- weights


def test_weights_h5_round_trip(tmp_path):
    images = np.random.default_rng(5).uniform(-1, 1, size=(3, 16, 16, 3)).astype("float32")
    model = B.get("small_cnn", input_shape=(16, 16, 3), feature_dim=32)
    model(images, training=True)  # move the batch-norm statistics off their initial values
    path = str(tmp_path / "small.weights.h5")
    model.save_weights(path)
    fresh = B.get("small_cnn", input_shape=(16, 16, 3), feature_dim=32)
    assert not np.allclose(to_numpy(fresh(images)), to_numpy(model(images)))
    loaded = B.get("small_cnn", input_shape=(16, 16, 3), weights=path, feature_dim=32)
    np.testing.assert_array_equal(to_numpy(loaded(images)), to_numpy(model(images)))


@pytest.mark.parametrize(("name", "kwargs"), [("googlenet", {"variant": "bn"}), ("MobileNetV2", {"alpha": 0.35})])
def test_weights_h5_round_trip_of_large_backbones(tmp_path, name, kwargs):
    # Same architecture + every weight equal => same outputs (checked on small_cnn above and
    # on googlenet by the .keras test); comparing weights keeps this test cheap on JAX.
    model = B.get(name, input_shape=(32, 32, 3), **kwargs)
    path = str(tmp_path / f"{name}.weights.h5")
    model.save_weights(path)
    fresh = B.get(name, input_shape=(32, 32, 3), **kwargs)
    loaded = B.get(name, input_shape=(32, 32, 3), weights=path, **kwargs)
    assert len(loaded.weights) == len(model.weights) > 100
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), model.get_weights(), strict=True))
    for expected, actual in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(("name", "kwargs"), [("googlenet", {"variant": "caffe"}), ("small_cnn", {})])
def test_keras_file_round_trip(tmp_path, name, kwargs):
    images = np.random.default_rng(7).uniform(0, 255, size=(2, 48, 48, 3)).astype("float32")
    images = B.preprocessing(name, **kwargs).apply(images)
    model = B.get(name, input_shape=(48, 48, 3), **kwargs)
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = B.get(name, weights=path)  # safe_mode on: no Lambda, registered custom layers
    assert loaded.output_shape == model.output_shape
    np.testing.assert_allclose(features(loaded, images), features(model, images), rtol=1e-6, atol=1e-6)


def test_keras_file_must_hold_a_feature_model(tmp_path):
    inputs = keras.Input((8, 8, 3))
    path = str(tmp_path / "maps.keras")
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs)).save(path)
    with pytest.raises(ValueError, match=r"does not hold a backbone"):
        B.get("small_cnn", weights=path)


def test_unknown_builder_arguments_are_named():
    with pytest.raises(
        ValueError, match=r"Invalid argument\(s\) for backbone 'googlenet': feature_dim\. Accepted: .*variant"
    ):
        B.get("googlenet", feature_dim=64)
    with pytest.raises(ValueError, match=r"'MobileNetV2': pooling is set by kerasml"):
        B.get("MobileNetV2", input_shape=(32, 32, 3), pooling="max")


def test_weights_errors(tmp_path):
    for name in ("googlenet", "small_cnn"):
        with pytest.raises(ValueError, match=rf"weights.*ImageNet weights for '{name}'"):
            B.get(name, weights="imagenet")
    with pytest.raises(ValueError, match=r"bvlc_googlenet\.caffemodel.*load_caffe_weights"):
        B.get("googlenet", weights="imagenet")
    with pytest.raises(FileNotFoundError, match=r"no file at"):
        B.get("small_cnn", weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ValueError, match=r"Invalid value for argument `weights`.*Received: weights="):
        B.get("small_cnn", weights=str(tmp_path / "weights.txt"))
    with pytest.raises(ValueError, match=r"Invalid value for argument `weights`"):
        B.get("small_cnn", weights=3)
    npz = tmp_path / "caffe.npz"
    np.savez(npz, nothing=np.zeros(1))
    with pytest.raises(ValueError, match=r"Caffe weight files are for googlenet only"):
        B.get("small_cnn", weights=str(npz))


CAFFE_CONVOLUTIONS = ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"] + [
    f"inception_{module}/{branch}"
    for module, *_ in PAPER_TABLE
    for branch in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")
]


def caffe_weights(model, rng):
    """Random weights in the Caffe layout of the authors' .mat: [out, in, kh, kw] and '<name>_bias' [1, out]."""
    weights = {}
    for caffe_name in CAFFE_CONVOLUTIONS:
        kh, kw, cin, cout = model.get_layer(caffe_name.replace("/", "_")).kernel.shape
        weights[caffe_name] = rng.normal(size=(cout, cin, kh, kw)).astype("float32")
        weights[f"{caffe_name}_bias"] = rng.normal(size=(1, cout)).astype("float32")
    return weights


def test_load_caffe_weights(tmp_path):
    rng = np.random.default_rng(8)
    model = B.googlenet(input_shape=(32, 32, 3), variant="caffe")
    weights = caffe_weights(model, rng)
    assert len(weights) == 2 * 57 and "conv1/7x7_s2" in weights and "inception_5b/pool_proj_bias" in weights
    path = tmp_path / "bvlc.npz"
    np.savez(path, **weights)
    loaded = B.get("googlenet", input_shape=(32, 32, 3), variant="caffe", weights=str(path))
    conv1 = loaded.get_layer("conv1_7x7_s2")
    np.testing.assert_array_equal(to_numpy(conv1.kernel), weights["conv1/7x7_s2"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(to_numpy(conv1.bias), weights["conv1/7x7_s2_bias"][0])
    proj = loaded.get_layer("inception_4d_pool_proj")
    np.testing.assert_array_equal(to_numpy(proj.kernel)[0, 0], weights["inception_4d/pool_proj"][:, :, 0, 0].T)

    bn = B.googlenet(input_shape=(32, 32, 3), variant="bn")  # kernels only
    assert len(B.load_caffe_weights(bn, weights)) == 57

    del weights["inception_3a/5x5_bias"]
    with pytest.raises(ValueError, match=r"missing for 1 layer\(s\): inception_3a/5x5"):
        B.load_caffe_weights(model, weights)
    weights["inception_3a/5x5_bias"] = np.zeros((1, 32), "float32")
    weights["inception_3a/5x5"] = np.zeros((32, 16, 3, 3), "float32")
    with pytest.raises(ValueError, match=r"'inception_3a/5x5' has shape \(32, 16, 3, 3\)"):
        B.load_caffe_weights(model, weights)


# ---------------------------------------------------------------------------------------------- preprocessing


def test_preprocessing_of_own_backbones():
    caffe = B.preprocessing("googlenet", variant="caffe")
    assert caffe == B.Preprocessing(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), channel_order="BGR")
    pixel = np.array([[[10.0, 20.0, 30.0]]])
    np.testing.assert_allclose(caffe.apply(pixel), [[[30 - 104, 20 - 117, 10 - 123]]])
    bn = B.preprocessing("GoogLeNet")
    expected = (np.array([10.0, 20.0, 30.0]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(bn.apply(pixel)[0, 0], expected, rtol=1e-6)
    grey = B.preprocessing("small_cnn").apply(np.array([[[0.0], [255.0]]]))
    np.testing.assert_allclose(grey, [[[-1.0], [1.0]]])
    assert B.preprocessing("small_cnn").to_config()["channel_order"] == "RGB"
    with pytest.raises(ValueError, match="Invalid value for argument `channel_order`"):
        B.Preprocessing(channel_order="GBR")


@pytest.mark.parametrize(
    ("name", "module", "mode"),
    [
        ("ResNet50", "resnet50", "caffe"),
        ("DenseNet121", "densenet", "torch"),
        ("mobilenet_v2", "mobilenet_v2", "tf"),
        ("EfficientNetB0", "efficientnet", "none"),
        ("MobileNetV3Small", "mobilenet_v3", "none"),
    ],
)
def test_preprocessing_follows_keras_applications(name, module, mode):
    spec = B.preprocessing(name)
    expected_order = "BGR" if mode == "caffe" else "RGB"
    assert spec.channel_order == expected_order
    if mode == "torch":
        assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    images = np.random.default_rng(9).uniform(0, 255, size=(2, 4, 4, 3)).astype("float32")
    reference = to_numpy(getattr(keras.applications, module).preprocess_input(images.copy()))
    np.testing.assert_allclose(spec.apply(images), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("module", ["", ".googlenet", ".small_cnn", ".registry", "._common"])
def test_docstring_examples(module):
    import doctest
    import importlib

    # The package's examples, then each module's (doctest only collects a module's own objects).
    result = doctest.testmod(importlib.import_module(B.__name__ + module), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= {"": 2, ".googlenet": 3, ".registry": 5}.get(module, 1) and result.failed == 0
