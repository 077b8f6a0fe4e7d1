"""Runs of several processes: a replica killed mid-run, its resume, and the losses of one process.

One tiny spec, stopped after its first checkpoint and resumed, per backend pass (``multiprocess``):

- PyTorch: ``kerasml run --set distribution.devices=2`` (2 spawned gloo processes); rank 1 is killed
  (SIGKILL) once step 4 is saved; the run must end with a message naming rank 1 and the resume
  command. It is then resumed by ``torchrun --nproc_per_node 2`` (two ranks on the loopback address).
- JAX: two ``kerasml run`` processes (``distribution.num_processes = 2``, ``process_id = 0 / 1``,
  ``coordinator = 127.0.0.1:PORT``: ``jax.distributed`` with gloo collectives), one CPU device each;
  process 1 is killed once step 4 is saved, and the pair is started again with ``--resume``.
- TensorFlow (one process only: ``TF_CONFIG`` workers are refused): 2 logical CPU devices, stopped by
  SIGTERM once step 4 is saved, resumed on 2 devices.

The resumed run's logged values must equal those of one uninterrupted process at every log step (1e-4
relative), in one run folder; a copy of the stopped run folder is resumed and evaluated on one device in
this process. Every subprocess has a hard timeout, and a dead replica ends its peers within
``KERASML_DISTRIBUTION_TIMEOUT`` seconds.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from kerasml.cli import main
from kerasml.distribution.launch import free_port
from kerasml.spec import dump_spec, parse_spec

pytestmark = pytest.mark.multiprocess

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[1]
LOSS_TOLERANCE = 1e-4  # relative, every logged value at every log step
TIMEOUT_S = 240  # hard limit of each subprocess (a run here takes seconds to a minute on a loaded machine)
PEER_TIMEOUT_S = 10  # KERASML_DISTRIBUTION_TIMEOUT: how long a process waits for a dead peer
STOP_AT = 4  # the replica is killed once this step's checkpoint is saved
SPEC = {
    "experiment": {"name": "procs", "seed": 0},
    "data": {"builtin": "digits", "image_size": 8, "augment": False},
    "model": {"backbone": "small_cnn", "backbone_options": {"feature_dim": 8}, "embedding_dim": 4, "hdml": False},
    "loss": {"type": "npair"},
    "train": {
        "batch_size": 8,
        "max_steps": 16,
        "learning_rate": 1e-3,
        "eval_every": 16,
        "log_every": 2,
        "checkpoint_every": STOP_AT,
    },
    "eval": {"ks": [1, 2], "metrics": ["recall"]},
}


def _spec_file(tmp_path, name):
    spec = parse_spec({**SPEC, "experiment": {**SPEC["experiment"], "output_dir": str(tmp_path / name)}})
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_spec(spec), encoding="utf-8")
    return path


def _run_folder(output_dir):
    (run,) = list(Path(output_dir).iterdir())  # one run folder, whatever the number of processes
    return run


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _saved_step(output_dir):
    for state in Path(output_dir).glob("*/state.json"):
        with contextlib.suppress(ValueError, OSError):
            return json.loads(state.read_text())["step"]
    return 0


class _Processes:
    """Subprocesses of one fixture: started with their output in files, all killed when it ends."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.started = []
        self.env = {
            **os.environ,
            "KERAS_BACKEND": BACKEND,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "KERASML_DISTRIBUTION_TIMEOUT": str(PEER_TIMEOUT_S),
        }
        self.env.pop("XLA_FLAGS", None)

    def start(self, name, args):
        out = (self.tmp_path / f"{name}.log").open("w", encoding="utf-8")
        process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True)
        process.log = self.tmp_path / f"{name}.log"
        process.began = time.monotonic()
        self.started.append((process, out))
        return process

    def kerasml(self, name, *args):
        return self.start(name, [sys.executable, "-m", "kerasml", "run", *args])

    def wait(self, process):
        """``(exit status, output, seconds)``; the process is killed (and the test fails) past `TIMEOUT_S`."""
        left = TIMEOUT_S - (time.monotonic() - process.began)
        try:
            status = process.wait(timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"{process.args} did not end within {TIMEOUT_S} s:\n{process.log.read_text()[-3000:]}")
        return status, process.log.read_text(), time.monotonic() - process.began

    def wait_for_checkpoint(self, output_dir, processes):
        deadline = time.monotonic() + TIMEOUT_S
        while _saved_step(output_dir) < STOP_AT:
            ended = [p for p in processes if p.poll() is not None]
            if ended or time.monotonic() > deadline:
                self.close()
                logs = "\n".join(p.log.read_text()[-2000:] for p in processes)
                pytest.fail(f"no checkpoint of step {STOP_AT} before a process ended or {TIMEOUT_S} s:\n{logs}")
            time.sleep(0.05)

    def close(self):
        for process, out in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
            out.close()


def _spawned_rank_1(parent):
    # The two processes `torch.multiprocessing.spawn` started, in rank order (Linux: /proc).
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    if not children.exists():
        pytest.skip("finding a spawned rank's process needs Linux' /proc")
    ranks = sorted(
        int(pid)
        for pid in children.read_text().split()
        if b"multiprocessing-fork" in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    assert len(ranks) == 2, ranks
    return ranks[1]


def _jax_pair(processes, name, *args):
    port = free_port()
    return [
        processes.kerasml(
            f"{name}{rank}",
            *args,
            "--set",
            "distribution.num_processes=2",
            "--set",
            f"distribution.process_id={rank}",
            "--set",
            f'distribution.coordinator="127.0.0.1:{port}"',
        )
        for rank in range(2)
    ]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The 2-replica run stopped after step `STOP_AT`: ``(run folder, copy of it then, exit status, output, s)``.

    PyTorch and JAX: replica process 1 killed (SIGKILL); TensorFlow: the one process sent SIGTERM.
    """
    tmp_path = tmp_path_factory.mktemp(f"processes_{BACKEND}")
    spec = _spec_file(tmp_path, "two")
    processes = _Processes(tmp_path)
    try:
        if BACKEND == "jax":
            pair = _jax_pair(processes, "stopped", str(spec))
            processes.wait_for_checkpoint(tmp_path / "two", pair)
            pair[1].kill()
            killed = time.monotonic()
            chief = pair[0]
        else:
            chief = processes.kerasml("stopped", str(spec), "--set", "distribution.devices=2")
            processes.wait_for_checkpoint(tmp_path / "two", [chief])
            if BACKEND == "torch":
                os.kill(_spawned_rank_1(chief), signal.SIGKILL)
            else:
                chief.send_signal(signal.SIGTERM)
            killed = time.monotonic()
        status, output, _ = processes.wait(chief)
        took = time.monotonic() - killed
    finally:
        processes.close()
    run = _run_folder(tmp_path / "two")
    copy = tmp_path / "copy" / run.name
    shutil.copytree(run, copy)
    return run, copy, status, output, took


@pytest.fixture(scope="module")
def resumed(stopped):
    """The stopped run resumed on 2 replicas: torchrun's 2 ranks, 2 JAX processes, 2 TensorFlow devices."""
    run = stopped[0]
    processes = _Processes(run.parent.parent)
    try:
        if BACKEND == "jax":
            pair = _jax_pair(processes, "resumed", "--resume", str(run))
            results = [processes.wait(process) for process in pair]
        elif BACKEND == "torch":
            port = free_port()
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
            torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "kerasml", "run"]
            process = processes.start("resumed", [*torchrun, "--resume", str(run), "--set", "distribution.devices=1"])
            results = [processes.wait(process)]
        else:
            results = [processes.wait(processes.kerasml("resumed", "--resume", str(run)))]
    finally:
        processes.close()
    for status, output, _ in results:
        assert status == 0, output[-3000:]
    return results[0][1]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The logged records of the same spec, uninterrupted, in this process on one device."""
    tmp_path = tmp_path_factory.mktemp(f"one_process_{BACKEND}")
    assert main(["run", str(_spec_file(tmp_path, "one"))]) == 0
    return _records(_run_folder(tmp_path / "one"))


def _assert_same_logs(records, reference, restarted_means_after=None):
    assert [(r["type"], r["step"]) for r in records] == [(r["type"], r["step"]) for r in reference]
    # A stop mid-epoch (TensorFlow's SIGTERM) resumes with the epoch's running means (state.json's metric_state)
    # on the same number of replicas, so the rest of that epoch logs the uninterrupted run's values too. On
    # another number of replicas the means restart (`restarted_means_after` = the stopped step): those train
    # records average the resumed steps only; the steps after that epoch are compared exactly.
    stop = restarted_means_after
    partial = range(stop + 1, -(-stop // STOP_AT) * STOP_AT + 1) if stop else range(0)
    worst = 0.0
    for a, b in zip(reference, records):
        if a["type"] == "train" and a["step"] in partial:
            continue
        values = {key: value for key, value in a.items() if key not in ("type", "step", "time")}
        assert values and sorted(values) == sorted(k for k in b if k not in ("type", "step", "time"))
        for key, value in values.items():
            assert b[key] == pytest.approx(value, rel=LOSS_TOLERANCE, abs=1e-7), f"{a['type']} step {a['step']}: {key}"
            worst = max(worst, abs(b[key] - value) / max(abs(value), 1e-12))
    return worst


def test_a_killed_replica_ends_the_run_with_its_rank_and_the_resume_command(stopped):
    if BACKEND == "tensorflow":
        pytest.skip("TensorFlow runs every replica in one process (TF_CONFIG workers are refused): none to kill")
    run, _, status, output, took = stopped
    assert status == 2, output[-3000:]  # the CLI's status for a known problem (JAX: not its barrier's abort)
    assert took < PEER_TIMEOUT_S + 60, f"the run took {took:.0f} s to end after its replica died"
    if BACKEND == "torch":  # the parent of the spawned ranks knows which one died
        assert "the replica process of rank 1 (of 2) ended with signal SIGKILL" in output, output[-3000:]
    else:  # process 0 of jax.distributed loses its peer in a collective
        assert "process 0 of 2 lost the other replicas" in output, output[-3000:]
    assert f"kerasml run --resume {run}" in output
    state = json.loads((run / "state.json").read_text())
    assert state["step"] >= STOP_AT and state["step"] % STOP_AT == 0  # the last epoch end before the kill
    assert f"The last good checkpoint (step {state['step']})" in output
    assert (run / "checkpoints" / "last.keras").is_file()
    print(f"{BACKEND}: the run ended {took:.1f} s after its replica process was killed, exit status {status}")


def test_a_resumed_two_replica_run_logs_the_losses_of_one_process(stopped, resumed, one_process):
    run, _, status, output, _ = stopped
    if BACKEND == "tensorflow":
        assert status == 128 + signal.SIGTERM and "Continue with: kerasml run --resume" in output, output[-3000:]
    assert "resuming from step" in resumed
    assert len(list(run.parent.iterdir())) == 1  # one run folder: the other processes wrote none
    worst = _assert_same_logs(_records(run), one_process)
    print(f"{BACKEND}: largest relative difference, 2 replicas (stopped + resumed) vs 1 process: {worst:.2e}")


def test_a_two_replica_run_folder_resumes_and_evaluates_on_one_device(stopped, one_process, capsys):
    _, copy, *_ = stopped
    one_device = ["--set", "distribution.devices=1"]
    if BACKEND == "jax":
        one_device += ["--set", "distribution.num_processes=1", "--set", "distribution.process_id=0"]
        one_device += ["--set", 'distribution.coordinator=""']
    stopped_at = json.loads((copy / "state.json").read_text())["step"]
    assert main(["run", "--resume", str(copy), *one_device]) == 0
    _assert_same_logs(_records(copy), one_process, restarted_means_after=stopped_at)
    capsys.readouterr()
    assert main(["evaluate", str(copy), "--checkpoint", "last"]) == 0
    recall = [record for record in one_process if record["type"] == "eval"][-1]["recall@1"]
    assert f"{recall:.4f}" in capsys.readouterr().out
