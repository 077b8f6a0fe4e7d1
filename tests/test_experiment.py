"""`kerasml run` end to end on tiny offline data, and an exact resume after SIGINT / SIGTERM."""

import io
import json
import os
import subprocess
import sys
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


def test_run_writes_every_file_of_the_run_folder(tmp_path, capsys):
    spec, overrides = _spec_file(tmp_path, extra=["train.eval_every=[[12, 6]]", "train.checkpoint_every=6"])
    assert main(["run", str(spec), *_args(overrides)]) == 0
    run = _only_run(tmp_path)
    out = capsys.readouterr().out
    # The headline loss is HDML's metric objective, J_gen and J_cls beside it; the end names the folder and report.
    header = next(line.split() for line in out.splitlines() if line.split()[:1] == ["step"])
    assert header[1:4] == ["J_metric", "J_gen", "J_cls"] and header[-2] == "loss"
    assert out.strip().splitlines()[-2:] == [f"run folder: {run}", f"report: {run / 'report.md'}"]
    report = (run / "report.md").read_text()
    assert "| checkpoint | recall@1 | recall@2 | nmi | f1 |" in report
    assert "Training wall time:" in report and "steps/s" in report
    state = read_state(run)
    assert state["wall_time_s"] > 0 and state["steps_per_s"] > 0
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


def _final(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return read_state(run)["step"], [r for r in records if r["type"] == "eval"][-1]


# 12 steps in epochs of 6 (checkpoint_every), evaluations at 6 and 12: small enough for 3 backends.
INTERRUPT = ["train.max_steps=12", "train.eval_every=[[12, 6]]", "train.checkpoint_every=6"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run folder and final evaluation of the interruption tests' spec, run without a stop."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    spec, overrides = _spec_file(tmp_path, name="stop", extra=INTERRUPT)
    assert main(["run", str(spec), *_args(overrides)]) == 0
    run = _only_run(tmp_path)
    return run, _final(run)


# The run is a real `kerasml run` process; at step STOP its own trainer callback raises the
# signal (what Ctrl-C or `kill` deliver), so the interruption lands mid-epoch deterministically.
_VICTIM = """
import signal, sys
from kerasml import experiment
from kerasml.cli import main

original = experiment._Trainer.on_train_batch_end

def on_train_batch_end(self, batch, logs=None):
    original(self, batch, logs)
    if self.step == {stop}:
        signal.raise_signal(signal.{signal})

experiment._Trainer.on_train_batch_end = on_train_batch_end
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize(("name", "stop", "status"), [("SIGINT", 8, 130), ("SIGTERM", 3, 143)])
def test_interrupted_run_checkpoints_its_step_and_resumes_to_the_same_result(
    tmp_path, uninterrupted, name, stop, status
):
    _, expected = uninterrupted
    spec, overrides = _spec_file(tmp_path, name="stop", extra=INTERRUPT)
    code = _VICTIM.format(stop=stop, signal=name, argv=["run", str(spec), *_args(overrides)])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == status, out[-3000:]
    assert "Traceback" not in out and "FAILED_PRECONDITION" not in out, out[-3000:]
    run = _only_run(tmp_path)
    assert f"interrupted at step {stop}" in done.stdout
    assert f"kerasml run --resume {run}" in done.stdout
    state = read_state(run)
    assert state["step"] == stop  # mid-epoch: epochs are 6 steps
    assert state["wall_time_s"] > 0 and state["steps_per_s"] > 0
    assert f"interrupted at step {stop} of 12" in (run / "report.md").read_text()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max((r["step"] for r in records), default=0) <= stop

    assert main(["run", "--resume", str(run)]) == 0
    step, final = _final(run)
    assert step == expected[0] == 12
    for key, value in expected[1].items():
        if key != "time":
            assert final[key] == pytest.approx(value, abs=1e-6), key
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "eval"] == [6, 12]
    assert [r["step"] for r in records if r["type"] == "train"] == [5, 10, 12]
    # Every logged value too, the stopped epoch's running means included (`state.json`'s metric_state).
    reference = [json.loads(line) for line in (uninterrupted[0] / "metrics.jsonl").read_text().splitlines()]
    for got, want in zip(records, reference, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if key not in ("type", "time"):
                where = f"{want['type']} step {want['step']}: {key}"
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), where


def test_state_best_is_the_model_in_best_keras(uninterrupted):
    import keras

    from kerasml.experiment import build_streams, evaluate_model, open_data

    run, _ = uninterrupted
    state = read_state(run)
    spec = load_spec(run / "spec.toml", check_files=False)
    model = keras.saving.load_model(run / "checkpoints" / "best.keras")
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == state["best_step"]
    _, eval_stream = build_streams(spec, open_data(spec, run))
    metrics = evaluate_model(model, eval_stream, spec)
    assert metrics[spec.train.checkpoint_metric] == pytest.approx(state["best"], abs=1e-6)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("killed", ["before state.json", "before the rename"])
def test_a_kill_between_best_keras_and_state_json_leaves_them_consistent(tmp_path, uninterrupted, monkeypatch, killed):
    import shutil

    import keras
    from rich.console import Console

    from kerasml import experiment

    run = tmp_path / "run"
    shutil.copytree(uninterrupted[0], run)
    spec = load_spec(run / "spec.toml", check_files=False)
    before = read_state(run)
    model = keras.saving.load_model(run / "checkpoints" / "last.keras")
    model.optimizer.iterations.assign(99)  # marks the model: best.keras tells which step it holds
    metrics = {spec.train.checkpoint_metric: before["best"] + 1.0}
    the_run = experiment.Run(spec, run, Console(file=io.StringIO()))
    if killed == "before state.json":
        monkeypatch.setattr(experiment.Run, "write_state", lambda self, step: (_ for _ in ()).throw(_Killed()))
    else:
        replace = os.replace

        def kill_at_rename(src, dst):
            if Path(dst).name == "best.keras":
                raise _Killed()
            replace(src, dst)

        monkeypatch.setattr(experiment.os, "replace", kill_at_rename)
    with pytest.raises(_Killed):
        the_run.save_best(model, 99, metrics)
    monkeypatch.undo()

    experiment.settle_checkpoints(run)  # what the next run, resume, evaluate or embed does first
    state = read_state(run)
    best = keras.saving.load_model(run / "checkpoints" / "best.keras")
    assert int(keras.ops.convert_to_numpy(best.optimizer.iterations)) == state["best_step"]
    assert state["best_step"] == (before["best_step"] if killed == "before state.json" else 99)
    assert not list((run / "checkpoints").glob("*pending*"))


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


def test_several_specs_run_into_one_folder_and_compare(tmp_path, uninterrupted, capsys):
    import csv

    specs = []
    for name, hdml in (("plain", "false"), ("hdml", "true")):
        path, overrides = _spec_file(tmp_path, name=name)
        path.write_text(path.read_text().replace("[model]\n", f"[model]\nhdml = {hdml}\n"), encoding="utf-8")
        specs.append(str(path))
    extra = ["train.max_steps=6", "train.eval_every=[[6, 3]]", "train.checkpoint_every=6"]
    assert main(["run", *specs, *_args([*overrides, *extra])]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name.split("-")[0] for r in runs] == ["hdml", "plain"]
    assert "kerasml compare " in capsys.readouterr().out
    runs.append(uninterrupted[0])

    out = tmp_path / "comparison"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    for word in ("digits", "npair", "on", "off", "recall@1", *(run.name for run in runs)):
        assert word in table, word
    with (out / "comparison.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == [run.name for run in runs]
    for run, row in zip(runs, rows):
        evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in evals if r["type"] == "eval"]
        assert row["steps"] == str(read_state(run)["step"])
        assert row["hdml"] == ("off" if run.name.startswith("plain") else "on")
        for metric in ("recall@1", "recall@2", "nmi", "f1"):
            assert float(row[f"{metric} last"]) == evals[-1][metric]
            assert float(row[f"{metric} best"]) == max(r[metric] for r in evals)
    for name in ("curves", "loss", "recall_at_1", "recall_at_2", "nmi", "f1"):
        assert (out / f"comparison_{name}.png").stat().st_size > 0, name
