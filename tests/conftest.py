import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
REAL_DATA = os.path.abspath(os.path.join(SHARED, "data", "msa-seg-track-train"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's cache (built-in datasets, last model), and the
    model one test trains is never the "most recent model" of the next (test order must not
    matter): the shared test cache forgets it after each test."""
    own = "TEMTOOL_CACHE" not in os.environ
    if own:
        monkeypatch.setenv("TEMTOOL_CACHE", str(tmp_path_factory.getbasetemp() / "temtool-cache"))
    yield
    if own:  # never touch a cache the caller chose
        from temtool.data.dataset import cache_dir

        (cache_dir() / "last_model.txt").unlink(missing_ok=True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def run_cli(capsys):
    """Run the temtool CLI in-process; returns (exit code, stdout, stderr)."""
    from temtool.cli import main

    def run(*args):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """Ten 64x64 simulated standard-TEM images (a dataset folder)."""
    from temtool.data.dataset import write_simulated_dataset

    d = tmp_path_factory.mktemp("small") / "data"
    write_simulated_dataset(
        d,
        regime="standard",
        n=10,
        size=64,
        overrides={"pixel_size_nm": 0.5, "diameter_nm": 10.0, "particles_per_256px2": (16.0, 24.0)},
    )
    return d
