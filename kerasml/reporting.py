"""Training reports: the Rich console reporter, ``metrics.jsonl``, TensorBoard logs, plots and ``report.md``."""

import json
import math
import os
import struct
import sys
import time
import uuid
from pathlib import Path

import keras
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

TERM_ORDER = ("loss", "J_m", "J_syn", "J_metric", "J_recon", "J_soft", "J_gen", "J_cls", "w")
# The console's columns: the metric objective first (J_metric for HDML, the loss otherwise), the
# generator's and classifier's losses beside it, then the other terms; HDML's total comes last.
CONSOLE_ORDER = ("J_metric", "J_gen", "J_cls", "J_m", "J_syn", "J_recon", "J_soft", "w", "loss")
# Evaluation metrics in one order everywhere: recall@K by K, then these.
METRIC_ORDER = ("nmi", "f1", "map@r", "r_precision")


def term_order(names):
    """Loss-term names in console order: the headline loss first (``J_metric`` when present, else ``loss``)."""
    names = list(names)
    order = CONSOLE_ORDER if "J_metric" in names else TERM_ORDER
    return [n for n in order if n in names] + sorted(set(names) - set(order))


def metric_order(names):
    """Metric names in the one order of every table and report: ``recall@K`` by K, nmi, f1, map@r, r_precision."""
    return sorted(names, key=_metric_order)


def _fmt(value):
    if isinstance(value, str):
        return value
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


class MetricsLog:
    """Appends one JSON record per line to ``metrics.jsonl`` (flushed at once).

    Args:
        path: the file.
        truncate_after: on a resume, drop the records of steps after this one first.
    """

    def __init__(self, path, truncate_after=None):
        self.path = Path(path)
        if truncate_after is not None and self.path.exists():
            kept = [r for r in self.records() if r.get("step", 0) <= truncate_after]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self.path.touch()

    def write(self, record):
        """Append ``record`` (numbers made JSON-safe)."""
        clean = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in record.items()}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean) + "\n")

    def records(self):
        """Every record so far."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


class RichReporter(keras.callbacks.Callback):
    """Console progress of a run: a bar with steps/s and ETA, loss-term rows, evaluation tables.

    On a terminal the bar is live; otherwise (CI logs, files) it prints plain lines.
    Every ``log_every`` steps it prints the loss terms and appends them to the
    `MetricsLog`. Plain ASCII box characters keep Windows consoles happy.

    Args:
        total_steps: the run's last step.
        log_every: steps between loss rows.
        metrics_log: a `MetricsLog`.
        console: a `rich.console.Console`. Defaults to a new one.
        start_step: the step a resumed run starts from.
    """

    def __init__(self, total_steps, log_every, metrics_log, console=None, start_step=0):
        super().__init__()
        self.total_steps = int(total_steps)
        self.log_every = int(log_every)
        self.metrics_log = metrics_log
        self.console = console or Console()
        self.step = int(start_step)
        self._progress = None
        self._task = None
        self._started = None
        self._header_printed = False

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()
        self._start_step = self.step
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} steps/s"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total_steps, completed=self.step, rate="-")

    def rate(self):
        """Steps per second since this process started training."""
        elapsed = time.perf_counter() - (self._started or time.perf_counter())
        return (self.step - self._start_step) / elapsed if elapsed > 0 else 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self._progress is not None:
            self._progress.update(self._task, completed=self.step, rate=f"{self.rate():.2f}")
        if self.step % self.log_every == 0 or self.step == self.total_steps:
            terms = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
            self.metrics_log.write({"type": "train", "step": self.step, "time": time.time(), **terms})
            self._print_terms(terms)

    def _print_terms(self, terms):
        names = term_order(terms)
        if not self._header_printed:
            header = "step".rjust(7) + "".join(n.rjust(11) for n in names) + "  steps/s"
            self.console.print(header, highlight=False, soft_wrap=True)
            self._header_printed = True
        row = f"{self.step:>7}" + "".join(_fmt(terms[n]).rjust(11) for n in names) + f"  {self.rate():.2f}"
        self.console.print(row, highlight=False, soft_wrap=True)

    def report_evaluation(self, step, metrics, best_name=None, best_value=None):
        """Print an evaluation table (called by the evaluation callback)."""
        table = Table(title=f"evaluation at step {step}", show_edge=False)
        names = metric_order(metrics)
        for name in names:
            table.add_column(name, justify="right")
        table.add_row(*(_fmt(metrics[n]) for n in names))
        self.console.print(table)
        if best_name is not None:
            self.console.print(f"best {best_name} so far: {_fmt(best_value)}", highlight=False)
        self._header_printed = False

    def on_train_end(self, logs=None):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class TensorBoardLogger(keras.callbacks.Callback):
    """TensorBoard event files of a run's logged scalars, written with tensorboardX on any backend.

    Every ``update_freq`` steps each scalar of the step's logs (the loss and its terms) is
    written as ``train/<name>`` at the global step; `log_evaluation` writes evaluation
    metrics as ``eval/<name>``. Nothing imports TensorFlow (nor, on another backend, PyTorch),
    so a JAX or PyTorch run stays free of both.

    A resumed run repeats the steps after its last checkpoint: started at ``start_step`` in a
    folder that already holds event files, the logger first removes from them every event
    after ``start_step`` (each file is rewritten and swapped in whole), so that no step is
    ever written twice.

    Args:
        log_dir: the folder of the event files (created when missing).
        start_step: the global step training starts from (the resumed step). Defaults to 0.
        update_freq: steps between two writes of the training scalars. Defaults to 1.
        last_step: a step written even when it is not a multiple of ``update_freq`` (the run's
            last, as `RichReporter` does for ``metrics.jsonl``). Defaults to ``None``.

    Example:

    >>> import tempfile
    >>> logger = TensorBoardLogger(tempfile.mkdtemp())
    >>> logger.log_evaluation(10, {"recall@1": 0.5})
    >>> logger.close()
    """

    def __init__(self, log_dir, start_step=0, update_freq=1, last_step=None):
        super().__init__()
        if isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1:
            raise ValueError(
                f"Invalid value for argument `update_freq`. Expected an int >= 1. Received: {update_freq!r}"
            )
        self.log_dir = Path(log_dir)
        self.step = int(start_step)
        self.update_freq = update_freq
        self.last_step = last_step
        self._writer = None

    def _open(self):
        if self._writer is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            drop_events_after(self.log_dir, self.step)
            # A suffix of its own: two writers started in the same second never share a file.
            self._writer = _summary_writer()(str(self.log_dir), filename_suffix=f".{uuid.uuid4().hex[:8]}")
        return self._writer

    def write_scalars(self, prefix, values, step):
        """Write every scalar of ``values`` as ``<prefix>/<name>`` at ``step`` (non-scalars are skipped)."""
        writer = self._open()
        for name, value in (values or {}).items():
            if np.ndim(value) == 0 and not isinstance(value, str):
                writer.add_scalar(f"{prefix}/{name}", float(value), global_step=int(step))

    def log_evaluation(self, step, metrics):
        """Write evaluation ``metrics`` (``{"recall@1": ...}``) as ``eval/<name>`` at ``step``, and flush."""
        self.write_scalars("eval", metrics, step)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        self._open()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.update_freq == 0 or self.step == self.last_step:
            self.write_scalars("train", logs, self.step)

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def on_train_end(self, logs=None):
        self.close()

    def close(self):
        """Flush and close the event file (a later write opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _summary_writer():
    # tensorboardX's writer module imports PyTorch, when installed, only to accept torch tensors;
    # a JAX or TensorFlow run gives it floats, so torch is hidden while tensorboardX loads
    # (`sys.modules[name] = None` makes that one import fail) and visible again afterwards.
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def _event_records(path):
    """``(raw record bytes, step)`` of each complete record of a TFRecord event file."""
    from tensorboardX.proto.event_pb2 import Event

    data = Path(path).read_bytes()
    offset = 0
    # A record: length (uint64), its CRC (uint32), the Event proto, the proto's CRC (uint32).
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 12 + length + 4
        if end > len(data):  # the tail of a file whose writer was killed
            break
        event = Event.FromString(data[offset + 12 : offset + 12 + length])
        yield data[offset:end], event.step
        offset = end


def drop_events_after(log_dir, step):
    """Remove every event after ``step`` from the TensorBoard event files in ``log_dir``.

    Each file that has such events is rewritten without them under a temporary name and swapped
    in with one rename, so a kill at any moment leaves either the old file or the new one.

    Args:
        log_dir: a folder of ``*tfevents*`` files (a missing folder has none).
        step: the last step to keep.

    Returns:
        The number of events removed.
    """
    _summary_writer()  # the proto module lives in tensorboardX
    removed = 0
    for path in sorted(Path(log_dir).glob("*tfevents*")):
        records = list(_event_records(path))
        kept = [raw for raw, event_step in records if event_step <= step]
        if len(kept) == len(records) and sum(map(len, kept)) == path.stat().st_size:
            continue
        removed += len(records) - len(kept)
        tmp = path.with_name(f".rewrite-{path.name.replace('tfevents', 'events')}")  # TensorBoard skips it
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)
    return removed


def summary_table(title, rows):
    """A Rich table of ``{label: {metric: value}}``."""
    metrics = sorted({m for values in rows.values() for m in values}, key=_metric_order)
    table = Table(title=title)
    table.add_column("checkpoint")
    for name in metrics:
        table.add_column(name, justify="right")
    for label, values in rows.items():
        table.add_row(label, *(_fmt(values[m]) if m in values else "-" for m in metrics))
    return table


def _metric_order(name):
    if name.startswith("recall@"):
        try:
            return (0, int(name.split("@")[1]), "")
        except ValueError:
            return (0, math.inf, name)
    if name in METRIC_ORDER:
        return (1, METRIC_ORDER.index(name), "")
    return (2, 0, name)


def write_report(path, spec, final, best, best_step, checkpoint_metric, status, timing=None):
    """``report.md``: the run's final and best metrics, and how the best was chosen.

    Args:
        path: the file to write.
        spec: the run's resolved spec.
        final: ``{metric: value}`` of the last step (may be empty).
        best: ``{metric: value}`` of the best evaluation, or ``None``.
        best_step: the step of ``best``.
        checkpoint_metric: the metric that chose ``best``.
        status: a short phrase ("finished", "interrupted at step 8 of 12"...).
        timing: ``{"wall_time_s", "steps_per_s"}`` of training. Defaults to ``None`` (not reported).
    """
    metrics = metric_order(set(final) | set(best or {}))
    lines = [
        f"# {spec.experiment.name}",
        "",
        f"Status: {status}. Backend: {keras.backend.backend()}. Steps: {spec.train.max_steps}.",
        f"Model: {spec.model.backbone}, embedding {spec.model.embedding_dim}, "
        f"loss {spec.loss.type}, HDML {'on' if spec.model.hdml else 'off'}.",
    ]
    if timing and "wall_time_s" in timing:
        lines.append(
            f"Training wall time: {timing['wall_time_s']:.1f} s ({timing.get('steps_per_s', 0.0):.2f} steps/s)."
        )
    lines += [
        "",
        "| checkpoint | " + " | ".join(metrics) + " |",
        "| --- | " + " | ".join("---:" for _ in metrics) + " |",
        "| last | " + " | ".join(_fmt(final[m]) if m in final else "-" for m in metrics) + " |",
    ]
    if best:
        lines.append(f"| best (step {best_step}) | " + " | ".join(_fmt(best.get(m, math.nan)) for m in metrics) + " |")
    lines += [
        "",
        f"`best` is the evaluation with the highest `{checkpoint_metric}` on the "
        f"`{spec.eval.split}` split (`checkpoints/best.keras`); `last` is the final step "
        "(`checkpoints/last.keras`). Plots are in `plots/`.",
        "",
    ]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def plot_curves(records, folder, title=None):
    """``loss_terms.png`` (train terms over steps) and ``evaluation.png`` (metrics over evaluations).

    Each loss term has its own axis (HDML's weight ``w`` included), labelled, under a common ``step`` axis.

    Args:
        records: the records of ``metrics.jsonl``.
        folder: where the PNGs go (created when missing).
        title: the figures' title, e.g. ``"run-name (jax)"``. Defaults to ``None``.

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    train = [r for r in records if r.get("type") == "train"]
    if train:
        names = term_order(n for n in train[0] if n not in ("type", "step", "time"))
        fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.8 * len(names)), sharex=True, squeeze=False)
        steps = [r["step"] for r in train]
        for ax, name in zip(axes[:, 0], names):
            ax.plot(steps, [r.get(name, np.nan) for r in train])
            ax.set_ylabel(name)
        axes[-1, 0].set_xlabel("step")
        axes[0, 0].set_title(f"{title}: training losses" if title else "training losses")
        fig.tight_layout()
        fig.savefig(folder / "loss_terms.png", dpi=90)
        plt.close(fig)
        written.append(folder / "loss_terms.png")
    evals = [r for r in records if r.get("type") == "eval"]
    if evals:
        names = metric_order(k for k in evals[0] if k not in ("type", "step", "time"))
        fig, ax = plt.subplots(figsize=(7, 4))
        for name in names:
            ax.plot([r["step"] for r in evals], [r.get(name, np.nan) for r in evals], marker="o", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("metric value")
        ax.set_title(f"{title}: evaluation" if title else "evaluation")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "evaluation.png", dpi=90)
        plt.close(fig)
        written.append(folder / "evaluation.png")
    return written


def retrieval_grid(path, images, labels, embeddings, queries=6, k=5, seed=0):
    """A PNG grid: each row a query and its ``k`` nearest neighbours (green: same class, red: not).

    Args:
        path: the PNG to write.
        images: uint8 ``[N, H, W, 3]`` of the evaluated split, in embedding order.
        labels: ``[N]``; embeddings: ``[N, D]`` (normalised here).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(z), size=min(queries, len(z)), replace=False)
    fig, axes = plt.subplots(len(chosen), k + 1, figsize=(1.4 * (k + 1), 1.5 * len(chosen)), squeeze=False)
    for row, q in enumerate(chosen):
        distances = np.sum((z - z[q]) ** 2, axis=1)
        distances[q] = np.inf
        neighbours = np.argsort(distances, kind="stable")[:k]
        for col, index in enumerate([q, *neighbours]):
            ax = axes[row, col]
            ax.imshow(images[index])
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "black" if col == 0 else ("green" if labels[index] == labels[q] else "red")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
            if row == 0:
                ax.set_title("query" if col == 0 else f"#{col}", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
