"""How `temtool segment` starts: its allocator setting (freed micrograph-sized arrays are reused,
the first micrograph's memory faulted in ahead), its environment defaults and the NumPy
submodules it leaves unloaded."""

import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from temtool.data.io import write_tiff

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
PREFAULTS = GLIBC and len(os.sched_getaffinity(0)) > 1

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


# faults in 192 MB ahead (or not), waits for it, then allocates and fills 160 MB; prints the
# page faults of the filling
PREFAULT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from temtool.memory import keep_freed_memory, prefault
    assert keep_freed_memory()
    if sys.argv[1] == "prefault":
        prefault(192 * 2**20).join()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.empty(40 * 2**20, np.float32)
    a.fill(1.0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.skipif(not PREFAULTS, reason="prefault works on glibc's heap with a core to spare")
def test_prefault_faults_memory_in_ahead_for_later_arrays():
    """An array allocated after the prefault finds its pages already faulted in (about 41,000
    faults of 4 KB without it, or 80 of 2 MB where NumPy gets huge pages; none with it)."""
    without, ahead = int(_python(PREFAULT, "none")), int(_python(PREFAULT, "prefault"))
    assert without >= 80
    assert ahead * 10 < without


@pytest.mark.skipif(not PREFAULTS, reason="prefault works on glibc's heap with a core to spare")
def test_prefault_leaves_memory_in_use_alone():
    """The memory is handed out again while it is being faulted in: what is written there
    meanwhile stays as written."""
    from temtool import memory

    assert memory.keep_freed_memory()
    thread = memory.prefault(256 * 2**20)
    assert thread is not None
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 2**31, 2**20, dtype=np.int32)]  # 4 MB each, in the block
    while thread.is_alive() and len(arrays) < 64:
        arrays.append(rng.integers(0, 2**31, 2**20, dtype=np.int32))
    thread.join()
    rng = np.random.default_rng(0)
    for a in arrays:
        np.testing.assert_array_equal(a, rng.integers(0, 2**31, 2**20, dtype=np.int32))


def test_prefault_needs_kept_memory_and_something_to_do(monkeypatch):
    from temtool import memory

    monkeypatch.setattr(memory, "_kept", False)
    assert memory.prefault(256 * 2**20) is None  # freed, the block would go back to the kernel
    monkeypatch.setattr(memory, "_kept", True)
    assert memory.prefault(2**20) is None  # less than a chunk
    monkeypatch.setattr(memory, "_cores", lambda: 1)
    assert memory.prefault(256 * 2**20) is None  # no other core to fault it in on
    monkeypatch.undo()
    monkeypatch.setattr(memory, "_kept", True)
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.prefault(256 * 2**20) is None


def test_prefault_bytes_follow_the_largest_input(tmp_path):
    from temtool.memory import MAX_PREFAULT_BYTES, PREFAULT_BYTES_PER_FILE_BYTE, prefault_bytes

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.tif").write_bytes(b"x" * 3000)
    (tmp_path / "d" / "b.tif").write_bytes(b"x" * 5000)
    (tmp_path / "c.tif").write_bytes(b"x" * 4000)
    assert prefault_bytes([tmp_path / "c.tif"]) == 4000 * PREFAULT_BYTES_PER_FILE_BYTE
    assert prefault_bytes([tmp_path / "c.tif", tmp_path / "d"]) == 5000 * PREFAULT_BYTES_PER_FILE_BYTE
    assert prefault_bytes([tmp_path / "missing.tif", str(tmp_path / "*.tif")]) == 0  # globs count nothing
    many = tmp_path / "many"
    many.mkdir()
    for i in range(100):
        (many / f"{i}.tif").write_bytes(b"x" * 100)
    assert prefault_bytes([many]) == 100 * PREFAULT_BYTES_PER_FILE_BYTE  # only the first files looked at
    big = tmp_path / "big.tif"
    with open(big, "wb") as f:  # sparse: its size without its bytes
        f.truncate(64 * 2**20)
    assert prefault_bytes([big]) == MAX_PREFAULT_BYTES


@pytest.mark.parametrize("method", ["model", "fourier"])
def test_segment_command_prefaults_for_the_network_only(run_cli, tmp_path, monkeypatch, method):
    from temtool import memory

    asked = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: True)
    monkeypatch.setattr(memory, "prefault", lambda n: asked.append(n))
    f = tmp_path / "m.tif"
    write_tiff(f, np.random.default_rng(0).random((64, 64)).astype(np.float32), 0.5)
    code, _, err = run_cli("segment", f, "--method", method, "--out", tmp_path / "o", "--json")
    assert code == 0, err
    assert asked == ([memory.prefault_bytes([str(f)])] if method == "model" else [])


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
    timeout, ticks = _python(OPENBLAS_SPIN).split()
    assert timeout == "4"
    assert int(ticks) <= 2
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    assert _python(OPENBLAS_SPIN).split()[0] == "28"


# `temtool segment` of a small micrograph in a fresh process; which deferred modules ran
DEFERRED_AFTER_SEGMENT = textwrap.dedent(
    """
    import sys
    from temtool.cli import main
    try:
        main(["segment", sys.argv[1], "--out", sys.argv[2], "--json"])
    except SystemExit as e:
        assert not e.code, e.code
    from temtool._env import DEFERRED_NUMPY_MODULES
    ran = [n for n in DEFERRED_NUMPY_MODULES if type(sys.modules[f"numpy.{n}"]).__name__ != "_LazyModule"]
    import numpy
    print("huge pages:", numpy._core.multiarray._get_madvise_hugepage(), "ran:", *ran)
    """
)


def test_segment_leaves_numpy_modules_it_does_not_use_unloaded_and_huge_pages_off(tmp_path, monkeypatch):
    """SciPy's imports would load NumPy's f2py, testing, polynomial and ctypeslib; the
    command defers them, and no step of a micrograph uses them. It starts NumPy without its
    transparent-huge-page advice, unless the user's environment asks for it."""
    from temtool.data.simulate import config_for, simulate_image

    f = tmp_path / "m.tif"
    write_tiff(f, simulate_image(config_for("standard", pixel_size_nm=0.5), 128, seed=1).image, 0.5)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    out = _python(DEFERRED_AFTER_SEGMENT, str(f), str(tmp_path / "out")).splitlines()[-1]
    assert out == "huge pages: False ran:"
    assert (tmp_path / "out" / "m_mask.png").is_file()
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    assert (
        _python(DEFERRED_AFTER_SEGMENT, str(f), str(tmp_path / "o2"))
        .splitlines()[-1]
        .startswith("huge pages: True")
    )


DEFERRED_IN_USE = textwrap.dedent(
    """
    import sys
    import numpy
    from temtool._env import defer_numpy_modules
    assert defer_numpy_modules() == ["f2py", "testing", "polynomial", "ctypeslib"]
    assert defer_numpy_modules() == []  # once
    import numpy.testing as nt
    from numpy.testing import assert_allclose
    assert nt is numpy.testing is sys.modules["numpy.testing"]
    assert_allclose(numpy.polynomial.Polynomial([1, 2])(3.0), 7.0)
    print(type(sys.modules["numpy.ctypeslib"]).__name__, numpy.ctypeslib.as_array([1, 2]).sum(),
          numpy.f2py.get_include() == __import__("numpy.f2py").f2py.get_include())
    """
)


def test_deferred_numpy_modules_load_when_first_used():
    """A deferred module is NumPy's own, found under its name and as NumPy's attribute, and
    loads whole at its first use; modules already imported are not deferred."""
    assert _python(DEFERRED_IN_USE) == "_LazyModule 3 True"
    assert _python("import numpy.testing; from temtool._env import defer_numpy_modules as d; print(d())") == (
        "['f2py', 'polynomial', 'ctypeslib']"
    )
