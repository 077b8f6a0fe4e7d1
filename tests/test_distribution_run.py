"""`[distribution]`: the spec's keys, the launchers' environments, and `kerasml run` on 2 devices.

The run on 2 devices needs another device count than this pytest process (which stays on one
device), so it is a `kerasml run` subprocess, once per backend pass (``multiprocess``): 2 forced
host devices (JAX), 2 logical CPU devices (TensorFlow), 2 gloo processes (PyTorch). Its logged
losses must be those of the same spec on one device at every log step.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasml import distribution
from kerasml.cli import main
from kerasml.spec import SpecError, parse_spec

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[1]
LOSS_TOLERANCE = 1e-4  # relative, every logged value at every log step
SPEC = {
    "experiment": {"name": "dist", "seed": 0},
    "data": {"builtin": "digits", "image_size": 16, "augment": False},
    "model": {"backbone": "small_cnn", "backbone_options": {"feature_dim": 16}, "embedding_dim": 8, "hdml": False},
    "loss": {"type": "npair"},
    "train": {
        "batch_size": 10,
        "max_steps": 12,
        "learning_rate": 1e-3,
        "eval_every": 12,
        "log_every": 2,
        "checkpoint_every": 6,
    },
    "eval": {"ks": [1, 2]},
}


def _spec(**distribution_keys):
    return parse_spec({**SPEC, "distribution": distribution_keys}, check_files=False)


# ------------------------------------------------------------------------------------ the spec
def test_distribution_defaults_to_one_device_from_the_launcher():
    spec = _spec()
    assert spec.distribution.model_dump() == {"devices": 1, "num_processes": 0, "process_id": -1, "coordinator": ""}
    assert _spec(devices="all").distribution.devices == "all"


def test_an_indivisible_global_batch_is_a_problem_with_sizes_that_keep_the_layout():
    with pytest.raises(SpecError) as info:
        _spec(devices=4)  # 10 rows on 4 replicas; N-pair batches must also be even
    (problem,) = info.value.problems
    assert problem.key == "train.batch_size" and problem.value == 10
    assert "multiple of the 4 replicas" in problem.expected
    assert "8 or 12" in problem.hint
    with pytest.raises(SpecError) as info:
        parse_spec(
            {**SPEC, "train": {**SPEC["train"], "batch_size": 12}, "distribution": {"devices": 5, "num_processes": 2}},
            check_files=False,
        )
    assert "multiple of the 10 replicas" in info.value.problems[0].expected
    assert "10 or 20" in info.value.problems[0].hint
    assert _spec(devices=2, num_processes=1).train.batch_size == 10


def test_bad_distribution_keys_say_what_is_accepted():
    with pytest.raises(SpecError) as info:
        _spec(devices=0, num_processes=2, process_id=2)
    keys = {problem.key: problem for problem in info.value.problems}
    assert 'an int >= 1 or "all"' in keys["distribution.devices"].expected
    assert "[0, 1]" in keys["distribution.process_id"].expected


# --------------------------------------------------------------------------- launchers, topology
def test_launcher_environments():
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    assert distribution.launcher_environment("torch", torchrun) == {
        "num_processes": 4,
        "process_id": 3,
        "coordinator": "10.0.0.1:29500",
        "launcher": "torchrun",
    }
    assert distribution.launcher_environment("jax", torchrun) == {}  # torchrun's variables are PyTorch's
    tf_config = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 1}}
    found = distribution.launcher_environment("tensorflow", {"TF_CONFIG": json.dumps(tf_config)})
    assert found == {"num_processes": 3, "process_id": 2, "coordinator": "a:1", "launcher": "TF_CONFIG"}
    keras_env = {"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"}
    keras_env["KERAS_DISTRIBUTION_JOB_ADDRESSES"] = "h0:1234,h1:1234"
    found = distribution.launcher_environment("jax", keras_env)
    assert found == {"num_processes": 2, "process_id": 1, "coordinator": "h0:1234", "launcher": "keras"}
    assert distribution.launcher_environment("jax", {"JAX_COORDINATOR_ADDRESS": "h0:1"}) == {"launcher": "jax"}
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribution.launcher_environment("tensorflow", {"TF_CONFIG": "{not json"})


def test_topology_takes_unset_keys_from_the_launcher_and_refuses_impossible_jobs():
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    topology = distribution.topology(backend="torch", environ=torchrun)
    assert (topology.replicas, topology.process_id, topology.is_chief, topology.launcher) == (2, 1, False, "torchrun")
    explicit = distribution.topology(2, 3, 0, "h:1", backend="jax", environ=torchrun)
    assert (explicit.replicas, explicit.is_chief, explicit.launcher) == (6, True, "")
    assert distribution.topology(backend="jax", environ={}).replicas == 1
    with pytest.raises(ValueError, match="torchrun --nproc_per_node"):
        distribution.topology(2, backend="torch", environ=torchrun)
    with pytest.raises(ValueError, match="coordinator"):
        distribution.topology(1, 2, 0, backend="jax", environ={})
    with pytest.raises(ValueError, match="TensorFlow on one process only"):
        distribution.topology(1, 2, 0, "h:1", backend="tensorflow", environ={})
    tf_config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    with pytest.raises(ValueError, match="TF_CONFIG asks for 2 processes"):
        distribution.topology(backend="tensorflow", environ={"TF_CONFIG": json.dumps(tf_config)})
    with pytest.raises(ValueError, match="process_id"):
        distribution.topology(1, 2, 5, "h:1", backend="jax", environ={})
    assert distribution.spawns(distribution.Topology(devices=2), "torch")
    assert not distribution.spawns(distribution.Topology(devices=2), "jax")


def test_batch_size_problem():
    assert distribution.batch_size_problem(12, 4) is None and distribution.batch_size_problem(7, 1) is None
    expected, fix = distribution.batch_size_problem(10, 4)
    assert "4 replicas" in expected and "8 or 12" in fix


def test_sharded_batches_reassemble_every_global_batch():
    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def __len__(self):
            return 3

        def __getitem__(self, index):
            y = np.arange(10) + 100 * index + 1000 * self.epoch
            return y.astype("float32")[:, None], y

        def set_epoch(self, epoch):
            self.epoch = epoch

    batches = Batches()
    shards = [distribution.ShardedBatches(batches, 2, r) for r in range(2)]
    shards[0].set_epoch(1)
    assert len(shards[1]) == 3
    for index in range(3):
        x, y = batches[index]
        parts = [shard[index] for shard in shards]
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
    assert y[0] == 1200


def test_gathering_arrays_on_one_process_is_the_identity():
    assert distribution.process_shard() == (1, 0)
    embeddings, labels = np.zeros((3, 2), "float32"), np.arange(3)
    gathered = distribution.gather_arrays(embeddings, labels)
    assert gathered[0] is embeddings and gathered[1] is labels


def test_one_device_run_starts_nothing(tmp_path):
    session = distribution.start(distribution.Topology())
    assert session.engine is None and session.is_chief and session.replicas == 1
    with session.scope():
        pass


def test_resume_may_change_only_the_devices(tmp_path, capsys):
    from kerasml.spec import dump_spec

    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.toml").write_text(dump_spec(_spec(devices=2)), encoding="utf-8")
    assert main(["run", "--resume", str(run), "--set", "train.max_steps=3"]) == 2
    assert "only the devices may change: --set distribution.devices=1" in capsys.readouterr().err


# ------------------------------------------------------------------ kerasml run on 2 devices vs 1
def _spec_file(tmp_path, name):
    from kerasml.spec import dump_spec

    spec = parse_spec({**SPEC, "experiment": {**SPEC["experiment"], "output_dir": str(tmp_path / name)}})
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_spec(spec), encoding="utf-8")
    return path


def _records(output_dir):
    (run,) = list(Path(output_dir).iterdir())  # one run folder, whatever the number of processes
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp(f"distribution_run_{BACKEND}")
    spec = _spec_file(tmp_path, "two")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": BACKEND}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(
        [sys.executable, "-m", "kerasml", "run", str(spec), "--set", "distribution.devices=2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp_path, done.stdout


@pytest.mark.multiprocess
def test_run_on_two_devices_logs_the_losses_of_one_device(tmp_path, two_devices):
    two_dir, out = two_devices
    assert "distribution: 2 replicas" in out
    assert out.count("run folder:") == 2  # printed once at the start and once at the end, by process 0 only
    assert main(["run", str(_spec_file(tmp_path, "one"))]) == 0
    one, two = _records(tmp_path / "one"), _records(two_dir / "two")
    assert [(r["type"], r["step"]) for r in two] == [(r["type"], r["step"]) for r in one]
    assert [r["step"] for r in one if r["type"] == "train"] == [2, 4, 6, 8, 10, 12]
    worst = 0.0
    for a, b in zip(one, two):
        values = {key: value for key, value in a.items() if key not in ("type", "step", "time")}
        assert values and sorted(values) == sorted(k for k in b if k not in ("type", "step", "time"))
        for key, value in values.items():
            assert b[key] == pytest.approx(value, rel=LOSS_TOLERANCE, abs=1e-7), f"{a['type']} step {a['step']}: {key}"
            worst = max(worst, abs(b[key] - value) / max(abs(value), 1e-12))
    print(f"{BACKEND}: largest relative difference of a logged value, 2 devices vs 1: {worst:.2e}")
