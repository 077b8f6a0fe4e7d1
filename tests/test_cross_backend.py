"""The same NumPy batch gives the same loss on tensorflow, torch and jax."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from cross_backend_values import compute

BACKENDS = ("tensorflow", "torch", "jax")
SCRIPT = Path(__file__).with_name("cross_backend_values.py")


def _values_on(backend):
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def all_values():
    here = keras.backend.backend()
    values = {here: compute()}
    for backend in BACKENDS:
        if backend != here:
            values[backend] = _values_on(backend)
    return values


@pytest.mark.cross_backend
def test_losses_and_gradients_agree_across_backends(all_values):
    reference = all_values[keras.backend.backend()]
    assert len(reference) == 9
    for backend, values in all_values.items():
        for name, (value, grad_norm) in reference.items():
            other_value, other_grad = values[name]
            assert value > 0.0, f"{name}: a zero loss compares nothing"
            assert other_value == pytest.approx(value, rel=1e-5, abs=1e-7), f"{name} on {backend}"
            assert other_grad == pytest.approx(grad_norm, rel=1e-4, abs=1e-7), f"{name} grad on {backend}"
