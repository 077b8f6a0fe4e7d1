"""kerasml._validation: the one argument check and did-you-mean behind kerasml's errors."""

import doctest

import numpy as np
import pytest

import kerasml._validation as V
from kerasml import data, evaluation
from kerasml.models import backbones


def test_did_you_mean():
    assert V.did_you_mean("tripplet", ["npair", "triplet"]) == " Did you mean 'triplet'?"
    assert V.did_you_mean("xyz", ["npair", "triplet"]) == ""
    assert V.did_you_mean("anything", []) == ""
    # a key function sets the spelling compared; the candidate itself is suggested
    normalise = lambda name: name.replace("_", "").lower()  # noqa: E731
    assert V.did_you_mean("mobilenet_v", ["MobileNetV2", "ResNet50"], key=normalise) == " Did you mean 'MobileNetV2'?"
    assert V.did_you_mean("MOBILENET_V", ["MobileNetV2", "ResNet50"]) == ""  # 0.27 without the key
    assert V.did_you_mean("tripplet", {"triplet": 1}) == " Did you mean 'triplet'?"  # a mapping gives its keys
    # candidates and word are compared as strings
    assert V.did_you_mean(640, [64, 6400]) == " Did you mean 6400?"  # the closest: 0.86 against 0.8


def test_did_you_mean_cutoff():
    assert V.did_you_mean("sem", ["semihard"]) == ""  # similarity 2 * 3 / 11 = 0.55 < 0.6
    assert V.did_you_mean("sem", ["semihard"], cutoff=0.5) == " Did you mean 'semihard'?"
    assert V.did_you_mean("semihar", ["semihard"], cutoff=0.99) == ""


def test_check_choice_accepts_the_choices():
    assert V.check_choice("distance", "squared", ("squared", "euclidean")) is None
    assert V.check_choice("k", 3, [1, 3]) is None


def test_check_choice_message():
    with pytest.raises(ValueError) as info:
        V.check_choice("mining", "structred", ("structured", "all", "hard"))
    assert str(info.value) == (
        "Invalid value for argument `mining`. Expected one of ('structured', 'all', 'hard'). "
        "Received: mining='structred'. Did you mean 'structured'?"
    )
    with pytest.raises(ValueError, match=r"^Invalid value for argument `dtype`\. .* Received: dtype='int8'\.$"):
        V.check_choice("dtype", "int8", ["float32", "float64"])
    with pytest.raises(ValueError, match=r"Expected one of \(1, 2\)\. Received: n=3\.$"):
        V.check_choice("n", 3, (1, 2))
    with pytest.raises(ValueError, match=r"Received: x=\[1\]\.$"):  # unhashable, against a set
        V.check_choice("x", [1], {"a", "b"})


def test_check_int():
    assert V.check_int("size", 4) == 4 and type(V.check_int("size", np.int64(4))) is int
    assert V.check_int("start_step", 0, minimum=0) == 0
    assert V.check_int("num_classes", None, allow_none=True) is None
    with pytest.raises(ValueError) as info:
        V.check_int("bins", 0, "FastAPLoss")
    assert str(info.value) == "Invalid value for argument `bins` of FastAPLoss. Expected an int >= 1. Received: bins=0"
    with pytest.raises(ValueError, match=r"^Invalid value for argument `n`\. Expected an int >= 2 or None\. Rec"):
        V.check_int("n", 1, minimum=2, allow_none=True)
    for bad in (2.5, 3.0, True, "3", None, np.float32(2)):  # never truncated or parsed
        with pytest.raises(ValueError, match=r"Expected an int >= 1\."):
            V.check_int("size", bad)


def test_the_library_raises_the_shared_message():
    with pytest.raises(ValueError, match=r"argument `variant`.*Received: variant='cafe'\. Did you mean 'caffe'\?"):
        backbones.googlenet(variant="cafe")
    with pytest.raises(ValueError, match=r"argument `backend`.*Received: backend='kera'\. Did you mean 'keras'\?"):
        evaluation.nearest_neighbors(np.eye(3, dtype="float32"), 1, backend="kera")
    with pytest.raises(ValueError, match=r"argument `crop`.*Received: crop='resize'\. Did you mean 'resized'\?"):
        data.Augment(8, crop="resize")
    with pytest.raises(ValueError, match=r"argument `channel_order`.*Did you mean 'RGB'\?"):
        backbones.Preprocessing(channel_order="RBG")


def test_docstring_examples():
    result = doctest.testmod(V, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0
