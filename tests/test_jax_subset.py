"""Runs the tests marked ``jax`` again under KERAS_BACKEND=jax, in a fresh interpreter."""

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax", reason="already the JAX run")
def test_jax_subset_passes():
    pytest.importorskip("jax", reason="install the test extra: pip install -e '.[test]'")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    here = os.path.dirname(__file__)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "jax", "-p", "no:cacheprovider", here],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail.split("\n")[-2], tail
