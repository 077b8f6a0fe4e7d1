"""The bottom of the CLI: the error type, exit statuses, consoles and shared argument helpers.

Every command module imports from here and from the library; nothing here imports a command
module, Keras or a framework, so ``kerasml --help`` stays fast.
"""

import argparse
import contextlib
import os
import sys

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CLIError",
    "add_set_argument",
    "load_framework",
    "make_console",
    "positive_int",
    "quiet_framework_logs",
    "tensorflow_hidden",
    "tolerate_any_encoding",
]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Off a terminal Rich would squeeze tables into 80 columns (or $COLUMNS) and cut names short
# ("LiftedStructureL…"); a log file has no width, so tables get room for their natural width.
OFF_TERMINAL_WIDTH = 200


class CLIError(Exception):
    """A known bad input: printed to stderr as a message, exit status 2, no traceback."""


def make_console(stderr=False):
    """A Rich console for the CLI's output (``stderr=True``: for errors and warnings).

    Long lines are never wrapped by Rich (``soft_wrap``): a message or a command is never
    broken mid-phrase when the output goes to a file or a pipe; a terminal wraps it itself.
    Off a terminal, tables get at least ``OFF_TERMINAL_WIDTH`` columns so that they keep
    their natural width.

    Args:
        stderr: write to standard error instead of standard output. Defaults to ``False``.

    Returns:
        A `rich.console.Console`.
    """
    from rich.console import Console

    tolerate_any_encoding(sys.stderr if stderr else sys.stdout)
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, OFF_TERMINAL_WIDTH)
    return console


def tolerate_any_encoding(stream):
    """Make ``stream`` replace the characters its encoding lacks instead of raising `UnicodeEncodeError`.

    A redirected ``kerasml ... > out.txt`` on Windows writes cp1252 (``PYTHONIOENCODING=ascii``
    writes ASCII): '→' or '…' become '?' there, while a UTF-8 stream is unchanged. Rich itself
    draws tables with ASCII lines when the encoding is not UTF-8.

    Args:
        stream: a text stream (``sys.stdout``); one without ``reconfigure`` is left as it is.
    """
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    if encoding.startswith("utf"):
        return
    with contextlib.suppress(AttributeError, ValueError, OSError, TypeError):
        stream.reconfigure(errors="replace")


def positive_int(text):
    """An ``argparse`` type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_set_argument(parser):
    """Add the repeatable ``--set KEY=VALUE`` spec override to ``parser``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key; the value is read as TOML (train.batch_size=32, model.hdml=false, "
        'eval.ks=[1,2,4], data.path="data/cub-20.h5"; a bare word is taken as a string); repeatable, applied '
        "in order",
    )


def quiet_framework_logs():
    """Keep TensorFlow's C++ start-up lines (absl, oneDNN, CUDA probing) off the console.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user has set it (then nothing here changes:
    their level and TensorFlow's own output stay). Call it before any framework import.

    Returns:
        ``True`` when the user had not chosen a level, i.e. the framework may be loaded quietly.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return True


@contextlib.contextmanager
def _native_stderr_silenced():
    # TensorFlow's shared libraries log from C++ while they load (before any level applies),
    # straight to file descriptor 2; Python's sys.stderr cannot catch that, so the descriptor
    # is pointed at the null device for the duration of the import. Python exceptions raised
    # inside still propagate (and print) after it is restored.
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (e.g. a windowed interpreter)
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def load_framework():
    """Import Keras (and so its backend) quietly, once, before a command that needs it.

    The native start-up lines are hidden while ``TF_CPP_MIN_LOG_LEVEL`` is 3 (the CLI's default,
    see `quiet_framework_logs`); with a lower level set by the user, the import prints whatever
    the framework prints.
    """
    if "keras" in sys.modules:
        return
    quiet_framework_logs()
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3":
        with _native_stderr_silenced():
            import keras
    else:
        import keras  # noqa: F401


@contextlib.contextmanager
def tensorflow_hidden():
    """While a command runs on JAX or PyTorch, keep TensorFlow out of the process.

    Keras imports TensorFlow whenever it is installed, whatever the backend
    (`keras.utils.set_random_seed` seeds it, saving a model checks for its types): seconds of
    start-up, memory and TensorFlow's console lines that a JAX or PyTorch user has no use for.
    Inside this context ``import tensorflow`` raises `ImportError` (``sys.modules`` maps it to
    ``None``), which Keras treats as "not installed"; the entry is removed on exit. Nothing
    changes on the TensorFlow backend or when TensorFlow is already imported.
    """
    import keras

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        yield
        return
    sys.modules["tensorflow"] = None
    try:
        yield
    finally:
        if "tensorflow" in sys.modules and sys.modules["tensorflow"] is None:
            del sys.modules["tensorflow"]
