"""The examples run as written, the docstring examples hold, the CLI answers."""

import doctest
import importlib
import os
import re
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
    "kerasml.hdml.optimizers",
    "kerasml.models.metric_model",
    "kerasml.models.backbones",
    "kerasml.preprocessing",
    "kerasml._validation",
    "kerasml.spec",
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
