import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import small_resunet  # noqa: E402


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
        from temtool.model.registry import last_model_file

        last_model_file().unlink(missing_ok=True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def run_cli(capsys):
    """Run the temtool CLI in-process; returns (exit code, stdout, stderr)."""
    from temtool.cli.app import main

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


@pytest.fixture
def small_bundle(tmp_path):
    """A bundle of an untrained depth-2 network at 0.5 nm/px."""
    from temtool.model.bundle import write_bundle

    arch, model = small_resunet("2,2")
    return write_bundle(tmp_path / "m", model, arch, pixel_size_nm=0.5)
