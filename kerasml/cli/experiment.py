"""The experiment commands of the ``kerasml`` CLI: ``run``, ``evaluate`` and ``embed``.

``register(commands)`` adds them to the CLI's subparsers; a bad spec, a missing run folder or
checkpoint, or a run that stopped on a non-finite loss is raised as `CLIError` (exit status 2,
a message on stderr, no traceback).
"""

from pathlib import Path

from kerasml.cli._base import EXIT_USAGE, CLIError, add_set_argument

__all__ = ["register"]


def _load_spec(path, overrides=(), check_files=True):
    from kerasml.spec import SpecError, load_spec

    try:
        return load_spec(path, overrides=overrides, check_files=check_files)
    except SpecError as error:
        raise CLIError(str(error)) from error


def _run_dir(path):
    run_dir = Path(path)
    if not run_dir.exists():
        raise CLIError(
            f"{run_dir} does not exist. Give the run folder that `kerasml run` printed (runs/<name>-<timestamp>)."
        )
    if not (run_dir / "spec.toml").is_file():
        raise CLIError(
            f"{run_dir} is not a kerasml run folder: it has no spec.toml. Give the folder that "
            "`kerasml run` printed (runs/<name>-<timestamp>)."
        )
    return run_dir


def _checkpoint(run_dir, which):
    from kerasml.experiment import settle_checkpoints

    settle_checkpoints(run_dir)
    path = run_dir / "checkpoints" / f"{which}.keras"
    if not path.is_file():
        raise CLIError(f"{path} does not exist: the run has no {which!r} checkpoint yet.")
    return path


def _cmd_run(args, console):
    if args.resume:
        run_dir = _run_dir(args.resume)
        if args.spec or any(not override.startswith("distribution.") for override in args.set):
            raise CLIError(
                "--resume continues a run with its own spec.toml; drop SPEC and --set (only the devices may "
                "change: --set distribution.devices=1)."
            )
        jobs = [(_load_spec(run_dir / "spec.toml", args.set), run_dir)]
    else:
        if not args.spec:
            raise CLIError("kerasml run needs a SPEC file (e.g. specs/quickstart.toml), or --resume RUN_DIR.")
        specs = [_load_spec(path, args.set) for path in args.spec]  # every spec is checked before any run
        if len(specs) > 1:  # one parent folder: the first spec's experiment.output_dir
            parent = specs[0].experiment.output_dir
            specs = [
                spec.model_copy(update={"experiment": spec.experiment.model_copy(update={"output_dir": parent})})
                for spec in specs
            ]
        jobs = [(spec, None) for spec in specs]
    from kerasml.data import DataError
    from kerasml.experiment import ExperimentError, ReplicasLost, RunInterrupted, run

    done = []
    for spec, run_dir in jobs:
        try:
            done.append(run(spec, run_dir=run_dir, console=console))
        except RunInterrupted as interrupted:  # the run saved its step and printed how to continue
            return interrupted.exit_status
        except ReplicasLost as error:  # on JAX, exit with the usual status, not the shutdown barrier's abort
            error.exit_with(EXIT_USAGE)
            raise CLIError(str(error)) from error
        except (DataError, ExperimentError) as error:
            raise CLIError(str(error)) from error
    if len(done) > 1:
        console.print(f"{len(done)} runs in {done[0].parent}. Compare them with:", highlight=False)
        console.print("kerasml compare " + " ".join(str(path) for path in done), highlight=False)
    return 0


def _cmd_evaluate(args, console):
    run_dir = _run_dir(args.run_dir)
    checkpoint = _checkpoint(run_dir, args.checkpoint)
    spec = _load_spec(run_dir / "spec.toml")
    import keras

    from kerasml.experiment import build_streams, evaluate_model, input_dtype, open_data
    from kerasml.reporting import summary_table

    model = keras.saving.load_model(checkpoint)
    store = open_data(spec, run_dir, console)
    _, eval_stream = build_streams(spec, store, dtype=input_dtype(model))
    metrics = evaluate_model(model, eval_stream, spec)
    console.print(summary_table(f"{spec.experiment.name} ({args.checkpoint})", {args.checkpoint: metrics}))
    return 0


def _cmd_embed(args, console):
    run_dir = _run_dir(args.run_dir)
    checkpoint = _checkpoint(run_dir, args.checkpoint)
    spec = _load_spec(run_dir / "spec.toml", check_files=False)
    import keras
    import numpy as np

    from kerasml.data import EvalStream, StoreError, open_store
    from kerasml.experiment import embed, input_dtype, normalization_for

    model = keras.saving.load_model(checkpoint)
    try:
        store = open_store(args.data)
    except StoreError as error:
        raise CLIError(str(error)) from error
    stream = EvalStream(
        store,
        args.split,
        batch_size=spec.eval.batch_size,
        image_size=spec.data.image_size,
        normalization=normalization_for(spec),
        dtype=input_dtype(model),
    )
    embeddings, labels = embed(model, stream)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, embeddings=embeddings, labels=labels, paths=np.array(store.paths)[stream.rows])
    tmp.replace(out)
    console.print(f"wrote {embeddings.shape[0]} embeddings of size {embeddings.shape[1]} to {out}", highlight=False)
    return 0


def _add_checkpoint_argument(parser):
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="best: the evaluation with the best train.checkpoint_metric (checkpoints/best.keras); last: the "
        "final step (checkpoints/last.keras). Defaults to best",
    )


def register(commands):
    """Add ``run``, ``evaluate`` and ``embed`` to the CLI's subparsers.

    Args:
        commands: the object returned by ``parser.add_subparsers(...)``.
    """
    run = commands.add_parser(
        "run",
        help="train and evaluate an experiment from a TOML spec",
        description="Check the spec (as `kerasml validate` does), then train, evaluate every train.eval_every "
        "steps and write a run folder runs/<name>-<timestamp>/ (spec.toml, checkpoints/, metrics.jsonl, "
        "tensorboard/, plots/, report.md). --resume continues such a folder from its last checkpoint.",
    )
    run.add_argument(
        "spec",
        nargs="*",
        help="the spec file, e.g. specs/quickstart.toml (not with --resume); several run one after another, all "
        "into the first one's experiment.output_dir",
    )
    add_set_argument(run)
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint, with its spec.toml (--set distribution.* may "
        "change the devices)",
    )
    run.set_defaults(handler=_cmd_run, framework=True)

    evaluate = commands.add_parser(
        "evaluate",
        help="re-evaluate a run's checkpoint",
        description="Load a run's checkpoint and evaluate it on the run's evaluation split with the metrics of "
        "its spec.toml (the same numbers as the run's evaluation table).",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="the run folder that `kerasml run` printed")
    _add_checkpoint_argument(evaluate)
    evaluate.set_defaults(handler=_cmd_evaluate, framework=True)

    embed = commands.add_parser(
        "embed",
        help="write embeddings + labels of a store's split (.npz)",
        description="Embed the images of a store's split with a run's checkpoint (the run's image size and "
        "normalisation) and write embeddings, labels and image paths to a .npz file.",
    )
    embed.add_argument("run_dir", metavar="RUN_DIR", help="the run folder that `kerasml run` printed")
    embed.add_argument("--data", required=True, help="a kerasml store (.h5) to embed")
    embed.add_argument("--out", required=True, help="the .npz file to write (arrays embeddings, labels, paths)")
    embed.add_argument(
        "--split", choices=("test", "train", "all"), default="test", help="the images to embed. Defaults to test"
    )
    _add_checkpoint_argument(embed)
    embed.set_defaults(handler=_cmd_embed, framework=True)
