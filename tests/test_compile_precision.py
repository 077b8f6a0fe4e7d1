"""``train.compile`` and ``train.precision`` (issue 13): validation, fallback warnings, a run with each."""

import json
import warnings

import keras
import numpy as np
import pytest
from helpers import digits_npair_batches, digits_triplet_batches

import kerasml
from kerasml import _backend
from kerasml.cli import main
from kerasml.hdml import HDMLModel
from kerasml.models import MetricModel, backbones
from kerasml.spec import SpecError, parse_spec

BACKEND = keras.backend.backend()
SPEC = """[experiment]
name = "tiny"
seed = 3
output_dir = "{out}"
[data]
builtin = "digits"
image_size = 16
[model]
backbone = "small_cnn"
backbone_options = {{feature_dim = 16, filters = [8]}}
embedding_dim = 8
[loss]
type = "npair"
[train]
batch_size = 10
max_steps = 4
learning_rate = 0.001
log_every = 2
eval_every = 4
[eval]
ks = [1, 2]
metrics = ["recall"]
batch_size = 64
"""


@pytest.mark.parametrize(
    "mode, backend, expected",
    [
        ("auto", "tensorflow", "auto"),
        ("auto", "torch", "auto"),
        ("auto", "jax", "auto"),
        ("off", "tensorflow", False),
        ("off", "torch", False),
        ("off", "jax", False),
        ("xla", "tensorflow", True),
        ("xla", "jax", True),
        ("torch.compile", "torch", True),
    ],
)
def test_compile_modes_map_to_jit_compile(mode, backend, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _backend.jit_compile(mode, backend) == expected


@pytest.mark.parametrize("mode, backend", [("xla", "torch"), ("torch.compile", "tensorflow"), ("torch.compile", "jax")])
def test_an_unavailable_compiler_falls_back_to_auto_with_a_warning(mode, backend):
    with pytest.warns(UserWarning, match=rf'train.compile = "{mode}" is not available on the {backend} backend'):
        assert _backend.jit_compile(mode, backend) == "auto"


def test_unknown_compile_mode_and_precision_are_refused():
    with pytest.raises(ValueError, match=r"Did you mean 'torch\.compile'"):
        _backend.jit_compile("torch_compile")
    with pytest.raises(ValueError, match="precision"):
        with _backend.precision("bfloat16"):
            pass


def _spec(tmp_path):
    return SPEC.format(out=(tmp_path / "runs").as_posix())


def test_spec_keys_validate(tmp_path):
    spec = parse_spec(_spec(tmp_path), check_files=False)
    assert (spec.train.compile, spec.train.precision) == ("auto", "float32")
    spec = parse_spec(_spec(tmp_path), ["train.compile=off", "train.precision=mixed_bfloat16"], check_files=False)
    assert (spec.train.compile, spec.train.precision) == ("off", "mixed_bfloat16")
    with pytest.raises(SpecError, match=r"train.compile: expected one of .*Did you mean 'torch.compile'"):
        parse_spec(_spec(tmp_path), ["train.compile=torch_compile"], check_files=False)
    with pytest.raises(SpecError, match=r"train.precision: expected one of \"float32\", \"mixed_float16\""):
        parse_spec(_spec(tmp_path), ["train.precision=fp16"], check_files=False)


def test_precision_scope_builds_with_the_policy_and_restores_it():
    with _backend.precision("mixed_bfloat16"):
        model = MetricModel(backbones.get("small_cnn", input_shape=(8, 8, 3), feature_dim=4), embedding_dim=4)
    assert keras.config.dtype_policy().name == "float32"
    assert model.backbone.layers[1].compute_dtype == "bfloat16"
    assert model.backbone.layers[1].variable_dtype == "float32"
    embeddings = model.embed(np.zeros((3, 8, 8, 3), "float32"))
    assert embeddings.dtype == np.float32 and embeddings.shape == (3, 4)


def _run(tmp_path, overrides):
    spec = tmp_path / "tiny.toml"
    spec.write_text(_spec(tmp_path), encoding="utf-8")
    assert main(["run", str(spec), *[arg for o in overrides for arg in ("--set", o)]]) == 0
    (run,) = sorted((tmp_path / "runs").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run, records


def test_run_with_an_unavailable_compiler_warns_and_trains(tmp_path):
    unavailable = "xla" if BACKEND == "torch" else "torch.compile"
    with pytest.warns(UserWarning, match=f'train.compile = "{unavailable}" is not available'):
        _, records = _run(tmp_path, [f"train.compile={unavailable}"])
    evaluations = [r for r in records if r["type"] == "eval"]
    assert evaluations and 0 <= evaluations[-1]["recall@1"] <= 1


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_run_in_mixed_precision_trains_finite(tmp_path, precision):
    run, records = _run(tmp_path, [f"train.precision={precision}", "train.compile=off"])
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert losses and all(np.isfinite(losses))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Skipping variable loading for optimizer": a resume would lose it
        model = keras.saving.load_model(run / "checkpoints" / "last.keras")
    assert model.dtype_policy.name == model.backbone.layers[1].dtype_policy.name == precision
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")


# ------------------------------------------------------------------------------- every model in mixed precision ---

CASES = [
    ("metric", "npair", None),
    ("metric", "triplet", None),
    ("hdml", "npair", "kerasml"),
    ("hdml", "npair", "authors"),
    ("hdml", "triplet", "kerasml"),
    ("hdml", "triplet", "authors"),
]
# First step (same weights, so only the forward precision differs) vs float32; bfloat16 keeps 8 bits.
FIRST_STEP = {"mixed_float16": 0.01, "mixed_bfloat16": 0.05}


def _losses(kind, loss, convention, policy, steps=3):
    rng = np.random.default_rng(0)
    if loss == "npair":
        (x, y), batch = digits_npair_batches(rng, steps, 5), 10
        base = "npair"
    else:
        (x, y), batch = digits_triplet_batches(rng, steps, 4), 12
        base = kerasml.losses.TripletLoss(mining="structured")
    keras.utils.set_random_seed(0)
    with _backend.precision(policy):
        backbone = backbones.get("small_cnn", input_shape=(8, 8, 1), feature_dim=16, filters=(8,))
        if kind == "metric":
            model = MetricModel(backbone, embedding_dim=8, loss=base)
        else:
            model = HDMLModel(
                backbone, 8, base, num_classes=10, generator_units=16, block_size=1, convention=convention
            )
    model.compile(learning_rates={"metric": 1e-3})
    logs = [
        model.train_on_batch(x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch], return_dict=True)
        for i in range(steps)
    ]
    return model, [{k: float(v) for k, v in step.items()} for step in logs]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("kind, loss, convention", CASES)
def test_models_train_finite_in_mixed_precision_close_to_float32(kind, loss, convention, policy):
    _, reference = _losses(kind, loss, convention, "float32")
    model, logs = _losses(kind, loss, convention, policy)
    assert model.backbone.layers[1].compute_dtype == policy.split("_")[1]
    assert all(np.isfinite(value) for step in logs for value in step.values()), logs
    assert logs[0]["loss"] == pytest.approx(reference[0]["loss"], rel=FIRST_STEP[policy])
    for name in logs[0]:  # every logged term (J_m, J_syn, J_gen...) of the first step
        # A synthetic row passes backbone, projector, generator and projector again in low precision, and a
        # triplet hinge cancels most of its distances: 4x the tolerance there, 2x elsewhere; a hinge's error is
        # absolute (a difference of O(1) distances): a third of the tolerance.
        factor = 4 if name in ("J_syn", "J_recon", "J_soft", "J_gen") else 2
        assert logs[0][name] == pytest.approx(
            reference[0][name], rel=factor * FIRST_STEP[policy], abs=FIRST_STEP[policy] / 3
        ), name
    # Later steps follow other weights (float16's loss scaling skips the steps whose gradients overflow).
    mean, reference_mean = np.mean([s["loss"] for s in logs]), np.mean([s["loss"] for s in reference])
    assert mean == pytest.approx(reference_mean, rel=0.2)
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
