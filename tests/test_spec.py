"""Experiment specs: parsing, defaults, every problem at once, overrides, TOML round trip, the CLI."""

import copy
import doctest
import importlib
import inspect
import math
import pickle
import pkgutil
from pathlib import Path

import pydantic
import pytest
from data_helpers import make_cub

from kerasml import data, losses
from kerasml.cli import main
from kerasml.data.sources import DigitsSource, ProceduralSource, SplitCounts
from kerasml.hdml import HDML_ARGUMENTS, HDMLModel
from kerasml.models import MetricModel
from kerasml.spec import (
    MISSING,
    SECTIONS,
    STUDY_FLAGS,
    Problem,
    Spec,
    SpecError,
    dump_spec,
    evaluation_steps,
    format_value,
    load_spec,
    parse_spec,
    resolve_spec,
)
from kerasml.spec.schema import EvalSection, HDMLSection

SPECS = Path(__file__).resolve().parent.parent / "specs"

# A valid spec on the builtin digits; the bad specs below are small edits of it.
BASE = {
    "experiment": {"name": "t"},
    "data": {"builtin": "digits"},
    "model": {"backbone": "small_cnn", "backbone_options": {"feature_dim": 16}},
    "loss": {"type": "npair"},
    "train": {"batch_size": 10, "max_steps": 300},
    "eval": {"ks": [1, 2, 4, 8]},
}


def edit(*changes, base=BASE):
    """A copy of ``base`` with ``("section.key", value)`` set, or ``("section.key", None)`` removed."""
    spec = copy.deepcopy(base)
    for path, value in changes:
        *parents, last = path.split(".")
        table = spec
        for part in parents:
            table = table.setdefault(part, {})
        if value is None:
            table.pop(last, None)
        else:
            table[last] = value
    return spec


def text_of(spec):
    return spec if isinstance(spec, str) else dump_spec(spec)


def flat(text):
    """Rich wraps long lines: compare with whitespace runs collapsed."""
    return " ".join(text.split())


def printed(capsys):
    """What the CLI printed (errors go to stderr), flattened."""
    captured = capsys.readouterr()
    return flat(captured.out + captured.err)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """A real store: 3 train classes x 3 images, 3 test classes x 3 images."""
    root = tmp_path_factory.mktemp("tiny")
    archive, _ = make_cub(root / "raw", classes=6, per_class=3)
    out = root / "cub6.h5"
    data.ingest("cub", out, source_path=archive, image_size=8, quiet=True)
    return out


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "digits.h5"
    data.ingest("digits", out, image_size=8, quiet=True)
    return out


# ----------------------------------------------------------------------------------------------
# The corpus of bad specs: (id, spec (dict or TOML text), --set overrides, strings the output names)

SYNTAX = [
    ("unquoted-string", "[experiment]\nname = cub\n", [], ["line 2, column", "valid TOML", 'key = "value"']),
    ("unclosed-list", '[experiment]\nname = "t"\n[eval]\nks = [1, 2\n', [], ["line 4", "valid TOML"]),
    ("duplicate-key", '[experiment]\nname = "a"\nname = "b"\n', [], ["line 3", "valid TOML"]),
]

BAD = [
    # unknown keys, with the closest known one
    ("unknown-section", edit(("trian", {"x": 1})), [], ["trian", "'train'"]),
    ("unknown-key", edit(("model.embeding_dim", 64)), [], ["model.embeding_dim", "'embedding_dim'"]),
    ("unknown-key-close", edit(("train.batch", 4)), [], ["train.batch", "'batch_size'"]),
    ("key-in-wrong-section", edit(("model.max_steps", 4)), [], ["model.max_steps", "train.max_steps"]),
    ("top-level-key", edit(("batch_size", 4)), [], ["batch_size", "train.batch_size"]),
    ("hdml-not-a-table", edit(("hdml", True)), [], ["hdml", "a table [hdml]", "model.hdml"]),
    # keys of older specs say where they are now
    ("moved-model-key", edit(("model.alpha", 90.0)), [], ["model.alpha", "model.alpha has moved: use hdml.alpha."]),
    (
        "moved-train-key",
        edit(("train.generator_learning_rate", 0.01)),
        [],
        ["train.generator_learning_rate", "has moved: use hdml.generator_learning_rate"],
    ),
    ("override-moved-key", BASE, ["model.block_size=4"], ["model.block_size", "has moved: use hdml.block_size"]),
    ("unknown-loss-argument", edit(("loss.type", "triplet"), ("loss.marign", 0.2)), [], ["loss.marign", "'margin'"]),
    ("loss-argument-of-another-loss", edit(("loss.margin", 0.2)), [], ["loss.margin", "NPairLoss"]),
    (
        "unknown-backbone-option",
        edit(("model.backbone_options", {"feature_dims": 8})),
        [],
        ["model.backbone_options.feature_dims", "'feature_dim'"],
    ),
    ("reserved-backbone-option", edit(("model.backbone_options", {"input_shape": [8, 8, 3]})), [], ["data.image_size"]),
    # wrong types
    ("quoted-int", edit(("train.batch_size", "10")), [], ["train.batch_size", "Remove the quotes"]),
    ("float-for-int", edit(("train.max_steps", 3e2)), [], ["train.max_steps", "300.0", "300"]),
    ("string-for-bool", edit(("model.hdml", "yes")), [], ["model.hdml", "true or false"]),
    ("int-for-bool", edit(("data.augment", 1)), [], ["data.augment", "Write true"]),
    ("int-for-list", edit(("eval.ks", 5)), [], ["eval.ks", "[5]"]),
    ("string-for-float", edit(("hdml.alpha", "90")), [], ["hdml.alpha", "a number > 0", "Remove the quotes: 90."]),
    ("table-for-string", edit(("model.backbone", {"name": "x"})), [], ["model.backbone"]),
    ("loss-argument-type", edit(("loss.l2_reg", "a lot")), [], ["loss.l2_reg", "a finite number"]),
    # out of range
    ("negative-seed", edit(("experiment.seed", -1)), [], ["experiment.seed", "an int >= 0"]),
    ("soft-weight", edit(("hdml.soft_weight", 1.5)), [], ["hdml.soft_weight", "[0, 1]"]),
    ("zero-decay-factor", edit(("train.lr_decay_factor", 0.0)), [], ["train.lr_decay_factor", "(0, 1]"]),
    ("tiny-image", edit(("data.image_size", 4)), [], ["data.image_size", "[8, 4096]"]),
    ("zero-learning-rate", edit(("train.learning_rate", 0)), [], ["train.learning_rate", "> 0"]),
    ("infinite-beta", edit(("hdml.beta", math.inf)), [], ["hdml.beta", "inf"]),
    ("batch-of-one", edit(("train.batch_size", 1)), [], ["train.batch_size", ">= 2"]),
    ("bad-name", edit(("experiment.name", "my run")), [], ["experiment.name", "my run"]),
    ("repeated-ks", edit(("eval.ks", [1, 1])), [], ["eval.ks", "repeated"]),
    ("unknown-metric", edit(("eval.metrics", ["recall", "nmii"])), [], ["eval.metrics", "'nmi'"]),
    ("bad-choice", edit(("data.crop", "center")), [], ["data.crop", '"random", "resized"']),
    ("bad-case-choice", edit(("eval.split", "Test")), [], ["eval.split", "Write 'test'"]),
    ("bad-statistics", edit(("hdml.synthetic_statistics", "updates")), [], ["hdml.synthetic_statistics", "'update'"]),
    ("zero-initial-mean", edit(("hdml.initial_mean", 0.0)), [], ["hdml.initial_mean", "a number > 0"]),
    ("bad-convention", edit(("hdml.convention", "paper")), [], ["hdml.convention", '"kerasml", "authors"']),
    ("unknown-builtin", edit(("data.builtin", "mnist")), [], ["data.builtin", '"digits", "procedural"']),
    ("unknown-backbone", edit(("model.backbone", "googlenett")), [], ["model.backbone", "'googlenet'"]),
    ("unknown-loss", edit(("loss.type", "tripplet")), [], ["loss.type", "'triplet'"]),
    ("unknown-normalization", edit(("data.normalization", "imagenett")), [], ["data.normalization", "'imagenet'"]),
    ("imagenet-for-small-cnn", edit(("model.weights", "imagenet")), [], ["model.weights", "small_cnn"]),
    ("weights-suffix", edit(("model.weights", "w.txt")), [], ["model.weights", ".weights.h5"]),
    (
        "googlenet-too-small",
        edit(("model.backbone", "googlenet"), ("model.backbone_options", None), ("data.image_size", 16)),
        [],
        ["data.image_size", ">= 32"],
    ),
    ("divergence", edit(("loss.type", "divergence"), ("model.hdml", False)), [], ["loss.type", "[B, M, D]"]),
    # schedules
    ("pair-not-list-of-pairs", edit(("train.eval_every", [100, 10])), [], ["train.eval_every", "[[100, 10]]"]),
    ("decreasing-schedule", edit(("train.eval_every", [[200, 10], [100, 5]])), [], ["train.eval_every", "increase"]),
    ("zero-every", edit(("train.eval_every", 0)), [], ["train.eval_every"]),
    ("unsorted-decay", edit(("train.lr_decay_steps", [200, 100])), [], ["train.lr_decay_steps", "[100, 200]"]),
    ("decay-after-end", edit(("train.lr_decay_steps", [100, 300])), [], ["train.lr_decay_steps", "max_steps = 300"]),
    (
        "checkpoint-k",
        edit(("train.checkpoint_metric", "recall@3")),
        [],
        ["train.checkpoint_metric", "Add 3 to eval.ks"],
    ),
    (
        "checkpoint-metric-off",
        edit(("train.checkpoint_metric", "map@r")),
        [],
        ["train.checkpoint_metric", "eval.metrics"],
    ),
    # missing keys and sections
    ("missing-name", edit(("experiment.name", None)), [], ["experiment.name", "missing"]),
    ("missing-steps", edit(("train.max_steps", None)), [], ["train.max_steps", "missing"]),
    ("missing-model", edit(("model", None)), [], ["model.backbone", "missing"]),
    ("missing-data", edit(("data", None)), [], ["data.path", "data.builtin"]),
    (
        "section-not-table",
        'train = 5\n[experiment]\nname = "t"\n[data]\nbuiltin = "digits"\n[model]\nbackbone = "small_cnn"\n',
        [],
        ["train", "a table [train]", "train.batch_size"],
    ),
    ("both-sources", edit(("data.path", "data/x.h5")), [], ["data.path", "data.builtin", "Remove one"]),
    ("classes-for-digits", edit(("data.classes", 10)), [], ["data.classes", "procedural"]),
    (
        "procedural-classes",
        edit(("data.builtin", "procedural"), ("data.classes", 1)),
        [],
        ["data.classes", "[2, 44352]"],
    ),
    # cross-field rules
    ("odd-npair-batch", edit(("train.batch_size", 9)), [], ["train.batch_size", "even", "Use 8 or 10"]),
    ("odd-angular-batch", edit(("loss.type", "angular"), ("train.batch_size", 7)), [], ["train.batch_size", "even"]),
    (
        "structured-triplet-batch",
        edit(("loss.type", "triplet"), ("loss.mining", "structured"), ("train.batch_size", 4)),
        [],
        ["train.batch_size", "multiple of 3", "Use 3 or 6"],
    ),
    ("hdml-supcon", edit(("loss.type", "supcon")), [], ["loss.type", "HDML"]),
    ("hdml-triplet-all", edit(("loss.type", "triplet")), [], ["loss.mining", "structured"]),
    ("digits-npair-too-many-classes", edit(("train.batch_size", 12)), [], ["train.batch_size", "<= 10", "5 classes"]),
    (
        "digits-triplet-too-many-classes",
        edit(("loss.type", "triplet"), ("loss.mining", "structured"), ("train.batch_size", 9)),
        [],
        ["train.batch_size", "<= 6"],
    ),
    (
        "procedural-npair-too-many-classes",
        edit(("data.builtin", "procedural"), ("data.classes", 10), ("train.batch_size", 12)),
        [],
        ["train.batch_size", "<= 10"],
    ),
    (
        "procedural-ks-too-large",
        edit(("data.builtin", "procedural"), ("data.classes", 10), ("eval.ks", [1, 100])),
        [],
        ["eval.ks", "K < 100", "[100]"],
    ),
    ("digits-ks-too-large", edit(("eval.ks", [1, 2000])), [], ["eval.ks", "K < 896"]),
    # files
    (
        "missing-store",
        edit(("data.builtin", None), ("data.path", "no/such/store.h5")),
        [],
        ["data.path", "does not exist"],
    ),
    ("missing-weights", edit(("model.weights", "no/such.weights.h5")), [], ["model.weights", "does not exist"]),
    # overrides
    ("override-unknown-key", BASE, ["train.batch_sise=10"], ["train.batch_sise", "'train.batch_size'"]),
    ("override-without-equals", BASE, ["train.batch_size"], ["train.batch_size", "KEY=VALUE"]),
    ("override-bad-value", BASE, ["train.max_steps=abc"], ["train.max_steps", "--set train.max_steps=abc"]),
    ("override-section", BASE, ["train=5"], ["train", "a key inside [train]"]),
    ("override-malformed-list", BASE, ["eval.ks=[1,2"], ["eval.ks", "[1,2"]),
    ("override-impossible-batch", BASE, ["train.batch_size=16"], ["train.batch_size", "--set train.batch_size=16"]),
    ("override-unknown-section", BASE, ["trainer.batch_size=16"], ["trainer.batch_size"]),
]


@pytest.mark.parametrize(
    ("spec", "overrides", "needles"), [c[1:] for c in SYNTAX + BAD], ids=[c[0] for c in SYNTAX + BAD]
)
def test_bad_spec_through_cli(tmp_path, capsys, spec, overrides, needles):
    path = tmp_path / "bad.toml"
    path.write_text(text_of(spec), encoding="utf-8")
    argv = ["validate", str(path)]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 2
    out = printed(capsys)
    assert "Traceback" not in out
    assert "error:" in out and str(path) in out
    for needle in needles:
        assert flat(needle) in out, f"{needle!r} not in {out!r}"


def test_corpus_is_large():
    assert len(SYNTAX) + len(BAD) >= 30


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ([("train.batch_size", 8)], ["train.batch_size", "<= 6", "3 classes"]),  # npair: N = 4 > 3 classes
        ([("eval.ks", [1, 2, 4, 16])], ["eval.ks", "K < 9", "[16]"]),
        (
            [("loss.type", "triplet"), ("loss.mining", "structured"), ("train.batch_size", 6)],
            ["train.batch_size", "<= 3"],  # 2 * 6 / 3 = 4 classes > 3
        ),
        ([("eval.split", "train"), ("eval.ks", [1, 9])], ["eval.ks", "train split"]),
    ],
)
def test_impossible_batches_on_a_real_store(tiny_store, tmp_path, capsys, changes, needles):
    spec = edit(("data.builtin", None), ("data.path", str(tiny_store)), ("train.batch_size", 6), *changes)
    path = tmp_path / "store.toml"
    path.write_text(dump_spec(spec), encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    out = printed(capsys)
    assert "Traceback" not in out
    for needle in needles:
        assert needle in out, f"{needle!r} not in {out!r}"


def test_possible_batches_on_a_real_store(tiny_store, capsys):
    spec = edit(("data.builtin", None), ("data.path", str(tiny_store)), ("train.batch_size", 6))
    resolved = parse_spec(spec)  # npair N = 3 of 3 classes; K = 8 < 9 test images
    assert resolved.data.image_size == 227 and resolved.data.classes == 0
    triplet = edit(("loss.type", "triplet"), ("loss.mining", "structured"), ("train.batch_size", 3), base=spec)
    assert parse_spec(triplet).loss.params["mining"] == "structured"
    # without check_files the store is not opened: an impossible batch goes unnoticed
    parse_spec(edit(("train.batch_size", 40), base=spec), check_files=False)


def test_not_a_store(tmp_path, capsys):
    fake = tmp_path / "fake.h5"
    fake.write_text("hello")
    path = tmp_path / "s.toml"
    path.write_text(dump_spec(edit(("data.builtin", None), ("data.path", str(fake)))))
    assert main(["validate", str(path)]) == 2
    out = printed(capsys)
    assert "data.path" in out and "not a valid kerasml store" in out and "Traceback" not in out


def test_missing_spec_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.toml")]) == 2
    out = printed(capsys)
    assert "nope.toml" in out and "existing TOML spec file" in out and "Traceback" not in out
    assert f"{flat(str(tmp_path / 'nope.toml'))} does not exist" in out
    with pytest.raises(SpecError):
        load_spec(tmp_path)


def test_builtin_sizes_match_the_data(digits_store, tmp_path):
    """The sources' split counts (what the spec checks builtin data with) are those of their stores."""
    with data.open_store(digits_store) as store:
        for split, expected in DigitsSource.split_counts().items():
            assert SplitCounts.from_labels(store.split_labels(split)) == expected, split
    for classes in (5, 6):  # an odd number: the larger half trains, as `kerasml.data.ingest` splits it
        out = tmp_path / f"procedural{classes}.h5"
        data.ingest("procedural", out, classes=classes, image_size=8, quiet=True)
        with data.open_store(out) as store:
            for split, expected in ProceduralSource.split_counts(classes).items():
                assert SplitCounts.from_labels(store.split_labels(split)) == expected, (classes, split)
    # the store path gives the same verdicts as builtin = "digits"
    spec = edit(("data.builtin", None), ("data.path", str(digits_store)))
    parse_spec(spec)
    with pytest.raises(SpecError, match="<= 10"):
        parse_spec(edit(("train.batch_size", 12), base=spec))


# ----------------------------------------------------------------------------------------------
# Every problem at once


def test_all_problems_reported_at_once(tmp_path, capsys):
    spec = edit(
        ("experiment.seed", -3),
        ("data.crop", "centre"),
        ("model.embeding_dim", 64),
        ("train.batch_size", 9),
        ("eval.ks", [0]),
    )
    with pytest.raises(SpecError) as info:
        parse_spec(spec, overrides=["train.max_steps=0"], source="many.toml")
    error = info.value
    keys = [p.key for p in error.problems]
    assert keys == [
        "experiment.seed",
        "data.crop",
        "model.embeding_dim",
        "train.batch_size",
        "train.max_steps",
        "eval.ks",
    ]  # section by section, keys in schema order
    assert all(isinstance(p, Problem) for p in error.problems)
    lines = str(error).splitlines()
    assert lines[0] == "many.toml: 6 problems in the spec:"
    assert len(lines) == 7 and all(line.strip().startswith("many.toml: ") for line in lines)
    batch = error.problems[3]
    assert (batch.value, batch.hint) == (9, "Use 8 or 10.")
    assert "even int >= 2 for npair" in batch.expected
    assert isinstance(error, ValueError)
    path = tmp_path / "many.toml"
    path.write_text(dump_spec(spec))
    assert main(["validate", str(path), "--set", "train.max_steps=0"]) == 2
    out = printed(capsys)
    assert all(key in out for key in keys) and "6 problems" in out


def test_python_values_and_pickling(tmp_path):
    spec = parse_spec(
        edit(("eval.ks", (1, 2)), ("data.builtin", None), ("data.path", tmp_path / "s.h5")), check_files=False
    )
    assert spec.eval.ks == [1, 2] and spec.data.path == str(tmp_path / "s.h5")
    with pytest.raises(SpecError) as info:
        parse_spec(edit(("experiment.name", None), ("train.batch_size", 3)))
    copy_ = pickle.loads(pickle.dumps(info.value))
    assert copy_.problems == info.value.problems and str(copy_) == str(info.value)
    assert copy_.problems[0].value is MISSING


def test_problem_text():
    problem = Problem("train.batch_size", 15, "an even int >= 2 for npair", "Use 14 or 16.")
    assert str(problem) == "train.batch_size: expected an even int >= 2 for npair; received 15. Use 14 or 16."
    missing = parse_spec_problems(edit(("experiment.name", None)))[0]
    assert "received nothing (the key is missing)" in str(missing)


def parse_spec_problems(spec, **kwargs):
    with pytest.raises(SpecError) as info:
        parse_spec(spec, **kwargs)
    return info.value.problems


def test_syntax_error_names_line_and_column():
    (problem,) = parse_spec_problems("[train]\nbatch_size = 16\nmax_steps = 8_000_\n", source="s.toml")
    assert problem.key.startswith("line 3, column")
    assert problem.value == "max_steps = 8_000_"


# ----------------------------------------------------------------------------------------------
# Overrides


def test_overrides_are_toml_values():
    spec = parse_spec(
        edit(("data.builtin", "procedural")),
        overrides=[
            "train.max_steps=100",
            "model.hdml=false",
            "eval.ks=[1,2,4]",
            "data.builtin=digits",
            "experiment.name=2024",
            "train.learning_rate=1e-3",
            "model.backbone_options.feature_dim=8",
            "loss.l2_reg=0.01",
            "train.eval_every=[[50, 10], [100, 25]]",
            "data.normalization = unit",
        ],
    )
    assert spec.train.max_steps == 100
    assert spec.model.hdml is False
    assert spec.eval.ks == [1, 2, 4]
    assert spec.data.builtin == "digits" and spec.data.classes == 0
    assert spec.experiment.name == "2024"
    assert spec.train.learning_rate == 1e-3
    assert spec.model.backbone_options == {"feature_dim": 8}
    assert spec.loss.params["l2_reg"] == 0.01
    assert spec.train.eval_every == [[50, 10], [100, 25]]
    assert spec.data.normalization == "unit"


def test_override_switches_the_data_source(tmp_path):
    spec = parse_spec(BASE, overrides=["data.path=data/cub-20.h5"], check_files=False)
    assert (spec.data.path, spec.data.builtin) == ("data/cub-20.h5", "")
    assert spec.data.image_size == 227  # the default follows the source
    back = parse_spec(edit(("data.builtin", None), ("data.path", "x.h5")), overrides=["data.builtin=digits"])
    assert (back.data.path, back.data.builtin, back.data.image_size) == ("", "digits", 32)
    # both given by --set: a conflict, not a silent choice
    problems = parse_spec_problems(BASE, overrides=["data.builtin=digits", "data.path=x.h5"], check_files=False)
    assert [p.key for p in problems] == ["data"]


def test_overrides_are_validated():
    problems = parse_spec_problems(BASE, overrides=["train.batch_size=7", "hdml.alpha=-1", "eval.kss=[1]"])
    assert [p.key for p in problems] == ["hdml.alpha", "train.batch_size", "eval.kss"]
    assert problems[1].hint.endswith("(from --set train.batch_size=7)")
    assert "'eval.ks'" in problems[2].hint
    assert parse_spec(BASE, overrides="train.batch_size=4").train.batch_size == 4  # one string is one override


def test_cli_overrides(tmp_path, capsys):
    path = tmp_path / "ok.toml"
    path.write_text(dump_spec(BASE))
    assert main(["validate", str(path), "--set", "train.max_steps=120", "--set", "model.hdml=false"]) == 0
    out = flat(capsys.readouterr().out)
    assert "valid:" in out and "120 │ --set" in out and "Traceback" not in out
    assert main(["validate", str(path), "--set", "train.max_steps=120", "--toml"]) == 0
    printed = capsys.readouterr().out
    assert parse_spec(printed).train.max_steps == 120


# ----------------------------------------------------------------------------------------------
# Defaults


def test_defaults_filled():
    spec = parse_spec(BASE)
    assert isinstance(spec, Spec) and tuple(spec.model_dump()) == SECTIONS
    assert spec.experiment.model_dump() == {"name": "t", "seed": 0, "output_dir": "runs"}
    assert spec.data.model_dump() == {
        "path": "",
        "builtin": "digits",
        "classes": 0,
        "image_size": 32,
        "augment": True,
        "crop": "random",
        "normalization": "auto",
        "workers": 0,
        "use_multiprocessing": False,
    }
    model = spec.model
    assert (model.embedding_dim, model.hdml, model.weights) == (128, True, "")
    hdml = spec.hdml
    assert (hdml.alpha, hdml.beta, hdml.soft_weight, hdml.softmax_factor) == (90.0, 5000.0, 0.5, 1e4)
    assert (hdml.block_size, hdml.initial_mean, hdml.generator_units, hdml.synthetic_statistics) == (
        64,
        1e6,
        512,
        "batch",
    )
    assert spec.hdml == HDMLSection()
    assert spec.loss.model_dump() == {"type": "npair", "l2_reg": losses.NPairLoss().l2_reg}
    train = spec.train
    assert (train.learning_rate, hdml.generator_learning_rate, hdml.classifier_learning_rate) == (7e-5, 1e-2, 1e-3)
    assert (train.weight_decay, train.lr_decay_steps, train.lr_decay_factor) == (0.0, [], 0.5)
    assert (train.eval_every, train.log_every, train.checkpoint_metric) == ([[300, 30]], 50, "recall@1")
    assert spec.eval.model_dump() == {
        "ks": [1, 2, 4, 8],
        "metrics": ["recall", "nmi", "f1"],
        "split": "test",
        "batch_size": 64,
    }
    assert EvalSection().ks == [1, 2, 4, 8, 16, 32]


def test_hdml_keys_are_the_model_arguments():
    """[hdml] maps 1:1 onto HDMLModel's own arguments, with its defaults."""
    assert tuple(HDMLSection.model_fields) == HDML_ARGUMENTS
    own = inspect.signature(HDMLModel).parameters
    base = inspect.signature(MetricModel).parameters
    assert set(HDML_ARGUMENTS) == set(own) - set(base) - {"num_classes"}
    assert HDMLSection().model_dump() == {name: own[name].default for name in HDML_ARGUMENTS}
    # the table is read whether HDML is on or off
    plain = parse_spec(edit(("model.hdml", False), ("hdml.alpha", 45.0)))
    assert plain.hdml.alpha == 45.0 and not plain.model.hdml


def test_loss_arguments_follow_the_constructor():
    for entry in losses.catalog():
        if losses.get(entry.name).layout is losses.layouts.HEADS:
            continue  # experiments build [B, D] embeddings
        spec = parse_spec(edit(("loss.type", entry.name), ("model.hdml", False), ("train.batch_size", 6)))
        parameters = inspect.signature(entry.cls).parameters
        expected = {
            name: p.default
            for name, p in parameters.items()
            if name not in ("name", "reduction", "dtype") and p.default is not None
        }
        assert spec.loss.type == entry.name and spec.loss.params == expected, entry.name


def test_spec_is_typed_and_frozen():
    spec = parse_spec(BASE)
    assert isinstance(spec.train.batch_size, int) and isinstance(spec.hdml.alpha, float)
    with pytest.raises(pydantic.ValidationError):
        spec.train.batch_size = 4
    with pytest.raises(pydantic.ValidationError):
        spec.train = None


def test_defaults_that_depend_on_other_keys():
    procedural = parse_spec(edit(("data.builtin", "procedural")))
    assert (procedural.data.classes, procedural.data.image_size) == (100, 64)
    assert (ProceduralSource.default_classes, ProceduralSource.default_image_size) == (100, 64)
    store = parse_spec(edit(("data.builtin", None), ("data.path", "s.h5")), check_files=False)
    assert store.data.image_size == 227
    assert parse_spec(edit(("train.max_steps", 5))).train.eval_every == [[5, 1]]
    assert parse_spec(edit(("train.eval_every", 7))).train.eval_every == [[300, 7]]
    triplet = parse_spec(edit(("loss.type", "Triplet"), ("model.hdml", False))).loss
    assert triplet.model_dump() == {"type": "triplet", "margin": 1.0, "mining": "all", "distance": "squared"}
    assert parse_spec(edit(("eval.metrics", ["nmi", "f1"]))).train.checkpoint_metric == "nmi"
    assert parse_spec(edit(("eval.ks", [2, 4]))).train.checkpoint_metric == "recall@2"
    angular = parse_spec(edit(("loss.type", "AngularLoss"))).loss
    assert angular.type == "angular" and set(angular.params) > {"alpha_degrees", "npair_weight", "normalize"}


def test_normalised_types():
    spec = parse_spec(
        edit(
            ("model.backbone", "Small-CNN"),
            ("hdml.alpha", 90),
            ("loss.type", "NpairLoss"),
            ("loss.l2_reg", 0),
            ("train.checkpoint_metric", "Recall@2"),
            ("data.normalization", "ImageNet"),
        )
    )
    assert spec.model.backbone == "small_cnn"
    assert spec.hdml.alpha == 90.0 and isinstance(spec.hdml.alpha, float)
    assert spec.loss.model_dump() == {"type": "npair", "l2_reg": 0.0} and isinstance(spec.loss.params["l2_reg"], float)
    assert spec.train.checkpoint_metric == "recall@2"
    assert spec.data.normalization == "imagenet"


def test_input_is_not_modified():
    spec = edit(("model.backbone", "Small-CNN"))
    before = copy.deepcopy(spec)
    parse_spec(spec, overrides=["train.max_steps=10"])
    assert spec == before


def test_provenance():
    overrides = ["train.max_steps=100", "model.backbone_options.feature_dim=8", "loss.l2_reg=0.01"]
    spec, provenance = resolve_spec(dump_spec(BASE), overrides)
    assert set(provenance) == {f"{s}.{k}" for s, table in spec.model_dump().items() for k in table}
    assert provenance["train.max_steps"] == "--set train.max_steps=100"
    assert provenance["model.backbone_options"] == "--set model.backbone_options.feature_dim=8"
    assert provenance["loss.l2_reg"] == "--set loss.l2_reg=0.01"
    assert provenance["train.batch_size"] == provenance["loss.type"] == "spec"
    assert provenance["hdml.alpha"] == provenance["data.image_size"] == provenance["train.eval_every"] == "default"


def test_format_value():
    assert format_value([1, 2]) == "[1, 2]" and format_value([]) == "[]" and format_value({}) == "{}"
    assert format_value(300.0) == "300.0" and format_value(math.inf) == "inf" and format_value(True) == "true"
    assert format_value('a "b"') == '"a \\"b\\""'
    assert format_value({"variant": "caffe", "a b": [1]}) == '{ variant = "caffe", "a b" = [1] }'
    assert format_value(object).startswith("<class")  # not TOML: shown with repr


# ----------------------------------------------------------------------------------------------
# TOML round trip


def test_dump_parse_round_trip():
    tricky = edit(
        ("experiment.output_dir", 'runs/"quoted" \\ back\tslash é ✓ \x7f'),
        ("model.backbone_options", {"feature_dim": 8, "filters": [4, 8], "name": "a b"}),
        ("train.learning_rate", 1.2345678e-7),
        ("train.lr_decay_steps", [10, 200]),
        ("hdml.softmax_factor", 1e16),
        ("eval.metrics", ["recall", "map@r", "r_precision"]),
        ("train.checkpoint_metric", "r_precision"),
    )
    for source in (BASE, tricky, edit(("data.builtin", "procedural"), ("data.classes", 40))):
        spec = parse_spec(source)
        text = dump_spec(spec)
        assert parse_spec(text) == spec
        assert dump_spec(parse_spec(text)) == text
    for path in sorted(SPECS.glob("*.toml")):
        spec = load_spec(path, check_files=False)
        assert parse_spec(dump_spec(spec), check_files=False) == spec, path.name


def test_dump_refuses_other_types():
    with pytest.raises(TypeError, match="cannot write"):
        dump_spec({"experiment": {"name": object()}})


# ----------------------------------------------------------------------------------------------
# The study's flags and specs


def test_study_flags_table():
    assert STUDY_FLAGS == {
        "-LossType": "loss.type",
        "-dataSet": "data.path",
        "-batch_size": "train.batch_size",
        "-batch_per_epoch": "train.eval_every",
        "-max_steps": "train.max_steps",
        "-init_learning_rate": "train.learning_rate",
        "-regular_factor": "train.weight_decay",
        "-Apply_HDML": "model.hdml",
    }
    spec = parse_spec(BASE)
    for key in STUDY_FLAGS.values():
        section, name = key.split(".")
        assert name in type(getattr(spec, section)).model_fields, key
    import kerasml.spec

    doc = kerasml.spec.__doc__
    table = doc[doc.index("study flag") :]
    for flag, key in STUDY_FLAGS.items():
        assert f"``{flag}``" in table and f"``{key}``" in table
    # the study's own spellings of the losses are accepted
    assert parse_spec(edit(("loss.type", "NpairLoss"))).loss.type == "npair"


def _spec_files():
    files = sorted(SPECS.glob("*.toml"))
    assert files, f"{SPECS} has no .toml specs: every experiment of the study (and the quickstart) belongs there"
    return files


def test_every_spec_in_specs_validates(capsys):
    for path in _spec_files():
        status = main(["validate", str(path), "--no-check-files"])
        out = capsys.readouterr().out
        assert status == 0, out
        assert "valid:" in out


STUDY = {
    # dataset: (store, batch {triplet, npair}, eval_every, ks)
    "cub": ("data/cub-20.h5", {"triplet": 15, "npair": 16}, [[5000, 500], [8000, 100]], [1, 2, 4, 8, 16, 32]),
    "cars196": ("data/cars196-20.h5", {"triplet": 15, "npair": 16}, [[5000, 500], [8000, 100]], [1, 2, 4, 8, 16, 32]),
    "sop": ("data/sop-2300.h5", {"triplet": 18, "npair": 18}, [[5000, 1000], [8000, 250]], [1, 10, 100, 1000]),
}


@pytest.mark.parametrize("dataset", sorted(STUDY))
def test_study_specs(dataset):
    store, batches, schedule, ks = STUDY[dataset]
    # the store `kerasml ingest DATASET --classes N` writes by default
    assert data.default_out(dataset, {"cub": 20, "cars196": 20, "sop": 2300}[dataset]).as_posix() == store
    for loss in ("triplet", "npair"):
        for hdml in (False, True):
            stem = f"{dataset}_{loss}_{'hdml' if hdml else 'plain'}"
            path = SPECS / f"{stem}.toml"
            assert path.read_text().startswith(f"# {stem}: the study's"), "a header saying what it reproduces"
            spec = load_spec(path, check_files=False)
            assert spec.experiment.name == stem
            assert spec.data.path == store
            assert spec.model.backbone == "googlenet" and spec.model.hdml is hdml
            assert spec.loss.type == loss
            if loss == "triplet":
                assert spec.loss.params["mining"] == "structured"
            train = spec.train
            assert train.batch_size == batches[loss]
            assert (train.learning_rate, train.weight_decay, train.max_steps) == (7e-5, 5e-3, 8000)
            assert train.eval_every == schedule
            assert spec.eval.ks == ks
            if hdml:  # the HDML authors' FLAGS.py values
                assert (spec.hdml.alpha, spec.hdml.soft_weight, spec.hdml.softmax_factor) == (90.0, 0.5, 1e4)
                assert (spec.hdml.generator_learning_rate, spec.hdml.classifier_learning_rate) == (0.01, 0.001)
                assert spec.hdml.synthetic_statistics == "update"


@pytest.mark.parametrize("path", sorted(SPECS.glob("*_*_*.toml")), ids=lambda p: p.stem)
def test_missing_store_names_the_commands_that_write_it(path, tmp_path, monkeypatch, capsys):
    dataset = path.stem.split("_")[0]
    if dataset not in STUDY:
        pytest.skip("a builtin dataset: nothing to download")
    classes = {"cub": 20, "cars196": 20, "sop": 2300}[dataset]
    commands = (f"kerasml download {dataset} --to data/raw", f"kerasml ingest {dataset} --classes {classes}")
    monkeypatch.chdir(tmp_path)  # no data/ here
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert f"{STUDY[dataset][0]} does not exist" in message
    for command in commands:
        assert f"`{command}`" in message
    # `kerasml run` says the same on stderr (the spec's file check runs first)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert all(command in err for command in commands) and "Traceback" not in err


def test_quickstart_and_procedural_specs():
    quick = load_spec(SPECS / "quickstart.toml")
    assert quick.data.builtin == "digits" and quick.model.backbone == "small_cnn"
    assert (quick.loss.type, quick.model.hdml, quick.train.batch_size) == ("npair", True, 10)
    assert quick.train.max_steps == 300 and quick.hdml.block_size == 32
    plain = load_spec(SPECS / "procedural_npair_plain.toml")
    hdml = load_spec(SPECS / "procedural_npair_hdml.toml")
    assert plain.data.builtin == "procedural" and not plain.model.hdml and hdml.model.hdml
    tables = []
    for spec in (plain, hdml):
        table = spec.model_dump()
        table["experiment"]["name"] = ""
        table["model"]["hdml"] = None
        tables.append(table)
    assert tables[0] == tables[1], "the two procedural specs differ only in name and model.hdml"


# ----------------------------------------------------------------------------------------------
# Evaluation schedule


def test_evaluation_steps():
    assert evaluation_steps({"max_steps": 100, "eval_every": [[100, 25]]}) == [25, 50, 75, 100]
    study = evaluation_steps({"max_steps": 8000, "eval_every": [[5000, 500], [8000, 64]]})
    assert study[:10] == list(range(500, 5001, 500)) and study[10] == 5056 and study[-1] == 8000
    # after the last until_step its every continues; until_steps past max_steps are cut
    assert evaluation_steps({"max_steps": 30, "eval_every": [[10, 5]]}) == [5, 10, 15, 20, 25, 30]
    assert evaluation_steps({"max_steps": 12, "eval_every": [[10, 5], [100, 1]]}) == [5, 10, 11, 12]
    assert evaluation_steps(parse_spec(BASE)) == list(range(30, 301, 30))
    assert evaluation_steps(parse_spec(BASE).train) == list(range(30, 301, 30))


def test_docstring_examples():
    import kerasml.spec

    attempted = 0
    for module in [
        kerasml.spec,
        *(importlib.import_module(m.name) for m in pkgutil.iter_modules(kerasml.spec.__path__, "kerasml.spec.")),
    ]:
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted >= 3


def test_spec_modules_are_small():
    import kerasml.spec

    for path in Path(kerasml.spec.__file__).parent.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, path.name
