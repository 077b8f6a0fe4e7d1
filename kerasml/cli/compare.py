"""The ``kerasml compare`` command: several run folders side by side, as a table, a CSV and figures.

For each run it reads ``spec.toml``, ``state.json`` and ``metrics.jsonl`` (nothing is re-evaluated):
``best`` is the highest value a metric reached at any evaluation of the run, ``last`` its value at
the last evaluation. It writes ``comparison.csv``, ``comparison_curves.png`` (each metric over steps,
one line per run), ``comparison_loss.png`` (the headline training loss over steps) and one
``comparison_<metric>.png`` grouped bar chart (best and last of each run) per metric.
"""

import csv
import json
import re
from pathlib import Path

from kerasml.cli._base import CLIError

__all__ = ["compare_runs", "register"]


def _records(run_dir):
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _load(path):
    from kerasml.spec import SpecError, load_spec

    run_dir = Path(path)
    if not run_dir.exists():
        raise CLIError(f"{run_dir} does not exist. Give run folders that `kerasml run` printed.")
    if not (run_dir / "spec.toml").is_file():
        raise CLIError(f"{run_dir} is not a kerasml run folder: it has no spec.toml.")
    try:
        spec = load_spec(run_dir / "spec.toml", check_files=False)
    except SpecError as error:
        raise CLIError(str(error)) from error
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    records = _records(run_dir)
    evals = [r for r in records if r.get("type") == "eval"]
    train = [r for r in records if r.get("type") == "train"]
    data = spec.data.builtin or Path(spec.data.path).stem
    return {
        "dir": run_dir,
        "run": run_dir.name,
        "dataset": data,
        "loss": spec.loss.type,
        "hdml": "on" if spec.model.hdml else "off",
        "backend": state.get("backend", "?"),
        "steps": int(state.get("step", max((r.get("step", 0) for r in records), default=0))),
        "evals": evals,
        "train": train,
    }


def compare_runs(run_dirs):
    """The comparison of run folders: ``(runs, metrics, rows)``.

    Args:
        run_dirs: run folders written by ``kerasml run``.

    Returns:
        ``runs``: one dict per run (``run, dataset, loss, hdml, backend, steps, evals, train``);
        ``metrics``: the evaluation metrics of any run, in the order of every table;
        ``rows``: one CSV row (a dict) per run with ``<metric> best`` and ``<metric> last``.
    """
    from kerasml.reporting import metric_order

    runs = [_load(path) for path in run_dirs]
    names = {k for run in runs for r in run["evals"] for k in r if k not in ("type", "step", "time")}
    metrics = metric_order(names)
    rows = []
    for run in runs:
        row = {key: run[key] for key in ("run", "dataset", "loss", "hdml", "backend", "steps")}
        for metric in metrics:
            values = [r[metric] for r in run["evals"] if metric in r]
            row[f"{metric} best"] = max(values) if values else ""
            row[f"{metric} last"] = values[-1] if values else ""
        rows.append(row)
    return runs, metrics, rows


def _number(value):
    return "-" if value == "" else f"{value:.4f}"


def _file_name(metric):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", metric.replace("@", "_at_"))


def _figures(runs, metrics, rows, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from kerasml.reporting import term_order

    written = []
    if metrics:
        fig, axes = plt.subplots(len(metrics), 1, figsize=(7, 2.4 * len(metrics)), sharex=True, squeeze=False)
        for ax, metric in zip(axes[:, 0], metrics):
            for run in runs:
                points = [(r["step"], r[metric]) for r in run["evals"] if metric in r]
                if points:
                    ax.plot(*zip(*points), marker="o", label=run["run"])
            ax.set_ylabel(metric)
        axes[0, 0].set_title("evaluation metrics over training")
        axes[0, 0].legend(fontsize=7)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        written.append(out / "comparison_curves.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        if run["train"]:
            headline = term_order(k for k in run["train"][0] if k not in ("type", "step", "time"))[0]
            ax.plot([r["step"] for r in run["train"]], [r.get(headline) for r in run["train"]], label=run["run"])
    ax.set_title("training loss (J_metric for HDML, the loss otherwise)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out / "comparison_loss.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    positions = np.arange(len(rows))
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows) + 2), 4))
        for offset, which in ((-0.2, "best"), (0.2, "last")):
            values = [row[f"{metric} {which}"] for row in rows]
            ax.bar(positions + offset, [np.nan if v == "" else v for v in values], width=0.4, label=which)
        ax.set_xticks(positions, [row["run"] for row in rows], rotation=20, ha="right", fontsize=7)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: best and last evaluation of each run")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / f"comparison_{_file_name(metric)}.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    return written


def _default_out(run_dirs):
    parents = {Path(path).resolve().parent for path in run_dirs}
    return parents.pop() if len(parents) == 1 else Path.cwd()


def _cmd_compare(args, console):
    from rich.table import Table

    runs, metrics, rows = compare_runs(args.run_dirs)
    table = Table(title=f"{len(runs)} runs (best: highest value at any evaluation; last: last evaluation)")
    for key in ("run", "dataset", "loss", "HDML", "backend", "steps"):
        table.add_column(key, justify="right" if key == "steps" else "left")
    for metric in metrics:
        table.add_column(f"{metric}\nbest", justify="right")
        table.add_column(f"{metric}\nlast", justify="right")
    for row in rows:
        cells = [row["run"], row["dataset"], row["loss"], row["hdml"], row["backend"], str(row["steps"])]
        cells += [_number(row[f"{m} {which}"]) for m in metrics for which in ("best", "last")]
        table.add_row(*cells)
    console.print(table)
    out = Path(args.out) if args.out else _default_out(args.run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "comparison.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figures = _figures(runs, metrics, rows, out)
    console.print(f"wrote {csv_path} and {len(figures)} figures (comparison_*.png) to {out}", highlight=False)
    return 0


def register(commands):
    """Add ``compare`` to the CLI's subparsers.

    Args:
        commands: the object returned by ``parser.add_subparsers(...)``.
    """
    compare = commands.add_parser(
        "compare",
        help="compare run folders: a table, a CSV and figures",
        description="Read the run folders' spec.toml, state.json and metrics.jsonl and print one table (run, "
        "dataset, loss, HDML, backend, steps, each metric at its best and at the last evaluation); write the "
        "same as comparison.csv, metric curves over steps (comparison_curves.png), the training loss "
        "(comparison_loss.png) and a grouped bar chart per metric (comparison_<metric>.png).",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders that `kerasml run` printed")
    compare.add_argument(
        "--out",
        metavar="DIR",
        help="the folder of the CSV and figures. Defaults to the runs' parent folder when they share one, "
        "else the current folder",
    )
    compare.set_defaults(handler=_cmd_compare, framework=True)
