"""The ``weights`` command of the ``kerasml`` CLI: pretrained backbone weights in one command.

``kerasml weights googlenet`` downloads torchvision's ImageNet GoogLeNet (``googlenet-1378be20.pth``)
with the resumable, checksummed downloader of `kerasml.data` and converts it to a Keras
``.weights.h5`` file for ``googlenet(variant="torchvision")`` (see
`kerasml.models.backbones.convert_torchvision_googlenet`); ``--from FILE.pth`` converts a file you
already have. Every known bad input is raised as `CLIError` (exit status 2, a message on stderr).
"""

import os
from pathlib import Path

from kerasml.cli._base import CLIError

__all__ = ["CONVERTIBLE", "DEFAULT_OUT", "register"]

# Written out so that building the parser imports no model module (tests/test_googlenet_torchvision.py
# checks them against kerasml.models.backbones).
CONVERTIBLE = ("googlenet",)
DEFAULT_OUT = "weights/googlenet_torchvision_imagenet.weights.h5"


def _download(args, folder, console):
    """The verified ``googlenet-1378be20.pth`` in ``folder``: fetched, resumed or already there."""
    from kerasml.data import DataError, download_file
    from kerasml.models import backbones

    url = args.url or backbones.TORCHVISION_GOOGLENET_URL
    prefix = backbones.TORCHVISION_GOOGLENET_SHA256_PREFIX
    dest = folder / backbones.TORCHVISION_GOOGLENET_URL.rsplit("/", 1)[-1]
    try:
        result = download_file(url, dest, retries=args.retries, timeout=args.timeout, console=console)
    except DataError as error:
        where = f"This address last worked {backbones.TORCHVISION_GOOGLENET_LAST_WORKED}." if not args.url else ""
        raise CLIError(
            f"{error} {where} If you have the file, convert it with `kerasml weights googlenet --from FILE.pth`."
        ) from error
    if not result.sha256.startswith(prefix):
        kept = dest.with_name(dest.name + ".mismatch")
        os.replace(dest, kept)
        raise CLIError(
            f"{dest.name} from {url} has SHA-256 {result.sha256}, which does not start with {prefix} (the digits "
            f"torchvision publishes in its name). Nothing was deleted: the file is kept as {kept}. The transfer was "
            "corrupted or the host serves another file: delete it and run the command again."
        )
    what = {"present": "already there, verified", "downloaded": "downloaded", "resumed": "resumed, complete"}
    console.print(
        f"[green]{dest}[/]: {what[result.status]} ({result.size:,} bytes; SHA-256 starts with {prefix} ok)",
        highlight=False,
    )
    known = f"last known to work {backbones.TORCHVISION_GOOGLENET_LAST_WORKED}" if not args.url else "your --url"
    console.print(f"  from {url} ({known})", highlight=False)
    return dest


def _cmd_weights(args, console):
    from kerasml.models import backbones

    out = Path(args.to)
    if not out.name.endswith(".weights.h5"):
        raise CLIError(f"--to {out}: the file name must end with .weights.h5 (Keras' weights format).")
    if args.source is not None:
        source = Path(args.source)
        if not source.is_file():
            raise CLIError(
                f"--from {source}: no such file. Pass the googlenet-1378be20.pth you downloaded, or leave --from out "
                "to download it."
            )
    else:
        source = _download(args, out.parent, console)
    try:
        backbones.convert_torchvision_googlenet(source, out)
    except ImportError as error:
        raise CLIError(str(error)) from error
    except (ValueError, OSError) as error:
        raise CLIError(f"Cannot convert {source}: {error}") from error
    console.print(
        f"[green]{out}[/]: torchvision's ImageNet GoogLeNet as Keras weights (every backend loads them)",
        highlight=False,
    )
    console.print(
        f'Use it: backbone = "googlenet", backbone_options = {{ variant = "torchvision" }}, weights = '
        f'"{out.as_posix()}" under [model] (the study specs point at {DEFAULT_OUT}).',
        highlight=False,
        markup=False,
    )
    return 0


def register(commands):
    """Add ``weights`` to the CLI's subparsers.

    Args:
        commands: the object returned by ``parser.add_subparsers(...)``.
    """
    weights = commands.add_parser(
        "weights",
        help="download and convert pretrained backbone weights (ImageNet GoogLeNet)",
        description="Download torchvision's ImageNet GoogLeNet (googlenet-1378be20.pth, ~50 MB; resumable, its "
        "SHA-256 checked against the digits in its name) next to the output, and convert it to a Keras "
        '.weights.h5 file that every backend loads, for the googlenet backbone with variant = "torchvision". '
        "Reading the .pth needs PyTorch (pip install torch); the converted file does not. Proxies come from "
        "http_proxy / https_proxy / no_proxy.",
    )
    weights.add_argument("name", choices=CONVERTIBLE, help="the backbone whose weights to fetch")
    weights.add_argument(
        "--to",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="PATH",
        help=f"the .weights.h5 file to write (default: {DEFAULT_OUT})",
    )
    weights.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="FILE.pth",
        default=None,
        help="convert this googlenet-1378be20.pth (or another state dict of torchvision's GoogLeNet) instead of "
        "downloading",
    )
    weights.add_argument(
        "--url", default=None, metavar="URL", help="download from this address instead (a mirror of the .pth)"
    )
    weights.add_argument("--retries", type=int, default=3, metavar="N", help="further download attempts (default: 3)")
    weights.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds without data before retrying (default: 60)",
    )
    weights.set_defaults(handler=_cmd_weights, framework=True)
