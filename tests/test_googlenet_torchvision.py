"""torchvision's GoogLeNet (``googlenet(variant="torchvision")``), its weight conversion and ``kerasml weights``.

The reference is torchvision's Inception-v1 written here with ``torch.nn.functional`` from its
definition (torchvision itself is not installed): a random state dict in torchvision's layout,
converted to ``.weights.h5`` and loaded on the current backend, must give the reference's
features (float64) to 1e-4.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasml.cli import main
from kerasml.cli import weights as weights_command
from kerasml.models import backbones
from kerasml.spec import SpecError, load_spec

torch = pytest.importorskip("torch")
F = torch.nn.functional

SPECS = Path(__file__).resolve().parent.parent / "specs"
SIDE = 64  # every pooling window still fits: 64 -> 32, 16, 8, 4, 2 (the final 2x2 map is averaged)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's Inception(in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), module by module.
INCEPTIONS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


def _blocks():
    """``(name, in, out, kernel)`` of every BasicConv2d (conv, BN eps 1e-3, ReLU) of torchvision's GoogLeNet."""
    blocks = [("conv1", 3, 64, 7), ("conv2", 64, 64, 1), ("conv3", 64, 192, 3)]
    for name, (cin, c1, c3r, c3, c5r, c5, pool) in INCEPTIONS.items():
        blocks += [
            (f"{name}.branch1", cin, c1, 1),
            (f"{name}.branch2.0", cin, c3r, 1),
            (f"{name}.branch2.1", c3r, c3, 3),
            (f"{name}.branch3.0", cin, c5r, 1),
            (f"{name}.branch3.1", c5r, c5, 3),  # torchvision's "5x5" branch is 3x3
            (f"{name}.branch4.1", cin, pool, 1),
        ]
    return blocks


def random_state_dict(seed=0):
    """A state dict in torchvision's GoogLeNet layout (with aux heads and classifier), random float32 values."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, cin, cout, k in _blocks():
        state[f"{name}.conv.weight"] = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        state[f"{name}.bn.weight"] = rng.uniform(0.5, 1.5, cout)
        state[f"{name}.bn.bias"] = rng.normal(0.0, 0.2, cout)
        state[f"{name}.bn.running_mean"] = rng.normal(0.0, 0.3, cout)
        state[f"{name}.bn.running_var"] = rng.uniform(0.5, 2.0, cout)
    # entries the feature extractor skips (their real shapes do not matter here)
    for extra in ("aux1.conv.conv.weight", "aux1.fc1.weight", "aux2.fc2.bias", "fc.weight", "fc.bias"):
        state[extra] = rng.standard_normal(4)
    state = {key: torch.tensor(value, dtype=torch.float32) for key, value in state.items()}
    for name, *_ in _blocks():
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    return state


def reference_features(state, images):
    """torchvision's GoogLeNet (transform_input=True, eval mode) up to the average pool, in float64.

    ``images``: NHWC, ImageNet-standardised RGB; returns ``[B, 1024]``.
    """
    w = {key: value.double() for key, value in state.items()}

    def basic(x, name, padding=0, stride=1):
        x = F.conv2d(x, w[f"{name}.conv.weight"], stride=stride, padding=padding)
        x = F.batch_norm(
            x,
            w[f"{name}.bn.running_mean"],
            w[f"{name}.bn.running_var"],
            w[f"{name}.bn.weight"],
            w[f"{name}.bn.bias"],
            training=False,
            eps=1e-3,
        )
        return F.relu(x)

    def inception(x, name):
        branch1 = basic(x, f"{name}.branch1")
        branch2 = basic(basic(x, f"{name}.branch2.0"), f"{name}.branch2.1", padding=1)
        branch3 = basic(basic(x, f"{name}.branch3.0"), f"{name}.branch3.1", padding=1)
        branch4 = basic(F.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True), f"{name}.branch4.1")
        return torch.cat([branch1, branch2, branch3, branch4], 1)

    x = torch.tensor(np.asarray(images), dtype=torch.float64).permute(0, 3, 1, 2)
    # transform_input: back from ImageNet mean/std to (x - 0.5) / 0.5 on [0, 1]
    x = torch.cat([x[:, c : c + 1] * (IMAGENET_STD[c] / 0.5) + (IMAGENET_MEAN[c] - 0.5) / 0.5 for c in range(3)], 1)
    x = basic(x, "conv1", padding=3, stride=2)
    x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
    x = basic(x, "conv2")
    x = basic(x, "conv3", padding=1)
    x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
    x = inception(inception(x, "inception3a"), "inception3b")
    x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
    for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
        x = inception(x, name)
    x = F.max_pool2d(x, 2, stride=2, ceil_mode=True)
    x = inception(inception(x, "inception5a"), "inception5b")
    return F.adaptive_avg_pool2d(x, 1).flatten(1).numpy()


def _images(seed=1, batch=2, side=SIDE):
    pixels = np.random.default_rng(seed).integers(0, 256, (batch, side, side, 3)).astype("uint8")
    return backbones.preprocessing("googlenet", variant="torchvision")(pixels)


def _relative_error(got, expected):
    got = np.asarray(keras.ops.convert_to_numpy(got), "float64")
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``(state dict, .pth path, .weights.h5 written by `kerasml weights googlenet --from`)``."""
    folder = tmp_path_factory.mktemp("weights")
    state = random_state_dict()
    pth = folder / "tiny.pth"
    torch.save(state, pth)
    out = folder / "out.weights.h5"
    assert main(["weights", "googlenet", "--from", str(pth), "--to", str(out)]) == 0
    return state, pth, out


def test_architecture_and_preprocessing():
    model = backbones.get("googlenet", input_shape=(224, 224, 3), variant="torchvision")
    assert model.output_shape == (None, 1024)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    moving = sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)
    # torchvision's GoogLeNet has 6,624,904 parameters, its 1000-way classifier 1024 * 1000 + 1000
    assert (trainable, moving) == (6_624_904 - 1_025_000, 2 * sum(cout for _, _, cout, _ in _blocks()))
    for name, cin, cout, k in _blocks():
        assert tuple(model.get_layer(name.replace(".", "_")).kernel.shape) == (k, k, cin, cout), name
        assert model.get_layer(name.replace(".", "_") + "_bn").epsilon == 1e-3
    assert model.get_layer("maxpool4").output.shape == (None, 7, 7, 832)
    assert model.get_layer("inception5b_output").output.shape == (None, 7, 7, 1024)
    imagenet = backbones.preprocessing("googlenet", variant="torchvision")
    assert (imagenet.mean, imagenet.std, imagenet.channel_order) == (IMAGENET_MEAN, IMAGENET_STD, "RGB")
    assert backbones.feature_dim("googlenet", variant="torchvision") == 1024
    with pytest.raises(ValueError, match="at least 32"):
        backbones.googlenet(input_shape=(16, 16, 3), variant="torchvision")


@pytest.fixture(scope="module")
def loaded(converted):
    """``(model built with the converted file, images, its features)``."""
    _, _, out = converted
    model = backbones.get("googlenet", input_shape=(SIDE, SIDE, 3), variant="torchvision", weights=str(out))
    images = _images()
    # predict_on_batch: one compiled function (on JAX ~4x faster to build than calling the model op by op)
    return model, images, np.asarray(model.predict_on_batch(images))


def test_converted_weights_give_torchvisions_features(converted, loaded):
    state, _, _ = converted
    model, images, features = loaded
    expected = reference_features(state, images)
    assert np.std(expected) > 1e-2  # a live network: not all zeros or constant
    assert _relative_error(features, expected) <= 1e-4
    # the state dict in memory (torch tensors) loads the same values into a model of any input size
    direct = backbones.googlenet(input_shape=(None, None, 3), variant="torchvision")
    assert len(backbones.load_torchvision_weights(direct, state)) == len(_blocks())
    for mine, theirs in zip(direct.weights, model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs))


def test_serialization_round_trip_and_fast_path(loaded):
    """The model's config (its transform_input rescaling included) rebuilds it, as a .keras file does."""
    model, images, features = loaded
    twin = keras.Model.from_config(model.get_config())
    assert twin.get_config() == model.get_config()
    assert [v.path for v in twin.weights] == [v.path for v in model.weights]
    # the rebuilt transform_input computes torchvision's formula
    transformed = keras.ops.convert_to_numpy(twin.get_layer("transform_input")(images))
    expected = np.stack(
        [images[..., c] * (IMAGENET_STD[c] / 0.5) + (IMAGENET_MEAN[c] - 0.5) / 0.5 for c in range(3)], -1
    )
    np.testing.assert_allclose(transformed, expected, rtol=1e-6, atol=1e-6)
    if keras.backend.backend() == "torch":
        from kerasml import _backend

        with _backend.fast_paths(True):
            fast = _backend.call_functional(model, torch.tensor(images), training=False)
        assert _relative_error(fast.detach().cpu().numpy(), features) <= 1e-5


def test_state_dict_errors(converted):
    state, _, _ = converted
    model = backbones.googlenet(input_shape=(32, 32, 3), variant="torchvision")
    before = [keras.ops.convert_to_numpy(v) for v in model.weights]
    lacking = {key: value for key, value in state.items() if key != "inception4c.branch3.1.bn.running_var"}
    with pytest.raises(ValueError, match=r"lacks 1 weight.*inception4c\.branch3\.1\.bn\.running_var"):
        backbones.load_torchvision_weights(model, lacking)
    wrong = {**state, "conv3.conv.weight": torch.zeros(192, 64, 5, 5)}
    with pytest.raises(ValueError, match=r"'conv3\.conv\.weight' has shape .*expects a kernel \(3, 3, 64, 192\)"):
        backbones.load_torchvision_weights(model, wrong)
    with pytest.raises(ValueError, match=r"1 entries .* does not have: layer5\.weight"):
        backbones.load_torchvision_weights(model, {**state, "layer5.weight": torch.zeros(3)})
    # nothing was assigned by the failed loads
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    # keys saved from nn.DataParallel
    prefixed = {f"module.{key}": value for key, value in state.items()}
    assert len(backbones.load_torchvision_weights(model, prefixed)) == len(_blocks())


def test_cli_errors(converted, tmp_path, monkeypatch, capsys):
    state, pth, _ = converted
    capsys.readouterr()
    assert main(["weights", "googlenet", "--from", str(tmp_path / "nope.pth"), "--to", str(tmp_path / "a.weights.h5")])
    assert "nope.pth: no such file" in capsys.readouterr().err
    assert main(["weights", "googlenet", "--from", str(pth), "--to", str(tmp_path / "a.h5")]) == 2
    assert "must end with .weights.h5" in capsys.readouterr().err
    lacking = tmp_path / "lacking.pth"
    torch.save({key: value for key, value in state.items() if key != "conv1.conv.weight"}, lacking)
    assert main(["weights", "googlenet", "--from", str(lacking), "--to", str(tmp_path / "b.weights.h5")]) == 2
    err = capsys.readouterr().err
    assert "lacks 1 weight(s) of torchvision's GoogLeNet: conv1.conv.weight" in err and "Traceback" not in err
    assert not (tmp_path / "b.weights.h5").exists()
    not_torch = tmp_path / "notes.pth"
    not_torch.write_text("not a checkpoint")
    assert main(["weights", "googlenet", "--from", str(not_torch), "--to", str(tmp_path / "c.weights.h5")]) == 2
    assert "Cannot read" in capsys.readouterr().err
    # without PyTorch the .pth cannot be read: the message says how to get it
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["weights", "googlenet", "--from", str(pth), "--to", str(tmp_path / "d.weights.h5")]) == 2
    assert "needs PyTorch, which is not installed: `pip install torch`" in capsys.readouterr().err


def test_download_checks_the_sha256_prefix(converted, tmp_path, monkeypatch, capsys):
    """The downloader fetches (a file:// URL: no network in tests), then refuses a hash that is not torchvision's."""
    import hashlib

    _, pth, _ = converted
    url = pth.resolve().as_uri()
    out = tmp_path / "w" / "g.weights.h5"
    fetched = tmp_path / "w" / "googlenet-1378be20.pth"
    capsys.readouterr()
    # a file whose SHA-256 starts with the expected digits: downloaded, verified, converted; then found again
    monkeypatch.setattr(
        backbones, "TORCHVISION_GOOGLENET_SHA256_PREFIX", hashlib.sha256(pth.read_bytes()).hexdigest()[:8]
    )
    assert main(["weights", "googlenet", "--url", url, "--to", str(out), "--retries", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"{fetched}: downloaded" in printed and f"{out}: torchvision's ImageNet GoogLeNet" in printed
    assert out.is_file() and fetched.read_bytes() == pth.read_bytes()
    assert main(["weights", "googlenet", "--url", url, "--to", str(out)]) == 0
    assert f"{fetched}: already there, verified" in capsys.readouterr().out
    # torchvision's digits: the file is set aside, nothing converted
    monkeypatch.undo()
    out.unlink()
    code = main(["weights", "googlenet", "--url", url, "--to", str(out), "--retries", "0"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "does not start with 1378be20" in err and "Traceback" not in err
    assert fetched.with_name(fetched.name + ".mismatch").is_file() and not fetched.exists() and not out.exists()


def test_cli_constants_match_the_library():
    assert weights_command.DEFAULT_OUT == backbones.GOOGLENET_IMAGENET_WEIGHTS
    assert backbones.TORCHVISION_GOOGLENET_URL.endswith(f"-{backbones.TORCHVISION_GOOGLENET_SHA256_PREFIX}.pth")


@pytest.mark.parametrize("dataset", ["cub", "cars196", "sop"])
def test_study_specs_point_at_the_converted_weights(dataset, tmp_path, monkeypatch):
    for loss in ("npair", "triplet"):
        for kind in ("plain", "hdml"):
            spec = load_spec(SPECS / f"{dataset}_{loss}_{kind}.toml", check_files=False)
            assert spec.model.backbone == "googlenet"
            assert spec.model.backbone_options == {"variant": "torchvision"}
            assert spec.model.weights == backbones.GOOGLENET_IMAGENET_WEIGHTS
    monkeypatch.chdir(tmp_path)  # no weights/ here
    with pytest.raises(SpecError) as error:
        load_spec(SPECS / f"{dataset}_npair_hdml.toml")
    message = str(error.value)
    assert f"{backbones.GOOGLENET_IMAGENET_WEIGHTS} does not exist" in message
    assert "`kerasml weights googlenet`" in message


def test_missing_weights_names_the_command_with_its_path():
    hint = backbones.missing_weights_hint("elsewhere/g.weights.h5", "googlenet", {"variant": "torchvision"})
    assert "`kerasml weights googlenet --to elsewhere/g.weights.h5`" in hint
    assert "kerasml weights" not in backbones.missing_weights_hint("x.weights.h5", "googlenet", {"variant": "bn"})
    assert "kerasml weights" not in backbones.missing_weights_hint("x.weights.h5", "small_cnn")
    with pytest.raises(ValueError, match="`kerasml weights googlenet`"):
        backbones.get("googlenet", variant="torchvision", weights="imagenet")


@pytest.mark.parametrize("module", ["torchvision_googlenet", "weights"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"kerasml.models.backbones.{module}"))
    assert result.attempted > 0 and result.failed == 0
