"""The examples run as written, the docstring examples hold, the CLI answers."""

import doctest
import importlib
import math
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from kerasml.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "kerasml.losses",
    "kerasml.losses.contrastive",
    "kerasml.losses.triplet",
    "kerasml.losses.lifted",
    "kerasml.losses.npair",
    "kerasml.losses.angular",
    "kerasml.losses.divergence",
    "kerasml.layers.projector",
    "kerasml.layers.input_normalization",
    "kerasml.models.optimizers",
    "kerasml.models.metric_model",
    "kerasml.models.backbones",
    "kerasml.preprocessing",
    "kerasml._validation",
    "kerasml.spec",
    "kerasml.data.sources",
    "kerasml.data.sources.base",
    "kerasml.data.ingestion",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module} has no example"
    assert result.failed == 0


def test_losses_example_runs_and_learns():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "losses_in_keras_model.py")],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    recalls = [float(v) for v in re.findall(r"Recall@1[^:]*: ([0-9.]+)", done.stdout)]
    assert len(recalls) == 3, done.stdout
    assert recalls[2] > recalls[0] + 0.1, done.stdout


def test_cli_version_and_losses(capsys):
    assert main(["--version"]) == 0
    assert re.search(r"kerasml \d+\.\d+\.\d+ \(keras 3", capsys.readouterr().out)
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in ("NPairLoss", "TripletLoss", "DivergenceLoss", "l2_reg=0.002"):
        assert name in out


def test_cli_without_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "usage: kerasml" in capsys.readouterr().err


def test_python_dash_m_kerasml():
    done = subprocess.run(
        [sys.executable, "-m", "kerasml", "--version"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and "kerasml" in done.stdout


# --------------------------------------------------------------------------- examples/ on small data
EXAMPLES = ROOT / "examples"


def _example(name):
    """The example's functions (its ``main``), loaded without running it."""
    return runpy.run_path(str(EXAMPLES / name), run_name="example")


def _tiny_run(tmp_path):
    """A run folder trained for a few steps on the built-in digits (a small CNN, N-pair)."""
    spec = tmp_path / "tiny.toml"
    spec.write_text(
        f'[experiment]\nname = "tiny"\noutput_dir = "{(tmp_path / "runs").as_posix()}"\n'
        '[data]\nbuiltin = "digits"\nimage_size = 16\naugment = false\n'
        '[model]\nbackbone = "small_cnn"\nbackbone_options = { feature_dim = 16 }\nembedding_dim = 8\nhdml = false\n'
        '[loss]\ntype = "npair"\n'
        "[train]\nbatch_size = 10\nmax_steps = 6\neval_every = 6\nlog_every = 3\nlearning_rate = 0.001\n"
        '[eval]\nks = [1, 2]\nmetrics = ["recall"]\nbatch_size = 256\n',
        encoding="utf-8",
    )
    assert main(["run", str(spec)]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    return run


def test_retrieval_with_a_run_example(tmp_path, capsys):
    import cv2

    from kerasml import data

    run = _tiny_run(tmp_path)
    images = tmp_path / "my_images"  # a user's folder: some test digits as PNGs, one subfolder per class
    with data.open_store(run / "data" / "digits.h5") as store:
        rows = store.split_rows("test")
        for row in rows[::20][:30]:
            name = store.class_names[store.labels[row]]
            (images / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(images / name / f"{row}.png"), store.read([row])[0][..., ::-1])
    query = sorted((images / name).iterdir())[0]
    out = tmp_path / "grid.png"
    capsys.readouterr()
    _example("retrieval_with_a_run.py")["main"]([str(run), str(images), "--k", "3", "--out", str(out)])
    _example("retrieval_with_a_run.py")["main"]([str(run), str(images), "--query", str(query), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "30 images embedded" in printed and f"query {query}:" in printed
    assert len(re.findall(r"#3 .*\(distance", printed)) == 5  # 4 random queries + the given one
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hdml_own_backbone_example(tmp_path, capsys):
    args = ["--classes", "12", "--images-per-class", "4", "--image-size", "16", "--steps", "8", "--batch-size", "8"]
    _example("hdml_own_backbone.py")["main"]([*args, "--store", str(tmp_path / "p.h5")])
    printed = capsys.readouterr().out
    assert "6 training classes, 8 steps" in printed
    terms = dict(re.findall(r"(J_m|J_syn|J_gen|w) ([-0-9.e+]+)", printed))
    assert set(terms) == {"J_m", "J_syn", "J_gen", "w"} and all(math.isfinite(float(v)) for v in terms.values())
    for name in ("recall@1", "recall@4", "nmi"):
        assert re.search(rf"{name}: [0-9.]+ before, [0-9.]+ after", printed)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_custom_training_loop_examples_learn(backend, capsys):
    import keras

    if keras.backend.backend() != backend:
        pytest.skip(f"examples/custom_loop_{backend}.py runs in the {backend} pass")
    _example(f"custom_loop_{backend}.py")["main"](80)
    printed = capsys.readouterr().out
    before, after = (float(v) for v in re.findall(r"Recall@1[^:]*: ([0-9.]+)", printed))
    assert after > before + 0.05, printed


def test_docs_cited_by_readme_specs_and_code_exist():
    cited = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "specs").glob("*.toml")), *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert "reference/hdml-study.txt" not in text and "HDML.md" not in text, f"{path.name} cites a file outside"
        cited |= {
            (path.name, c) for c in re.findall(r"(?<![\w/])((?:docs|examples|specs)/[\w./-]+\.(?:md|py|toml))", text)
        }
    missing = sorted(f"{where}: {target}" for where, target in cited if not (ROOT / target).is_file())
    assert not missing, missing
    for name in ("study.md", "datasets.md"):
        assert (ROOT / "docs" / name).is_file()


def test_readme_loss_table_is_the_registry():
    """README's loss table lists every registered loss once, in registry order, with exactly its names."""
    from kerasml.losses import catalog

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    header = text.index("| loss | `kerasml.losses.get` names |")
    rows = []
    for line in text[header:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        assert len(cells) == 4, f"README loss table row with {len(cells)} cells instead of 4: {line}"
        rows.append((re.match(r"`(\w+)", cells[0]).group(1), re.findall(r"`(\w+)`", cells[1])))
    expected = [(entry.cls.__name__, [entry.name, *entry.aliases]) for entry in catalog()]
    assert rows == expected
