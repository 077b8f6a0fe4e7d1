"""A .keras HDMLModel saved under one backend loads under the others with the same numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from cross_backend_model import load, save

BACKENDS = ("tensorflow", "torch", "jax")
SCRIPT = Path(__file__).with_name("cross_backend_model.py")


def _load_on(backend, folder):
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "load", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.cross_backend
def test_saved_model_gives_the_same_embeddings_and_terms_on_every_backend(tmp_path):
    save(tmp_path)
    here = keras.backend.backend()
    results = {here: load(tmp_path)}
    for backend in BACKENDS:
        if backend != here:
            results[backend] = _load_on(backend, tmp_path)
    reference = results[here]
    embeddings = np.array(reference["embeddings"])
    assert embeddings.shape == (12, 8) and np.abs(embeddings).max() > 0
    assert set(reference["terms"]) == {"J_m", "J_syn", "J_metric", "J_recon", "J_soft", "J_gen", "J_cls", "w"}
    for backend, result in results.items():
        np.testing.assert_allclose(
            np.array(result["embeddings"]), embeddings, rtol=1e-4, atol=1e-5, err_msg=f"embeddings on {backend}"
        )
        for name, value in reference["terms"].items():
            assert result["terms"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), f"{name} on {backend}"
