"""The command line's process settings (temtool.cli.process): the allocator keeps freed
micrograph-sized arrays for reuse, environment defaults are set before NumPy loads, and only
the console script's own process gets them."""

import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from temtool.data.io import write_tiff

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# allocates and fills four 16 MB arrays at once and frees them, 20 times (as a micrograph's
# steps do); prints the page faults of the last 19 times
FAULTS = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    if sys.argv[1] == "keep":
        from temtool.cli.process import keep_freed_memory
        assert keep_freed_memory()
    def fill():
        arrays = [np.empty((2048, 2048), np.float32) for _ in range(4)]
        for a in arrays:
            a.fill(1.0)
        del arrays
    fill()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(19):
        fill()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _python(script: str, *args: str) -> str:
    """What ``script`` prints, run in a fresh Python process."""
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's; elsewhere keep_freed_memory does nothing")
def test_freed_arrays_are_reused_without_new_page_faults():
    """Under glibc's defaults part of the freed memory goes back to the kernel at every round
    (the top of the heap beyond its trim threshold: about 8 MB here) and is faulted in again;
    with keep_freed_memory it is reused."""
    default, keep = int(_python(FAULTS, "default")), int(_python(FAULTS, "keep"))
    assert default >= 19 * 8  # at least 16 MB a round, even in 2 MB (huge) pages
    assert keep * 10 < default  # here about 2,000 faults a round against none


def test_keep_freed_memory_reports_where_it_applies(monkeypatch):
    from temtool.cli import process as memory

    assert memory.keep_freed_memory() is GLIBC
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.keep_freed_memory() is False


def test_console_script_configures_only_its_own_process(monkeypatch):
    """``segment`` gets the segment defaults and the allocator setting, other commands the
    general defaults only; a value the user set is kept."""
    from temtool.cli import process

    calls = []
    monkeypatch.setattr(process, "keep_freed_memory", lambda: calls.append(1) or True)
    for name in ("NUMPY_MADVISE_HUGEPAGE", "OPENBLAS_THREAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    process.configure_process(["--debug", "rf", "--pool", "2"])
    assert calls == [] and "NUMPY_MADVISE_HUGEPAGE" not in os.environ
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "4"
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    process.configure_process(["segment", "a.tif"])
    assert calls == [1] and os.environ["NUMPY_MADVISE_HUGEPAGE"] == "0"
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "28"


def test_in_process_commands_leave_the_process_alone(run_cli, tmp_path, monkeypatch):
    """A library user calling main() keeps their allocator and environment."""
    from temtool.cli import process

    calls = []
    monkeypatch.setattr(process, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    write_tiff(tmp_path / "m.tif", np.random.default_rng(0).random((64, 64)).astype(np.float32), 0.5)
    code, _, err = run_cli(
        "segment", tmp_path / "m.tif", "--method", "fourier", "--out", tmp_path / "o", "--json"
    )
    assert code == 0, err
    assert calls == [] and "NUMPY_MADVISE_HUGEPAGE" not in os.environ


# what OpenBLAS's worker threads (NumPy's, SciPy's) spend while the command's imports run
OPENBLAS_SPIN = textwrap.dedent(
    """
    import os, sys, time
    from temtool.cli.process import configure_process
    configure_process(["segment"])
    assert "numpy" not in sys.modules  # the defaults are set before NumPy loads
    import numpy, scipy.ndimage
    time.sleep(0.3)  # any spinning is over
    main = os.getpid()
    ticks = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != main:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    print(os.environ["OPENBLAS_THREAD_TIMEOUT"], ticks)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the threads' times from /proc")
def test_command_line_lets_openblas_threads_sleep(monkeypatch):
    """Without the setting, OpenBLAS's threads spin for about 0.1 s each after starting (10 or
    more ticks each on an idle machine); with it they go to sleep at once. A value the user
    set is kept."""
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    timeout, ticks = _python(OPENBLAS_SPIN).split()
    assert timeout == "4"
    assert int(ticks) <= 2
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    assert _python(OPENBLAS_SPIN).split()[0] == "28"


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
