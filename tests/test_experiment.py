"""`kerasml run` end to end on tiny offline data, and an exact resume after a real kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kerasml.cli import main
from kerasml.experiment import read_state
from kerasml.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    "model.backbone=small_cnn",
    "model.backbone_options={feature_dim=32, filters=[8, 16]}",
    "model.embedding_dim=16",
    "hdml.generator_units=32",
    "hdml.block_size=4",
    "data.image_size=16",
    "train.batch_size=10",
    "train.log_every=5",
    "train.learning_rate=0.001",
    "eval.ks=[1, 2]",
    "eval.metrics=['recall', 'nmi', 'f1']",
    "eval.batch_size=256",
]


def _spec_file(tmp_path, name="tiny", extra=()):
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[experiment]\nname = "{name}"\nseed = 3\noutput_dir = "{(tmp_path / "runs").as_posix()}"\n'
        '[data]\nbuiltin = "digits"\n[model]\nbackbone = "small_cnn"\n[loss]\ntype = "npair"\n'
        "[train]\nbatch_size = 10\nmax_steps = 12\n",
        encoding="utf-8",
    )
    return path, [*QUICK, *extra]


def _args(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def _only_run(tmp_path):
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_run_writes_every_file_of_the_run_folder(tmp_path):
    spec, overrides = _spec_file(tmp_path, extra=["train.eval_every=[[12, 6]]", "train.checkpoint_every=6"])
    assert main(["run", str(spec), *_args(overrides)]) == 0
    run = _only_run(tmp_path)
    for name in (
        "spec.toml",
        "metrics.jsonl",
        "state.json",
        "report.md",
        "checkpoints/last.keras",
        "checkpoints/best.keras",
        "plots/loss_terms.png",
        "plots/evaluation.png",
        "plots/retrieval.png",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [6, 12]
    assert {"recall@1", "recall@2", "nmi", "f1"} <= set(evals[-1])
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == [5, 10, 12]
    assert {"J_m", "J_syn", "J_gen", "w"} <= set(train[-1])
    assert read_state(run)["step"] == 12
    resolved = load_spec(run / "spec.toml", check_files=False)
    assert resolved.train.max_steps == 12 and resolved.model.embedding_dim == 16
    assert (resolved.hdml.generator_units, resolved.hdml.block_size) == (32, 4)
    assert "recall@1" in (run / "report.md").read_text()
    # The saved best model evaluates again through the CLI.
    assert main(["evaluate", str(run), "--checkpoint", "best"]) == 0
    out = tmp_path / "emb.npz"
    assert main(["embed", str(run), "--data", str(run / "data" / "digits.h5"), "--out", str(out)]) == 0
    saved = np.load(out)
    assert saved["embeddings"].shape[1] == 16 and len(saved["labels"]) == len(saved["embeddings"])


def _cli(args, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "kerasml", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _final(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return read_state(run)["step"], [r for r in records if r["type"] == "eval"][-1]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    extra = ["train.max_steps=40", "train.eval_every=[[40, 20]]", "train.checkpoint_every=4"]
    (tmp_path / "a").mkdir()
    spec, overrides = _spec_file(tmp_path / "a", name="resume", extra=extra)
    reference = _cli(["run", str(spec), *_args(overrides)])
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-3000:]
    expected = _final(_only_run(tmp_path / "a"))

    (tmp_path / "b").mkdir()
    spec_b, _ = _spec_file(tmp_path / "b", name="resume", extra=extra)
    victim = _cli(["run", str(spec_b), *_args(overrides)])
    deadline = time.time() + 600
    run = None
    while time.time() < deadline:  # wait until a checkpoint past the first epoch exists, then kill
        runs = list((tmp_path / "b" / "runs").glob("resume-*")) if (tmp_path / "b" / "runs").exists() else []
        if runs and read_state(runs[0]).get("step", 0) >= 4:
            run = runs[0]
            break
        if victim.poll() is not None:
            pytest.fail("the run finished before it could be killed:\n" + victim.stdout.read()[-3000:])
        time.sleep(0.05)
    assert run is not None
    victim.send_signal(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)
    victim.communicate(timeout=120)
    assert read_state(run)["step"] < 40

    resumed = _cli(["run", "--resume", str(run)])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert "resuming from step" in out
    step, final = _final(run)
    assert step == expected[0] == 40
    for key, value in expected[1].items():
        if key != "time":
            assert final[key] == pytest.approx(value, abs=1e-6), key


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    import keras

    extra = ["train.learning_rate=1e30", "train.checkpoint_every=1", "train.max_steps=30", "train.eval_every=30"]
    spec, overrides = _spec_file(tmp_path, name="diverge", extra=extra)
    assert main(["run", str(spec), *_args(overrides)]) == 2
    assert "non-finite loss" in capsys.readouterr().out
    run = _only_run(tmp_path)
    state = read_state(run)
    assert 1 <= state["step"] < 30
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any(r["type"] == "eval" for r in records)  # no evaluation after the failure
    model = keras.saving.load_model(run / "checkpoints" / "last.keras")
    for variable in model.weights:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable))), variable.path
    assert "stopped: non-finite loss" in (run / "report.md").read_text()
