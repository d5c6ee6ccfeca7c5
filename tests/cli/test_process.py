"""The command line's process settings (temtool.cli.process): set before NumPy loads, and
only in the console script's own process."""

import os
import subprocess
import sys
import textwrap

import numpy as np

from temtool.data.io import write_tiff


def _python(script: str, *args: str) -> str:
    """What ``script`` prints, run in a fresh Python process."""
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_console_script_configures_segment_only_and_keeps_the_users_values(monkeypatch):
    from temtool.cli import process

    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    process.configure_process(["--debug", "rf", "--pool", "2"])
    assert "NUMPY_MADVISE_HUGEPAGE" not in os.environ
    process.configure_process(["segment", "a.tif"])
    assert os.environ["NUMPY_MADVISE_HUGEPAGE"] == "0"
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    process.configure_process(["segment", "a.tif"])
    assert os.environ["NUMPY_MADVISE_HUGEPAGE"] == "1"


def test_in_process_commands_leave_the_process_alone(run_cli, tmp_path, monkeypatch):
    """A library user calling main() keeps their environment."""
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    f = tmp_path / "m.tif"
    write_tiff(f, np.random.default_rng(0).random((64, 64)).astype(np.float32), 0.5)
    code, _, err = run_cli("segment", f, "--method", "fourier", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    assert "NUMPY_MADVISE_HUGEPAGE" not in os.environ


# `temtool segment` of a small micrograph through the console script's entry, in a fresh process
SEGMENT_PROCESS = textwrap.dedent(
    """
    import sys
    from temtool.cli import run
    sys.argv = ["temtool", "segment", sys.argv[1], "--out", sys.argv[2], "--json"]
    try:
        run()
    except SystemExit as e:
        assert not e.code, e.code
    import numpy
    print("huge pages:", numpy._core.multiarray._get_madvise_hugepage())
    """
)


def test_segment_process_starts_numpy_without_huge_page_advice(tmp_path, monkeypatch):
    """The console script starts NumPy without its transparent-huge-page advice for
    `segment`, unless the user's environment asks for it."""
    from temtool.data.simulate import config_for, simulate_image

    f = tmp_path / "m.tif"
    write_tiff(f, simulate_image(config_for("standard", pixel_size_nm=0.5), 128, seed=1).image, 0.5)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    assert _python(SEGMENT_PROCESS, str(f), str(tmp_path / "out")).splitlines()[-1] == "huge pages: False"
    assert (tmp_path / "out" / "m_mask.png").is_file()
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    assert _python(SEGMENT_PROCESS, str(f), str(tmp_path / "o2")).splitlines()[-1] == "huge pages: True"
