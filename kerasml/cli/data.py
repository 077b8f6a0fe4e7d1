"""The data commands of the ``kerasml`` CLI: ``download``, ``ingest`` and ``info``.

``register(commands)`` adds them to the CLI's subparsers; every known bad input is raised
as `CLIError` (exit status 2, a message on stderr, no traceback). None of them imports
Keras or a framework.
"""

import json
from pathlib import Path

from kerasml.cli._base import CLIError, positive_int

__all__ = ["DOWNLOADABLE", "INGESTIBLE", "register"]

# The names of kerasml.data.REMOTES and kerasml.data.SOURCES, written out so that building the
# parser imports no data module (tests/test_cli.py checks that they agree).
DOWNLOADABLE = ("cub", "cars196", "sop")
INGESTIBLE = ("cub", "cars196", "sop", "folder", "digits", "procedural")


def _cmd_download(args, console):
    from kerasml.data import DataError, download

    try:
        results = download(
            args.name,
            args.to,
            urls=args.url,
            extract=args.extract,
            retries=args.retries,
            timeout=args.timeout,
            console=console,
        )
    except DataError as error:
        raise CLIError(str(error)) from error
    for result in results:
        what = {"present": "already there, verified", "downloaded": "downloaded", "resumed": "resumed, complete"}
        check = {"recorded": "no published checksum: SHA-256 recorded"}.get(result.verified, f"{result.verified} ok")
        console.print(
            f"[green]{result.path}[/]: {what[result.status]} ({result.size:,} bytes; {check})", highlight=False
        )
        known = f"last known to work {result.last_worked}" if result.last_worked else "your --url"
        console.print(f"  from {result.url} ({known})", highlight=False)
    console.print(f"Next: kerasml ingest {args.name} --from {args.to}", highlight=False)
    return 0


def _cmd_ingest(args, console):
    from kerasml.data import DataError, ingest

    options = {}
    if args.images_per_class is not None:
        if args.name != "procedural":
            raise CLIError("--images-per-class applies to the procedural dataset only.")
        options["images_per_class"] = args.images_per_class
    try:
        result = ingest(
            args.name,
            args.out,
            source_path=args.source,
            classes=args.classes,
            seed=args.seed,
            image_size=args.image_size,
            fit=args.fit,
            strict=args.strict,
            compression=args.compression,
            overwrite=args.overwrite,
            workers=args.workers,
            console=console,
            source_options=options,
        )
    except DataError as error:
        raise CLIError(str(error)) from error
    console.print(
        f"[green]{result.path}[/]: {result.images:,} images, train {result.train_classes} classes / "
        f"{result.train_images:,} images, test {result.test_classes} classes / {result.test_images:,} images "
        f"({result.seconds:.1f} s)",
        highlight=False,
    )
    for path, size in result.removed_partials:
        console.print(
            f"removed {path} ({size / 2**20:,.1f} MiB), left by an earlier ingest that was killed", highlight=False
        )
    for path in result.held_partials:
        console.print(
            f"[yellow]warning:[/] {path} belongs to another ingest of the same store that is still running",
            highlight=False,
        )
    if result.skipped:
        shown = ", ".join(result.skipped_paths[:5])
        console.print(
            f"[yellow]warning:[/] skipped {result.skipped} unreadable image(s), first: {shown}. "
            "Use --strict to fail instead.",
            highlight=False,
        )
    return 0


def _cmd_info(args, console):
    from rich.markup import escape
    from rich.table import Table

    from kerasml.data import StoreError, open_store

    try:
        with open_store(args.file) as store:
            summary = store.summary()
    except StoreError as error:
        raise CLIError(str(error)) from error
    if args.json:
        console.print(json.dumps(summary, indent=2), markup=False, highlight=False, soft_wrap=True)
        return 0
    prov = summary["provenance"]
    table = Table(title=f"kerasml store {escape(summary['path'])}", show_header=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    rows = [
        ("format", summary["format"]),
        ("size on disk", f"{summary['file_bytes'] / 2**20:,.1f} MiB"),
        ("images", f"{summary['images']:,} x {summary['image_shape']} uint8 RGB ({prov.get('fit', '?')} fit)"),
        ("classes", str(summary["classes"])),
    ]
    for split, info in summary["splits"].items():
        rows.append(
            (
                split,
                f"{info['classes']} classes, {info['images']:,} images "
                f"({info['images_per_class_min']}-{info['images_per_class_max']} per class)",
            )
        )
    sampled = prov.get("sampled_class_ids", [])
    rows += [
        ("source", f"{prov.get('source')} ({prov.get('source_path') or 'built in'})"),
        ("split", f"{prov.get('split')}, seed {prov.get('seed')}"),
        ("class ids", ", ".join(map(str, sampled[:12])) + (" ..." if len(sampled) > 12 else "")),
        ("skipped images", str(prov.get("skipped_count", 0))),
        ("written by", f"kerasml {prov.get('kerasml_version')} on {prov.get('created_utc')}"),
    ]
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    console.print(table)
    return 0


def register(commands):
    """Add ``download``, ``ingest`` and ``info`` to the CLI's subparsers.

    Args:
        commands: the object returned by ``parser.add_subparsers(...)``.
    """
    download = commands.add_parser(
        "download",
        help="download a dataset's original files (resumable, checksummed)",
        description="Download the original files of CUB-200-2011, Cars196 or Stanford Online Products. A partial "
        "file is resumed, a finished one verified (checksum) and not fetched again; each file's line says when "
        "its address was last known to work. Cars196's official host has been offline since 2023: the command "
        "lists the known copies instead (docs/datasets.md). Proxies come from http_proxy / https_proxy / no_proxy.",
    )
    download.add_argument("name", choices=DOWNLOADABLE, help="the dataset")
    download.add_argument("--to", type=Path, default=Path("data/raw"), help="target folder (default: data/raw)")
    download.add_argument(
        "--url",
        action="append",
        metavar="URL",
        help="replace an official URL (a URL ending with the file name, a folder URL ending with '/', or one "
        "archive holding the whole dataset); repeatable",
    )
    download.add_argument("--extract", action="store_true", help="also extract the archives (ingest does not need it)")
    download.add_argument("--retries", type=int, default=3, help="further attempts per file (default: 3)")
    download.add_argument(
        "--timeout", type=float, default=60.0, help="seconds without data before retrying (default: 60)"
    )
    download.set_defaults(handler=_cmd_download)

    ingest = commands.add_parser(
        "ingest",
        help="write a dataset into an HDF5 store (class sampling, 50/50 class split)",
        description="Decode a dataset with OpenCV, fit every image to a square (--fit crop: shorter side to "
        "--image-size then centre crop; pad: longer side, black borders) and write images, labels, class names, "
        "the split and provenance into one HDF5 file (a temporary name renamed at the end). With --classes N, N "
        "classes are drawn at random (--seed) and split 50/50 by class (the study's -n N); without it the "
        "dataset's standard split is used.",
    )
    ingest.add_argument("name", choices=INGESTIBLE, help="the dataset")
    ingest.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        help="the original archive or folder (default: data/raw; not needed for digits and procedural)",
    )
    ingest.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the store to write (default: a file under data/ named after the dataset and the class count)",
    )
    ingest.add_argument("-n", "--classes", type=positive_int, default=None, help="classes to sample (the study's -n)")
    ingest.add_argument("--seed", type=int, default=0, help="seed of the class draw (default: 0)")
    ingest.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="stored square side in pixels (default: 256; 32 for digits, 64 for procedural)",
    )
    ingest.add_argument("--fit", choices=("crop", "pad"), default="crop", help="keep the aspect by centre crop or pad")
    ingest.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    ingest.add_argument("--overwrite", action="store_true", help="replace an existing store")
    ingest.add_argument("--compression", choices=("none", "lzf", "gzip"), default="none", help="image compression")
    ingest.add_argument("--workers", type=positive_int, default=None, help="decoding threads (default: up to 4)")
    ingest.add_argument(
        "--images-per-class", type=positive_int, default=None, help="procedural only: images per class (default 20)"
    )
    ingest.set_defaults(handler=_cmd_ingest)

    info = commands.add_parser(
        "info",
        help="summarise a kerasml HDF5 store",
        description="Summarise a store (images, classes, split, provenance); exit status 2 if the file is not a "
        "valid, complete kerasml store.",
    )
    info.add_argument("file", type=Path, help="the .h5 store")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(handler=_cmd_info)
