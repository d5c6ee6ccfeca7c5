"""The allocator setting of `temtool segment`: freed micrograph-sized arrays are reused."""

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
        from temtool.memory import keep_freed_memory
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


def _faults(mode: str) -> int:
    r = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(r.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's; elsewhere keep_freed_memory does nothing")
def test_freed_arrays_are_reused_without_new_page_faults():
    """Under glibc's defaults part of the freed memory goes back to the kernel at every round
    (the top of the heap beyond its trim threshold: about 8 MB here) and is faulted in again;
    with keep_freed_memory it is reused."""
    default, keep = _faults("default"), _faults("keep")
    assert default >= 19 * 8  # at least 16 MB a round, even in 2 MB (huge) pages
    assert keep * 10 < default  # here about 2,000 faults a round against none


def test_keep_freed_memory_reports_where_it_applies(monkeypatch):
    from temtool import memory

    assert memory.keep_freed_memory() is GLIBC
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.keep_freed_memory() is False


def test_segment_command_keeps_freed_memory(run_cli, tmp_path, monkeypatch):
    from temtool import memory

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    write_tiff(tmp_path / "m.tif", np.random.default_rng(0).random((64, 64)).astype(np.float32), 0.5)
    code, _, err = run_cli(
        "segment", tmp_path / "m.tif", "--method", "fourier", "--out", tmp_path / "o", "--json"
    )
    assert code == 0, err
    assert calls == [1]


# what OpenBLAS's worker threads (NumPy's, SciPy's) spend while the command's imports run
OPENBLAS_SPIN = textwrap.dedent(
    """
    import os, sys, time
    import temtool.cli
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
    r = subprocess.run([sys.executable, "-c", OPENBLAS_SPIN], capture_output=True, text=True, check=True)
    timeout, ticks = r.stdout.split()
    assert timeout == "4"
    assert int(ticks) <= 2
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    r = subprocess.run([sys.executable, "-c", OPENBLAS_SPIN], capture_output=True, text=True, check=True)
    assert r.stdout.split()[0] == "28"
