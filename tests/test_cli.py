"""The ``kerasml`` command line: its package structure, help, errors, start-up and TensorBoard logs."""

import argparse
import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasml.cli import CLIError, build_parser, main
from kerasml.cli import data as data_commands
from kerasml.reporting import TensorBoardLogger, drop_events_after

ROOT = Path(__file__).resolve().parents[1]
CLI_DIR = ROOT / "kerasml" / "cli"
FRAMEWORKS = ("keras", "tensorflow", "torch", "jax")
COMMANDS = ("losses", "download", "ingest", "info", "weights", "validate", "run", "evaluate", "embed", "compare")


def _python(code, cwd=ROOT, timeout=600, **env):
    """Run ``code`` in a fresh interpreter; ``env`` adds variables (``None`` removes one)."""
    environment = {**os.environ, **env}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={name: value for name, value in environment.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


# --------------------------------------------------------------------------- structure
def _imports(path):
    """Every ``(module, name)`` a file imports; ``name`` is None for ``import module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_command_modules_import_only_the_base_of_the_cli():
    commands = [p for p in CLI_DIR.glob("*.py") if p.stem not in ("__init__", "_base", "main")]
    assert sorted(p.stem for p in commands) == ["compare", "data", "experiment", "losses", "spec", "weights"]
    for path in [*commands, CLI_DIR / "_base.py"]:
        for module, _ in _imports(path):
            if module.startswith("kerasml.cli"):
                assert path.stem != "_base", f"_base.py imports {module}: it must stay at the bottom"
                assert module == "kerasml.cli._base", f"{path.name} imports {module}: import kerasml.cli._base only"


SHARED_PRIVATE = ("kerasml._backend", "kerasml._validation", "kerasml._version")


def test_cli_imports_no_private_name_of_another_module():
    for path in CLI_DIR.glob("*.py"):
        for module, name in _imports(path):
            if module.startswith("kerasml") and not module.startswith("kerasml.cli"):
                if module in SHARED_PRIVATE:  # the layer-0 modules every layer may use (tests/test_architecture.py)
                    continue
                parts = (*module.split("."), name or "")
                private = [part for part in parts if part.startswith("_") and not part.endswith("__")]
                assert not private, f"{path.name} imports {module}.{name}: use the public API"


def test_old_command_modules_are_gone():
    for old in ("cli.py", "spec_commands.py", "experiment_commands.py", "data/commands.py"):
        assert not (ROOT / "kerasml" / old).exists()


def test_data_command_choices_match_the_data_package():
    from kerasml import data

    assert set(data_commands.DOWNLOADABLE) == set(data.REMOTES)
    assert set(data_commands.INGESTIBLE) == set(data.SOURCES)


# --------------------------------------------------------------------------- help
def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_help_lists_every_command_and_every_argument(capsys):
    parser = build_parser()
    commands = _subparsers(parser)
    assert set(commands) == set(COMMANDS)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    top = capsys.readouterr().out
    for command in COMMANDS:
        assert command in top
    for command, subparser in commands.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for action in subparser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"`kerasml {command}` argument {action.dest!r} has no help line"
            shown = action.option_strings[0] if action.option_strings else (action.metavar or action.dest)
            assert shown in text, f"`kerasml {command} --help` does not list {shown}"
            assert " ".join(action.help.split()[:3]) in text


def test_usage_errors_go_to_stderr(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage: kerasml" in captured.err
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "not-a-dataset"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "invalid choice" in captured.err


# --------------------------------------------------------------------------- errors
def test_errors_go_to_stderr_with_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.h5"
    assert main(["info", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{missing} does not exist" in captured.err and "Traceback" not in captured.err

    assert main(["run", "--resume", str(tmp_path / "no-run")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"{tmp_path / 'no-run'} does not exist" in captured.err

    (tmp_path / "empty").mkdir()
    for command in (["evaluate", str(tmp_path / "empty")], ["run", "--resume", str(tmp_path / "empty")]):
        assert main(command) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "is not a kerasml run folder: it has no spec.toml" in captured.err

    assert main(["run"]) == 2
    assert "needs a SPEC file" in capsys.readouterr().err


def test_errors_are_not_wrapped_off_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    missing = tmp_path / ("a-rather-long-folder-name-" * 3) / "a-store-that-is-not-there.h5"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "error:" in line)
    assert str(missing) in line and f"`kerasml ingest NAME --out {missing}`" in line
    assert line.rstrip().endswith("or point to the store you meant.")


def test_unexpected_failure_is_an_internal_error(capsys, monkeypatch):
    def broken(args, console):
        raise RuntimeError("boom")

    monkeypatch.setattr(data_commands, "_cmd_info", broken)
    assert main(["info", "x.h5"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "internal error: RuntimeError: boom" in captured.err
    assert "--verbose" in captured.err
    assert main(["info", "x.h5", "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_cli_error_message_is_printed_verbatim(capsys, monkeypatch):
    def failing(args, console):
        raise CLIError("a [bold]message[/bold] with markup-like text")

    monkeypatch.setattr(data_commands, "_cmd_info", failing)
    assert main(["info", "x.h5"]) == 2
    assert "error: a [bold]message[/bold] with markup-like text" in capsys.readouterr().err


def test_tables_are_not_truncated_off_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    assert "LiftedStructureLoss" in out and "…" not in out


# --------------------------------------------------------------------------- start-up
def test_light_commands_import_no_framework(tmp_path):
    """``--help``, ``download``, ``ingest`` and ``info`` never load Keras or a framework."""
    done = _python(
        f"""
        import json, sys
        import kerasml.cli as cli

        def loaded():
            return sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)

        seen = {{}}
        try:
            cli.main(["--help"])
        except SystemExit:
            pass
        seen["--help"] = loaded()
        store = {str(tmp_path / "digits.h5")!r}
        seen["ingest"] = [cli.main(["ingest", "digits", "--out", store, "--image-size", "8"]), loaded()]
        seen["info"] = [cli.main(["info", store]), loaded()]
        url = "http://127.0.0.1:9/"  # nothing listens: the download fails fast, exit 2
        args = ["download", "cub", "--to", {str(tmp_path / "raw")!r}, "--url", url, "--retries", "0", "--timeout", "2"]
        seen["download"] = [cli.main(args), loaded()]
        print(json.dumps(seen))
        """,
        KERAS_BACKEND=keras.backend.backend(),
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"--help": [], "ingest": [0, []], "info": [0, []], "download": [2, []]}


def test_import_kerasml_is_lazy():
    done = _python(
        f"""
        import sys
        import kerasml
        assert kerasml.__version__
        print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))
        print(kerasml.MetricModel.__name__, kerasml.HDMLModel.__name__, kerasml.losses.__name__)
        """
    )
    assert done.stdout.splitlines() == ["[]", "MetricModel HDMLModel kerasml.losses"]


def test_python_dash_m_kerasml_help():
    done = subprocess.run(
        [sys.executable, "-m", "kerasml", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and "usage: kerasml" in done.stdout


# --------------------------------------------------------------------------- TensorBoard
def _scalars(log_dir):
    """``{tag: {step: value}}`` of every event file in ``log_dir``, read by TensorBoard's own loader.

    It runs in a subprocess that makes TensorBoard use its TensorFlow-free reader.
    """
    done = _python(
        f"""
        import json, sys, types
        from pathlib import Path
        sys.modules["tensorboard.compat.notf"] = types.ModuleType("notf")  # TensorBoard's no-TF switch
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
        from tensorboard.util.tensor_util import make_ndarray

        found = {{}}
        for path in sorted(Path({str(log_dir)!r}).glob("*tfevents*")):
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    steps = found.setdefault(value.tag, {{}})
                    assert str(event.step) not in steps, f"step {{event.step}} of {{value.tag}} written twice"
                    number = value.simple_value if value.HasField("simple_value") else make_ndarray(value.tensor)
                    steps[str(event.step)] = float(number)
        print(json.dumps(found))
        """
    )
    return {tag: {int(step): value for step, value in steps.items()} for tag, steps in json.loads(done.stdout).items()}


def test_tensorboard_logger_writes_steps_and_never_repeats_one_after_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path, update_freq=2)
    logger.on_train_begin()
    for batch in range(6):
        logger.on_train_batch_end(batch, {"loss": np.float32(batch + 0.5), "J_m": batch, "vector": np.ones(3)})
    logger.log_evaluation(6, {"recall@1": 0.75})
    logger.on_train_end()
    assert _scalars(tmp_path) == {
        "train/loss": {2: 1.5, 4: 3.5, 6: 5.5},
        "train/J_m": {2: 1.0, 4: 3.0, 6: 5.0},
        "eval/recall_1": {6: 0.75},
    }
    # resumed from the checkpoint of step 2: steps 3.. are written again, each once, with the new values
    resumed = TensorBoardLogger(tmp_path, start_step=2, update_freq=2, last_step=7)
    resumed.on_train_begin()
    for batch in range(5):
        resumed.on_train_batch_end(batch, {"loss": 10.0 + batch})
    resumed.on_train_end()
    assert _scalars(tmp_path) == {"train/loss": {2: 1.5, 4: 11.0, 6: 13.0, 7: 14.0}, "train/J_m": {2: 1.0}}


def test_drop_events_after_ignores_a_torn_tail(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    for step in (1, 2, 3):
        logger.write_scalars("train", {"loss": float(step)}, step)
    logger.close()
    (path,) = tmp_path.glob("*tfevents*")
    path.write_bytes(path.read_bytes()[:-5])  # a writer killed inside its last record
    assert drop_events_after(tmp_path, 1) == 1  # step 2 removed; the torn step-3 record is not a record
    assert drop_events_after(tmp_path, 1) == 0
    assert drop_events_after(tmp_path / "missing", 0) == 0


def test_tensorboard_logger_rejects_a_bad_update_freq(tmp_path):
    with pytest.raises(ValueError, match="Invalid value for argument `update_freq`"):
        TensorBoardLogger(tmp_path, update_freq=0)


def test_run_writes_tensorboard_without_tensorflow(tmp_path):
    """A short ``kerasml run``: event files equal to metrics.jsonl, no TensorFlow off the TF backend,
    and no framework start-up lines on any backend."""
    pytest.importorskip("tensorboard")
    backend = keras.backend.backend()
    done = _python(
        f"""
        import json, sys
        from kerasml.cli import main

        rc = main([
            "run", "specs/quickstart.toml",
            "--set", "train.max_steps=4", "--set", "train.eval_every=4", "--set", "train.log_every=2",
            "--set", "experiment.output_dir={(tmp_path / "runs").as_posix()}",
        ])
        print(json.dumps([rc, "tensorflow" in sys.modules]))
        """,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL=None,  # the CLI's own default applies
    )
    rc, tensorflow_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert rc == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if backend != "tensorflow":
        assert not tensorflow_loaded
    for noise in ("absl", "I0000", "E0000", "oneDNN", "cuda"):
        assert noise not in done.stderr and noise not in done.stdout, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    scalars = _scalars(run_dir / "tensorboard")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    compared = 0
    for record in records:
        prefix = {"train": "train", "eval": "eval"}[record["type"]]
        for name, value in record.items():
            if name in ("type", "step", "time"):
                continue
            tag = f"{prefix}/{name}".replace("@", "_")
            assert scalars[tag][record["step"]] == pytest.approx(value, rel=1e-6), tag
            compared += 1
    assert compared >= 3 and {r["type"] for r in records} == {"train", "eval"}


def test_reporting_docstring_examples():
    import doctest

    import kerasml.reporting

    result = doctest.testmod(kerasml.reporting, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- any console, any platform
_ENCODING_SPEC = """
[experiment]
name = "encoding"
seed = 1
output_dir = "{runs}"
[data]
builtin = "digits"
image_size = 16
[model]
backbone = "small_cnn"
backbone_options = {{feature_dim = 16, filters = [8, 8]}}
embedding_dim = 8
[hdml]
generator_units = 16
block_size = 4
[loss]
type = "npair"
[train]
batch_size = 10
max_steps = 10
log_every = 5
eval_every = 10
checkpoint_every = 10
[eval]
ks = [1, 2]
metrics = ["recall", "nmi", "f1"]
batch_size = 256
"""


@pytest.mark.parametrize("encoding", ["cp1252", "ascii"])
def test_every_command_works_under_any_stdout_encoding(tmp_path, encoding):
    store = tmp_path / "digits.h5"
    bad = tmp_path / "bad.toml"
    bad.write_text('[experiment]\nname = "a→b"\n[train]\nbatch_size = "many"\n', encoding="utf-8")
    spec = tmp_path / "tiny.toml"
    spec.write_text(_ENCODING_SPEC.format(runs=(tmp_path / "runs").as_posix()), encoding="utf-8")
    commands = [
        (["--help"], 0),
        (["run", "--help"], 0),
        (["losses"], 0),
        (["validate", "specs/sop_npair_hdml.toml", "--no-check-files"], 0),
        (["validate", str(bad)], 2),
        (["ingest", "digits", "--out", str(store), "--image-size", "8"], 0),
        (["info", str(store)], 0),
        (["run", str(spec)], 0),
    ]
    env = {**os.environ, "PYTHONIOENCODING": encoding, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for argv, status in commands:
        done = subprocess.run(
            [sys.executable, "-m", "kerasml", *argv], cwd=ROOT, env=env, capture_output=True, timeout=600, check=False
        )
        both = (done.stdout + done.stderr).decode(encoding, errors="replace")
        assert done.returncode == status, (argv, both[-3000:])
        assert "Traceback" not in both and "UnicodeEncodeError" not in both, (argv, both[-3000:])
        done.stdout.decode(encoding)  # what kerasml wrote is valid in the console's encoding
        assert done.stdout.strip() or done.stderr.strip(), argv


# Calls and modules that exist only on POSIX systems: kerasml must run on Windows too.
POSIX_ONLY_MODULES = {"fcntl", "pwd", "grp", "resource", "termios", "tty", "pty", "posix", "crypt", "syslog"}
POSIX_ONLY_ATTRIBUTES = {
    "os": {
        "fork",
        "forkpty",
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "getpgid",
        "setpgid",
        "setsid",
        "killpg",
        "wait3",
        "wait4",
        "nice",
        "mkfifo",
        "chown",
        "lchown",
        "getloadavg",
        "sched_getaffinity",
        "uname",
    },
    "signal": {
        "SIGKILL",
        "SIGALRM",
        "SIGHUP",
        "SIGUSR1",
        "SIGUSR2",
        "SIGCHLD",
        "SIGQUIT",
        "SIGPIPE",
        "alarm",
        "setitimer",
        "pause",
        "siginterrupt",
        "pthread_kill",
        "pthread_sigmask",
    },
}


def _guarded(node, parents):
    # `try: os.sched_getaffinity(...) except AttributeError: <portable fallback>` is allowed.
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if any(isinstance(n, ast.Name) and n.id == "AttributeError" for n in names):
                    return True
    return False


def test_kerasml_makes_no_posix_only_call():
    found = []
    for path in sorted((ROOT / "kerasml").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                found += [f"{where} import {a.name}" for a in node.names if a.name in POSIX_ONLY_MODULES]
            elif isinstance(node, ast.ImportFrom) and node.module in POSIX_ONLY_MODULES:
                found.append(f"{where} from {node.module} import ...")
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.attr in POSIX_ONLY_ATTRIBUTES.get(node.value.id, ())
                and not _guarded(node, parents)
            ):
                found.append(f"{where} {node.value.id}.{node.attr}")
    assert not found, "POSIX-only calls (they fail on Windows): " + ", ".join(found)


def test_windows_ci_job_runs_the_readme_test_command():
    job = (ROOT / ".ci" / "windows.yml").read_text(encoding="utf-8")
    assert "windows-latest" in job
    assert "python -m pytest tests -q" in job
    for backend in ("tensorflow", "torch", "jax"):
        assert backend in job
