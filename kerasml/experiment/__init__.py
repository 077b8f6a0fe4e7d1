"""Run an experiment from a resolved spec: build, train, evaluate, write the run folder.

``run(spec)`` is the one entry point behind ``kerasml run``; every choice it
makes comes from the spec (see `kerasml.spec`). The run folder
``<output_dir>/<name>-<timestamp>/`` holds::

    spec.toml           the resolved spec (all defaults filled)
    metrics.jsonl       one JSON record per log line and per evaluation
    checkpoints/        last.keras (every epoch and evaluation), best.keras (by train.checkpoint_metric)
    state.json          step, epoch, best metric (after a mid-epoch stop, the epoch's running means):
                        what `--resume` continues from
    tensorboard/        TensorBoard logs (tensorboardX: train/* every train.log_every steps, eval/*)
    report.md           the final table; plots/*.png and the retrieval grid
    data/               the store of a built-in dataset (so a resume reads only this folder)

Training is Keras ``fit`` over "epochs" of ``L`` steps (one whole pass over
the train stream), ``L`` the smallest of the sampler's plan length and
``train.checkpoint_every``; the plan and the
augmentation of epoch ``e`` depend only on the seed and ``e``, and
``last.keras`` is written at each epoch end, so a resumed run replays exactly
the steps an uninterrupted run takes. SIGINT (Ctrl-C) or SIGTERM stop training after
the current step, which is saved too: a resume then finishes that epoch's plan from
the step it stopped at (`RunInterrupted`). ``best.keras`` and ``state.json`` are written
in an order that a kill at any point cannot leave inconsistent (`settle_checkpoints`).
"""

import contextlib
import datetime as _dt
import json
import math
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import keras

from kerasml import _backend, distribution
from kerasml.experiment.build import (
    build_loss,
    build_model,
    build_streams,
    embed,
    evaluate_model,
    input_dtype,
    normalization_for,
    open_data,
    train_classes,
)
from kerasml.experiment.metric_state import metric_state, restore_metric_state
from kerasml.spec import dump_spec, evaluation_steps

__all__ = [
    "CHECKPOINTS",
    "ExperimentError",
    "ReplicasLost",
    "Run",
    "RunInterrupted",
    "build_loss",
    "build_model",
    "build_streams",
    "embed",
    "evaluate_model",
    "input_dtype",
    "new_run_dir",
    "normalization_for",
    "open_data",
    "read_state",
    "run",
    "settle_checkpoints",
    "train_classes",
    "write_atomic",
]

CHECKPOINTS = "checkpoints"


class ExperimentError(Exception):
    """A known problem with a run (bad run folder, missing checkpoint...): exit 2 in the CLI."""


class ReplicasLost(ExperimentError):
    """A run of several processes stopped because another process died (its collectives failed)."""

    def exit_with(self, status):
        """Make this process exit with ``status`` when Python exits.

        JAX's exit handler would otherwise abort the process (status 134) at ``jax.distributed``'s
        shutdown barrier, which waits for the processes that died. Other backends: nothing to do.
        """
        _backend.abandon_cluster(status)


class RunInterrupted(Exception):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM after checkpointing the step it reached.

    Attributes:
        signal_number: the signal received.
        step: the step saved in ``checkpoints/last.keras``.
        run_dir: the run folder (`run` with ``run_dir=`` this folder continues it).
        exit_status: ``128 + signal_number`` (130 for SIGINT, 143 for SIGTERM), as a shell reports it.
    """

    def __init__(self, signal_number, step, run_dir):
        self.signal_number = int(signal_number)
        self.step = int(step)
        self.run_dir = Path(run_dir)
        self.exit_status = 128 + self.signal_number
        super().__init__(f"interrupted at step {self.step} (run folder: {self.run_dir})")


# --------------------------------------------------------------------------- run folder
def new_run_dir(spec):
    """``<output_dir>/<name>-<YYYYmmdd-HHMMSS>`` (suffixed when it exists already)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(spec.experiment.output_dir) / f"{spec.experiment.name}-{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    path.mkdir(parents=True)
    return path


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_state(run_dir):
    """The run's ``state.json`` (step, epoch, best), or ``{}`` before the first checkpoint."""
    path = Path(run_dir) / "state.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _pending_best(checkpoints, step):
    return Path(checkpoints) / f"best.step{int(step)}.pending.keras"


def settle_checkpoints(run_dir):
    """Finish or undo a ``best.keras`` update that a kill interrupted, so it agrees with ``state.json``.

    A new best model is saved as ``checkpoints/best.step<N>.pending.keras``, then ``state.json``
    records ``best_step = N``, then the pending file is renamed to ``best.keras``. A pending
    file whose step ``state.json`` already records is renamed now; any other is removed.

    Args:
        run_dir: a run folder.
    """
    checkpoints = Path(run_dir) / CHECKPOINTS
    if not checkpoints.is_dir():
        return
    best_step = read_state(run_dir).get("best_step")
    for pending in checkpoints.glob("best.step*.pending.keras"):
        if best_step is not None and pending.name == _pending_best(checkpoints, best_step).name:
            os.replace(pending, checkpoints / "best.keras")
        else:
            pending.unlink()


# --------------------------------------------------------------------------- callbacks
class _EpochPlan(keras.callbacks.Callback):
    """Point the train stream at the plan of the epoch Keras is starting."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def on_epoch_begin(self, epoch, logs=None):
        self.stream.set_epoch(epoch)


class _Trainer(keras.callbacks.Callback):
    """Step limit, non-finite guard, evaluations, ``best.keras``, ``last.keras`` and ``state.json``."""

    def __init__(self, run, start_step):
        super().__init__()
        self.run = run
        self.step = int(start_step)
        self.failed = None
        self.last_eval_step = None

    def on_epoch_begin(self, epoch, logs=None):
        # A run resumed mid-epoch goes on with the running means Keras had logged up to its checkpoint.
        if self.run.resume_metrics is not None:
            restore_metric_state(self.model, self.run.resume_metrics)
            self.run.resume_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed = f"non-finite loss ({float(loss)}) at step {self.step}"
            self.model.stop_training = True
            return
        if self.step in self.run.eval_at:
            self.run.evaluate(self.model, self.step)
            self.last_eval_step = self.step
        if self.step >= self.run.max_steps or self.run.stop_signal is not None:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.failed is None:
            self.run.save_last(self.model, self.step, self.step // self.run.epoch_steps)


class _EpochTail(keras.utils.PyDataset):
    """The batches ``offset..L-1`` of one epoch of a train stream: where a run resumed mid-epoch goes on."""

    def __init__(self, stream, epoch, offset):
        super().__init__()
        self.stream = stream
        self.offset = int(offset)
        stream.set_epoch(epoch)

    def __len__(self):
        return len(self.stream) - self.offset

    def __getitem__(self, index):
        return self.stream[index + self.offset]

    def set_epoch(self, epoch):
        self.stream.set_epoch(epoch)


@contextlib.contextmanager
def _stop_on_signals(stop):
    # SIGINT (Ctrl-C), SIGTERM and, on Windows, SIGBREAK call `stop(signal_number)` instead of
    # killing the process; a second signal gets the previous handler (Ctrl-C twice stops at once).
    # Handlers can only be set from the main thread; elsewhere signals keep their behaviour.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signal_number, frame):
        for number, old in previous.items():
            signal.signal(number, old)
        stop(signal_number)

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            old = signal.signal(number, handler)
        except (OSError, ValueError):
            continue
        previous[number] = signal.SIG_DFL if old is None else old
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


class Run:
    """One run folder and what happens in it; `run` drives it.

    Args:
        spec: the resolved spec (see `kerasml.spec`).
        run_dir: the run folder (created by `new_run_dir`, or an existing one to resume).
        console: a `rich.console.Console`.
    """

    def __init__(self, spec, run_dir, console, start_step=None, epoch_steps=None):
        from kerasml.reporting import MetricsLog

        self.spec = spec
        self.dir = Path(run_dir)
        self.console = console
        self.checkpoints = self.dir / CHECKPOINTS
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        settle_checkpoints(self.dir)
        self.max_steps = spec.train.max_steps
        self.epoch_steps = int(epoch_steps or spec.train.checkpoint_every)
        self.eval_at = set(evaluation_steps(spec))
        self.metric = spec.train.checkpoint_metric
        state = read_state(self.dir)
        self.best = state.get("best")
        self.best_step = state.get("best_step")
        self.best_metrics = state.get("best_metrics")
        self.saved_step = int(state.get("step", 0))
        start = self.saved_step if start_step is None else int(start_step)
        # The epoch's running means at a mid-epoch checkpoint (`metric_state`), restored when resuming from it.
        self.saved_metrics = state.get("metric_state") if start % self.epoch_steps else None
        self.resume_metrics = self.saved_metrics if start == self.saved_step else None
        self.start_step = start
        self.log = MetricsLog(self.dir / "metrics.jsonl", truncate_after=start)
        self.reporter = None
        self.tensorboard = None
        self.eval_stream = None
        self.last_metrics = None
        self.stop_signal = None
        self.model = None
        # Training time summed over every session of the run (a resume adds its own).
        self.wall_before = float(state.get("wall_time_s", 0.0)) if start else 0.0
        self.steps_before = start
        self.started = time.perf_counter()

    def stop(self, signal_number):
        """Stop training after the current step (a signal handler calls it)."""
        self.stop_signal = signal_number
        if self.model is not None:
            self.model.stop_training = True

    def timing(self, step):
        """``{"wall_time_s", "steps_per_s"}`` of the run's training so far, resumed sessions included."""
        wall = self.wall_before + (time.perf_counter() - self.started)
        return {"wall_time_s": round(wall, 3), "steps_per_s": round(step / wall, 4) if wall > 0 else 0.0}

    def evaluate(self, model, step):
        """Evaluate, log, report, and keep ``best.keras`` by the checkpoint metric."""
        metrics = evaluate_model(model, self.eval_stream, self.spec)
        self.last_metrics = metrics
        self.log.write({"type": "eval", "step": step, "time": time.time(), **metrics})
        if self.tensorboard is not None:
            self.tensorboard.log_evaluation(step, metrics)
        value = metrics.get(self.metric)
        if value is not None and (self.best is None or value > self.best):
            self.save_best(model, step, metrics)
        if self.reporter is not None and metrics:  # processes other than 0 get no metrics (`evaluate_model`)
            self.reporter.report_evaluation(step, metrics, self.metric, self.best)
        return metrics

    def save_best(self, model, step, metrics):
        """Make the model of ``step`` the best: in an order that a kill at any point leaves consistent.

        The model goes to a pending file named by its step, ``state.json`` then records it, and
        only then is the pending file renamed to ``best.keras`` (`settle_checkpoints` finishes or
        undoes an update a kill cut short).
        """
        pending = _pending_best(self.checkpoints, step)
        _save_model(model, pending)
        self.best, self.best_step, self.best_metrics = float(metrics[self.metric]), int(step), metrics
        self.write_state(step)
        os.replace(pending, self.checkpoints / "best.keras")

    def save_last(self, model, step, epoch):
        """``last.keras`` and ``state.json`` (written after the model, so a state never outruns its model)."""
        _save_model(model, self.checkpoints / "last.keras")
        self.saved_step = int(step)
        self.saved_metrics = metric_state(model) if step % self.epoch_steps else None
        self.write_state(step)

    def write_state(self, step):
        """``state.json``: the step of ``last.keras``, the best evaluation, timing and backend."""
        state = {
            "step": self.saved_step,
            "epoch": self.saved_step // self.epoch_steps,
            "best": self.best,
            "best_step": self.best_step,
            "best_metrics": self.best_metrics,
            "backend": keras.backend.backend(),
            **self.timing(step),
        }
        if self.saved_metrics is not None:
            state["metric_state"] = self.saved_metrics
        write_atomic(self.dir / "state.json", json.dumps(state, indent=2))


def _save_model(model, path):
    tmp = path.with_name(path.name.replace(".keras", ".tmp.keras"))
    model.save(tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- entry point
def run(spec, run_dir=None, console=None, session=None):
    """Train, evaluate and report one experiment; returns the run folder.

    ``[distribution]`` (`kerasml.distribution.replicate`): ``train.batch_size`` is the global batch
    of all replicas; only process 0 writes the run folder and prints (the others write to a
    temporary folder); PyTorch runs one process per device, each feeding its shard.

    Args:
        spec: a resolved spec (`kerasml.spec.load_spec`).
        run_dir: an existing run folder to resume (its ``spec.toml`` must be
            ``spec``), or ``None`` for a new one.
        console: a `rich.console.Console`. Defaults to a new one.
        session: this process's started `kerasml.distribution.Session`; defaults to starting the spec's.

    Raises:
        ExperimentError: for a run that stopped on a non-finite loss (the last
            good checkpoint is kept) or a run folder that cannot be resumed.
        RunInterrupted: on SIGINT (Ctrl-C) or SIGTERM (SIGBREAK on Windows): the run
            saved the step it reached, its report and plots, and printed the command
            that continues it (``kerasml run --resume RUN_DIR``, exact even mid-epoch).
    """
    if session is None:
        try:
            topology = distribution.topology(**spec.distribution.model_dump())
            if distribution.spawns(topology) and topology.is_chief:  # this host's processes share one folder
                run_dir = Path(run_dir) if run_dir else new_run_dir(spec)
                write_atomic(run_dir / "spec.toml", dump_spec(spec))
                open_data(spec, run_dir, console)
            return distribution.replicate(run, (spec, run_dir), topology, spec.train.batch_size) or run_dir
        except distribution.ReplicaFailed as error:  # one of the processes `spawn` started
            hint = "" if "--resume" in str(error) else " " + _resume_hint(run_dir)
            raise ExperimentError(f"training stopped: {error}.{hint}") from None
        except distribution.DistributionError as error:
            raise ExperimentError(str(error)) from None
    with contextlib.ExitStack() as stack:
        scratch = None if session.is_chief else tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        return _train(spec, run_dir, console, session, scratch and Path(stack.enter_context(scratch)))


def _train(spec, run_dir, console, session, scratch):
    from rich.console import Console

    from kerasml.reporting import RichReporter, TensorBoardLogger, summary_table

    console = console or Console(quiet=scratch is not None, soft_wrap=True)
    resuming = run_dir is not None
    if resuming:
        run_dir = Path(run_dir)
    else:
        run_dir = scratch or new_run_dir(spec)
        write_atomic(run_dir / "spec.toml", dump_spec(spec))
    keras.utils.set_random_seed(spec.experiment.seed)
    console.print(f"run folder: {run_dir}", highlight=False)
    if session.replicas > 1:
        console.print(f"distribution: {session.describe()}", highlight=False)

    store = open_data(spec, run_dir, console)
    max_steps = spec.train.max_steps
    train_stream, eval_stream = build_streams(spec, store)
    # One Keras epoch is one whole pass over the stream (Keras then restarts its iterator, so
    # epoch e reads batches 0..L-1 of plan e, whether or not the run was resumed).
    epoch_steps = min(len(train_stream), max_steps, spec.train.checkpoint_every)
    capped = epoch_steps < len(train_stream)
    if capped:
        train_stream, eval_stream = build_streams(spec, store, epoch_steps)
    last = run_dir / CHECKPOINTS / "last.keras"
    if resuming and last.exists():
        model = keras.saving.load_model(last)
        jit_compile = _backend.jit_compile(spec.train.compile)
        if jit_compile != "auto":  # "auto": what the checkpoint's compile() resolved
            model.jit_compile = jit_compile
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        console.print(f"resuming from step {step} ({last})", highlight=False)
    else:
        model = build_model(spec, store)
        step = 0
    if input_dtype(model) != train_stream.dtype:  # a checkpoint that takes normalised float32 images
        train_stream, eval_stream = build_streams(spec, store, epoch_steps if capped else None, input_dtype(model))
    if session.topology.num_processes > 1:  # each process feeds its shard of every global batch
        train_stream = distribution.ShardedBatches(
            train_stream, session.topology.num_processes, session.topology.process_id
        )
    the_run = Run(spec, scratch or run_dir, console, start_step=step, epoch_steps=epoch_steps)
    the_run.model = model
    the_run.eval_stream = eval_stream
    the_run.tensorboard = TensorBoardLogger(
        the_run.dir / "tensorboard", start_step=step, update_freq=spec.train.log_every, last_step=max_steps
    )
    epochs = math.ceil(max_steps / epoch_steps)
    trainer = _Trainer(the_run, step)
    status = "finished"
    if step < max_steps:
        reporter = RichReporter(max_steps, spec.train.log_every, the_run.log, console, start_step=step)
        the_run.reporter = reporter
        # A run stopped mid-epoch goes on with the rest of that epoch's plan, then whole epochs.
        epoch, offset = divmod(step, epoch_steps)
        parts = [(_EpochTail(train_stream, epoch, offset), epoch, epoch + 1)] if offset else []
        parts.append((train_stream, epoch + (1 if offset else 0), epochs))
        with _stop_on_signals(the_run.stop), _replicas_lost(session, trainer, None if scratch else run_dir):
            for stream, first, end in parts:
                if first >= end or trainer.failed or the_run.stop_signal is not None:
                    break
                model.fit(
                    stream,
                    epochs=end,
                    initial_epoch=first,
                    shuffle=False,  # the sampler's plan is the order; Keras' shuffle would draw from global state
                    callbacks=[_EpochPlan(stream), trainer, reporter, the_run.tensorboard],
                    verbose=0,
                )
        if trainer.failed:
            status = f"stopped: {trainer.failed}; kept the last good checkpoint"
    interrupted = the_run.stop_signal is not None and trainer.step < max_steps and not trainer.failed
    if interrupted:
        status = f"interrupted at step {trainer.step} of {max_steps}"
        final = the_run.last_metrics or {}
    else:
        final = the_run.last_metrics
        if final is None or trainer.last_eval_step != trainer.step:
            final = evaluate_model(model, eval_stream, spec) if not trainer.failed else (final or {})
    the_run.tensorboard.close()
    embedded = None  # several processes embed the retrieval grid's images together (a collective)
    if session.topology.num_processes > 1 and not interrupted and not trainer.failed:
        embedded = embed(model, eval_stream, sharded=True)
    if scratch is None:  # process 0 only
        _write_outputs(the_run, model, store, eval_stream, final, status, grid=not interrupted, embedded=embedded)
    rows = {"last": final} if final else {}
    if the_run.best_metrics:
        rows[f"best (step {the_run.best_step})"] = the_run.best_metrics
    if rows:
        console.print(summary_table(f"{spec.experiment.name}: {status}", rows))
    else:
        console.print(f"{spec.experiment.name}: {status}", highlight=False)
    console.print(f"run folder: {run_dir}", highlight=False)
    console.print(f"report: {run_dir / 'report.md'}", highlight=False)
    if interrupted:
        console.print(
            f"interrupted at step {trainer.step}: saved checkpoints/last.keras at that step. "
            f"Continue with: kerasml run --resume {_quoted(run_dir)}",
            highlight=False,
        )
        raise RunInterrupted(the_run.stop_signal, trainer.step, run_dir)
    if trainer.failed:
        raise ExperimentError(f"training {status} (run folder: {run_dir})")
    return run_dir


@contextlib.contextmanager
def _replicas_lost(session, trainer, run_dir):
    # A collective across processes that fails (another replica's process died, the network broke) ends the
    # run with what happened and how to continue, instead of an internal error.
    try:
        yield
    except Exception as error:
        topology = session.topology
        if topology.num_processes < 2 or not _backend.is_collective_failure(error):
            raise
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ReplicasLost(
            f"training stopped after step {trainer.step}: process {topology.process_id} of {topology.num_processes} "
            f"lost the other replicas (another replica's process died, or the network failed): {cause}. "
            + _resume_hint(run_dir)
        ) from None


def _resume_hint(run_dir):
    """Where the last good checkpoint of a run that failed is, and the command that continues it."""
    if run_dir is None:
        return "Its last good checkpoint is in the run folder that process 0 printed; resume it from there."
    step = read_state(run_dir).get("step")
    if not step:
        return f"No checkpoint was saved yet ({run_dir}): start the run again."
    return (
        f"The last good checkpoint (step {step}) is {Path(run_dir) / CHECKPOINTS / 'last.keras'}: continue with "
        f"kerasml run --resume {_quoted(run_dir)} (on every process of a multi-host job, each with its "
        "--set distribution.process_id)."
    )


def _quoted(path):
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _write_outputs(the_run, model, store, eval_stream, final, status, grid=True, embedded=None):
    from kerasml.reporting import plot_curves, retrieval_grid, write_report

    spec = the_run.spec
    timing = read_state(the_run.dir)
    timing = {k: timing[k] for k in ("wall_time_s", "steps_per_s") if k in timing}
    write_report(
        the_run.dir / "report.md",
        spec,
        final,
        the_run.best_metrics,
        the_run.best_step,
        the_run.metric,
        status,
        timing=timing,
    )
    title = f"{spec.experiment.name} ({keras.backend.backend()})"
    plot_curves(the_run.log.records(), the_run.dir / "plots", title=title)
    if final and grid:
        embeddings, labels = embedded if embedded is not None else embed(model, eval_stream)
        images = store.read(eval_stream.rows)
        grid = the_run.dir / "plots" / "retrieval.png"
        retrieval_grid(grid, images, labels, embeddings, seed=spec.experiment.seed)
