"""``kerasml run``, ``evaluate`` and ``embed``: the experiment commands of the CLI."""

from pathlib import Path

import numpy as np

from kerasml.cli import CLIError


def _load_spec(path, overrides=(), check_files=True):
    from kerasml.spec import SpecError, load_spec

    try:
        return load_spec(path, overrides=overrides, check_files=check_files)
    except SpecError as error:
        raise CLIError(str(error)) from error


def _run_dir(path):
    run_dir = Path(path)
    if not (run_dir / "spec.toml").is_file():
        raise CLIError(
            f"{run_dir} is not a kerasml run folder: it has no spec.toml. Give the folder that "
            "`kerasml run` printed (runs/<name>-<timestamp>)."
        )
    return run_dir


def _cmd_run(args, console):
    from kerasml.data import DataError
    from kerasml.experiment import ExperimentError, run

    if args.resume:
        run_dir = _run_dir(args.resume)
        if args.spec or args.set:
            raise CLIError("--resume continues a run with its own spec.toml; drop SPEC and --set.")
        spec = _load_spec(run_dir / "spec.toml")
    else:
        if not args.spec:
            raise CLIError("kerasml run needs a SPEC file (e.g. specs/quickstart.toml), or --resume RUN_DIR.")
        spec = _load_spec(args.spec, args.set)
        run_dir = None
    try:
        run(spec, run_dir=run_dir, console=console)
    except (DataError, ExperimentError) as error:
        raise CLIError(str(error)) from error
    return 0


def _checkpoint(run_dir, which):
    path = run_dir / "checkpoints" / f"{which}.keras"
    if not path.is_file():
        raise CLIError(f"{path} does not exist: the run has no {which!r} checkpoint yet.")
    return path


def _cmd_evaluate(args, console):
    import keras

    from kerasml.experiment import build_streams, evaluate_model, open_data
    from kerasml.reporting import summary_table

    run_dir = _run_dir(args.run_dir)
    spec = _load_spec(run_dir / "spec.toml")
    model = keras.saving.load_model(_checkpoint(run_dir, args.checkpoint))
    store = open_data(spec, run_dir, console)
    _, eval_stream = build_streams(spec, store)
    metrics = evaluate_model(model, eval_stream, spec)
    console.print(summary_table(f"{spec['experiment']['name']} ({args.checkpoint})", {args.checkpoint: metrics}))
    return 0


def _cmd_embed(args, console):
    import keras

    from kerasml.data import EvalStream, StoreError, open_store
    from kerasml.experiment import embed, normalization_for

    run_dir = _run_dir(args.run_dir)
    spec = _load_spec(run_dir / "spec.toml", check_files=False)
    model = keras.saving.load_model(_checkpoint(run_dir, args.checkpoint))
    try:
        store = open_store(args.data)
    except StoreError as error:
        raise CLIError(str(error)) from error
    stream = EvalStream(
        store,
        args.split,
        batch_size=spec["eval"]["batch_size"],
        image_size=spec["data"]["image_size"],
        normalization=normalization_for(spec),
    )
    embeddings, labels = embed(model, stream)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, embeddings=embeddings, labels=labels, paths=np.array(store.paths)[stream.rows])
    tmp.replace(out)
    console.print(f"wrote {embeddings.shape[0]} embeddings of size {embeddings.shape[1]} to {out}", highlight=False)
    return 0


def register(commands):
    """Add ``run``, ``evaluate`` and ``embed`` to the CLI's subcommands."""
    run = commands.add_parser("run", help="train and evaluate an experiment from a TOML spec")
    run.add_argument("spec", nargs="?", help="the spec file, e.g. specs/quickstart.toml")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec key")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    run.set_defaults(handler=_cmd_run)

    evaluate = commands.add_parser("evaluate", help="re-evaluate a run's checkpoint")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="best")
    evaluate.set_defaults(handler=_cmd_evaluate)

    embed = commands.add_parser("embed", help="write embeddings + labels of a store's split (.npz)")
    embed.add_argument("run_dir")
    embed.add_argument("--data", required=True, help="a kerasml store (.h5)")
    embed.add_argument("--out", required=True, help="the .npz file to write")
    embed.add_argument("--split", choices=("test", "train", "all"), default="test")
    embed.add_argument("--checkpoint", choices=("best", "last"), default="best")
    embed.set_defaults(handler=_cmd_embed)
