"""Shared pytest set-up. The Keras backend comes from KERAS_BACKEND (one per process)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest

# Tests marked `cross_backend` run the other two backends in subprocesses and compare: once per CI
# run is enough, so they run in the pass of this backend (or anywhere with KERASML_CROSS_BACKEND=1).
CROSS_BACKEND_HOME = "tensorflow"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        f"cross_backend: compares tensorflow, torch and jax through subprocesses; runs in the {CROSS_BACKEND_HOME} "
        "pass (or with KERASML_CROSS_BACKEND=1)",
    )
    config.addinivalue_line(
        "markers",
        "multiprocess: starts subprocesses with several devices or ranks (2 logical CPUs, 2 forced host "
        "devices, 2 gloo processes); deselect with -m 'not multiprocess'",
    )


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == CROSS_BACKEND_HOME or os.environ.get("KERASML_CROSS_BACKEND") == "1":
        return
    skip = pytest.mark.skip(
        reason=f"cross-backend comparison: runs once, in the {CROSS_BACKEND_HOME} pass (KERASML_CROSS_BACKEND=1 forces)"
    )
    for item in items:
        if "cross_backend" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
