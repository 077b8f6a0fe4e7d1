"""Public API of kerasml.losses: get(), configs, serialization, errors."""

import keras
import numpy as np
import pytest
from helpers import npair_labels, triplet_labels

import kerasml.losses as L

ALL_LOSSES = [
    L.ContrastiveLoss(margin=0.7),
    L.TripletLoss(margin=0.3, mining="semihard", distance="euclidean"),
    L.LiftedStructureLoss(margin=2.0),
    L.NPairLoss(l2_reg=0.01),
    L.AngularLoss(alpha_degrees=36.0, angular_weight=2.0, npair_weight=1.0, l2_reg=0.1, normalize=False),
    L.DivergenceLoss(margin=0.5, heads=2),
]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("contrastive", L.ContrastiveLoss),
        ("ContrastiveLoss", L.ContrastiveLoss),
        ("Triplet", L.TripletLoss),
        ("triplet_loss", L.TripletLoss),
        ("NpairLoss", L.NPairLoss),
        ("n_pair", L.NPairLoss),
        ("N-Pair", L.NPairLoss),
        ("NPairLoss", L.NPairLoss),
        ("lifted", L.LiftedStructureLoss),
        ("LiftedStructLoss", L.LiftedStructureLoss),
        ("lifted_structure", L.LiftedStructureLoss),
        ("Angular", L.AngularLoss),
        ("divergence", L.DivergenceLoss),
    ],
)
def test_get_by_name(name, cls):
    loss = L.get(name)
    assert type(loss) is cls


def test_get_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Unknown kerasml loss 'tripplet'.*Did you mean 'triplet'"):
        L.get("tripplet")


def test_get_from_spec_dict_and_keras_config():
    loss = L.get({"type": "triplet", "margin": 0.2, "mining": "hard"})
    assert (type(loss), loss.margin, loss.mining) == (L.TripletLoss, 0.2, "hard")
    config = keras.saving.serialize_keras_object(L.NPairLoss(l2_reg=0.5))
    assert L.get(config).l2_reg == 0.5
    instance = L.ContrastiveLoss()
    assert L.get(instance) is instance
    with pytest.raises(ValueError, match="Invalid value for argument `identifier`"):
        L.get(3)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda loss: type(loss).__name__)
def test_config_round_trip(loss):
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(revived) is type(loss)
    assert revived.get_config() == config
    assert keras.saving.get_registered_name(type(loss)) == f"kerasml>{type(loss).__name__}"


@pytest.mark.filterwarnings("ignore:Skipping variable loading")
def test_compiled_loss_survives_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    loss = L.TripletLoss(margin=0.4, mining="hard", distance="euclidean")
    model.compile(optimizer="adam", loss=loss)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    restored_loss = restored.loss
    assert isinstance(restored_loss, L.TripletLoss)
    assert restored_loss.get_config() == loss.get_config()


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.array([0, 1, 0]), r"even batch.*Received a batch of 3.*NPairSampler"),
        (np.array([4, 4, 4, 4]), r"distinct classes.*\[4\].*NPairSampler"),
    ],
)
@pytest.mark.parametrize("loss", [L.NPairLoss(), L.AngularLoss()], ids=["npair", "angular"])
def test_npair_layout_errors_name_the_rule(loss, labels, pattern):
    x = np.zeros((labels.shape[0], 2), dtype=np.float32)
    with pytest.raises(ValueError, match=pattern):
        loss(labels, x)


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.array([0, 1, 0]), r"even batch.*Received a batch of 3.*NPairSampler"),
        (np.array([0, 1, 1, 0]), r"labels\[0\]=0 but labels\[2\]=1.*NPairSampler"),
        (np.array([4, 4, 4, 4]), r"distinct classes.*\[4\].*NPairSampler"),
    ],
)
def test_halves_layout_errors_name_the_rule(labels, pattern):
    # The losses take pairs in any order (tests/test_losses_pairing.py); the halves order
    # [a_1..a_N; p_1..p_N] is still the rule of HDML's N-pair synthesis and of NPairSampler.
    with pytest.raises(ValueError, match=pattern):
        L.check_npair_batch(labels)


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.array([0, 0, 1, 1]), r"multiple of 3.*Received a batch of 4.*TripletSampler"),
        (np.array([0, 1, 2]), r"labels\[0\]=0 but labels\[1\]=1"),
        (np.array([3, 3, 3]), r"labels\[0\] and labels\[2\] are both 3"),
    ],
)
def test_structured_triplet_layout_errors(labels, pattern):
    loss = L.TripletLoss(mining="structured")
    with pytest.raises(ValueError, match=pattern):
        loss(labels, np.zeros((labels.shape[0], 2), dtype=np.float32))


def test_valid_layouts_pass_the_checks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    assert np.isfinite(float(L.NPairLoss()(npair_labels(rng, 6), x)))
    assert np.isfinite(float(L.TripletLoss(mining="structured")(triplet_labels(rng, 4, 3), x)))
    L.check_npair_batch([7, 9, 7, 9])
    L.check_triplet_batch([1, 2, 1, 2, 0, 0])


def test_labels_may_be_a_column_or_floats():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2])
    loss = L.ContrastiveLoss()
    expected = float(loss(labels, x))
    assert float(loss(labels[:, None], x)) == pytest.approx(expected)
    assert float(loss(labels.astype("float32"), x)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("factory", "pattern"),
    [
        (lambda: L.TripletLoss(mining="hardest"), r"argument `mining`.*Received: mining='hardest'"),
        (lambda: L.TripletLoss(distance="cosine"), r"argument `distance`.*Received: distance='cosine'"),
        (lambda: L.AngularLoss(alpha_degrees=90), r"argument `alpha_degrees`.*\(0, 90\)"),
    ],
)
def test_bad_arguments_are_refused(factory, pattern):
    with pytest.raises(ValueError, match=pattern):
        factory()


def test_sample_weight_is_refused_with_a_reason():
    with pytest.raises(ValueError, match=r"no per-sample weights"):
        L.ContrastiveLoss()(np.array([0, 0]), np.zeros((2, 2), "float32"), sample_weight=np.ones(2))


def test_divergence_shapes():
    x = np.zeros((2, 6), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\[B, M, D\], or \[B, M\*D\] with `heads=M`"):
        L.DivergenceLoss()(np.zeros(2), x)
    with pytest.raises(ValueError, match=r"multiple of `heads`"):
        L.DivergenceLoss(heads=4)(np.zeros(2), x)
    with pytest.raises(ValueError, match=r"M=3"):
        L.DivergenceLoss(heads=2)(np.zeros(2), np.zeros((2, 3, 2), "float32"))
    flat = L.DivergenceLoss(heads=3)(np.zeros(2), x)
    nested = L.DivergenceLoss()(np.zeros(2), x.reshape(2, 3, 2))
    assert float(flat) == pytest.approx(float(nested)) == pytest.approx(1.0)


def test_returned_dtype_follows_the_loss_dtype():
    x = np.ones((4, 2), dtype=np.float32)
    value = L.ContrastiveLoss(dtype="bfloat16")(np.array([0, 0, 1, 1]), x)
    assert keras.backend.standardize_dtype(value.dtype) == "bfloat16"
