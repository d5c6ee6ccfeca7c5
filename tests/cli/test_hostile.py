"""Hostile input: every case gives exit code 2, one line naming the option or file, no
traceback, and leaves nothing on disk; batches go on past a bad file; Ctrl-C stops cleanly."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from temtool.data.io import write_png, write_tiff
from tests.helpers import written


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_line_error(code, out, err, *needles):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def world(tmp_path):
    """Inputs the hostile cases point at: a raw folder, a dataset folder, images, a file."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    for i in range(3):
        write_tiff(raw / "images" / f"m_{i}.tif", rng.random((64, 64)).astype(np.float32), 0.5)
        m = np.zeros((64, 64), np.uint8)
        m[10:40, 10:40] = 1
        write_png(raw / "masks" / f"m_{i}.png", m)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    write_tiff(data / "images" / "a.tif", rng.random((64, 64)).astype(np.float32), 0.5)
    write_png(data / "masks" / "a.png", np.ones((64, 64), np.uint8))
    (tmp_path / "afile").write_text("not a folder")
    np.save(tmp_path / "img.npy", rng.standard_normal((64, 64)).astype(np.float32))
    return tmp_path


CASES = [
    # simulate
    (["simulate", "{t}/o", "--n", 0], ["--n"]),
    (["simulate", "{t}/o", "--size", 8], ["--size"]),
    (["simulate", "{t}/o", "--set", "dose_e_per_A2=0"], ["--set", "dose_e_per_A2", "> 0"]),
    (["simulate", "{t}/o", "--set", "pad_px=1.5"], ["--set", "pad_px", "integer"]),
    (["simulate", "{t}/o", "--set", "diameter_cv=0.3,0.1"], ["--set", "LO <= HI"]),
    (["simulate", "{t}/o", "--set", "ellipse_fraction=2"], ["--set", "fraction"]),
    (["simulate", "{t}/o", "--set", "nonsense=1"], ["--set", "nonsense"]),
    (["simulate", "{t}/o", "--set", "noequals"], ["--set", "NAME=VALUE"]),
    (["simulate", "{t}/o", "--pixel-size", "inf"], ["--pixel-size", "finite"]),
    (["simulate", "{t}/o", "--regime", "foo"], ["--regime"]),
    (["simulate", "{t}/o", "--workers", 0], ["--workers"]),
    (["simulate", "{t}/afile", "--n", 1], ["OUT_DIR", "not a folder"]),
    # prepare
    (["prepare", "{t}/raw", "{t}/p", "--patch", 32, "--split", "inf,1,1"], ["--split"]),
    (["prepare", "{t}/raw", "{t}/p", "--patch", 32, "--split", "1,2"], ["--split"]),
    (["prepare", "{t}/raw", "{t}/p", "--patch", 32, "--xray-threshold", -1], ["--xray-threshold"]),
    (["prepare", "{t}/raw", "{t}/p", "--patch", 4], ["--patch"]),
    (["prepare", "{t}/raw", "{t}/p", "--patch", 32, "--pixel-size", "nan"], ["--pixel-size"]),
    (["prepare", "{t}/raw", "{t}/raw", "--patch", 32, "--overwrite"], ["OUT_DIR", "raw folder"]),
    (["prepare", "{t}/raw", "{t}/raw/images/x", "--patch", 32], ["OUT_DIR", "raw folder"]),
    # train / evaluate
    (["train", "--data", "{t}/data", "--lr", "inf"], ["--lr"]),
    (["train", "--data", "{t}/data", "--epochs", 0], ["--epochs"]),
    (["train", "--data", "{t}/data", "--epochs", "abc"], ["--epochs"]),
    (["train", "--data", "{t}/data", "--loss", "foo"], ["--loss"]),
    (["train", "--data", "{t}/data", "--precision", "foo"], ["--precision"]),
    (["train", "--data", "{t}/data", "--out", "{t}/afile"], ["--out", "not a folder"]),
    (["train", "--data", "{t}/nothing"], ["--data", "no such folder"]),
    (["train", "--data", "{t}/data", "--pixel-size", -1], ["--pixel-size"]),
    (["train", "--data", "{t}/data", "--no-such-option"], ["--no-such-option"]),
    # tune
    (["tune", "--data", "{t}/data", "--max-trials", 0, "--directory", "{t}/tl"], ["--max-trials"]),
    (["tune", "--data", "{t}/data", "--lrs", "abc", "--directory", "{t}/tl"], ["--lrs"]),
    (["tune", "--data", "{t}/data", "--losses", "foo", "--directory", "{t}/tl"], ["--losses"]),
    (["tune", "--data", "{t}/data", "--pools", "0", "--directory", "{t}/tl"], ["--pools"]),
    (["tune", "--data", "{t}/data", "--tuner", "foo", "--directory", "{t}/tl"], ["--tuner"]),
    (["tune", "--data", "{t}/data", "--chief", "nohost", "--directory", "{t}/tl"], ["--chief", "HOST:PORT"]),
    (["tune", "--data", "{t}/data", "--directory", "{t}/afile"], ["--directory", "not a folder"]),
    # segment
    (["segment", "{t}/img.npy", "--threshold", 2, "--out", "{t}/s"], ["--threshold"]),
    (["segment", "{t}/img.npy", "--pixel-size", 0, "--out", "{t}/s"], ["--pixel-size"]),
    (["segment", "{t}/img.npy", "--method", "foo", "--out", "{t}/s"], ["--method"]),
    (
        ["segment", "{t}/img.npy", "--method", "fourier", "--d-spacing", "abc", "--out", "{t}/s"],
        ["--d-spacing"],
    ),
    (["segment", "{t}/img.npy", "--out", "{t}/afile"], ["--out", "not a folder"]),
    (["segment", "{t}/img.npy", "--model", "{t}/nothing", "--out", "{t}/s"], ["no such model bundle"]),
    (["segment", "{t}/img.npy", "--overlap", 1, "--out", "{t}/s"], ["--overlap", "reach"]),
    # rf
    (["rf", "--cover", 5], ["--cover", "--pixel-size"]),
    (["rf", "--effective"], ["--effective", "model"]),
    (["rf", "--pool", "2,2,2"], ["--pool"]),
    (["rf", "--kernel", 2], ["--kernel"]),
]


@pytest.mark.parametrize("args, needles", CASES, ids=[" ".join(map(str, c[0]))[:60] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(run_cli, world, args, needles):
    before = _tree(world)
    code, out, err = run_cli(*[str(a).replace("{t}", str(world)) for a in args])
    _one_line_error(code, out, err, *needles)
    assert _tree(world) == before  # nothing written, nothing deleted (the raw data above all)


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"splits": ["a"]}', "'splits' must map"),
        ("[1, 2]", "expected a JSON object"),
        ('{"pixel_size_nm": "abc"}', "'pixel_size_nm' must be a positive number"),
        ('{"splits": {"train": ["a"], "bogus": []}}', "unknown split 'bogus'"),
        ("[" * 100000 + "]" * 100000, "not a readable JSON file"),
    ],
)
def test_bad_dataset_json_is_a_clear_error(world, content, needle):
    (world / "data" / "dataset.json").write_text(content)
    from temtool.data.dataset import load_dataset
    from temtool.errors import TemtoolError

    with pytest.raises(TemtoolError, match=needle):
        load_dataset(world / "data")


def test_dataset_json_that_is_not_utf8_is_one_line(world):
    from temtool.data.dataset import load_dataset
    from temtool.errors import TemtoolError

    (world / "data" / "dataset.json").write_bytes(b'{"regime": "\xff\xfe"}')
    with pytest.raises(TemtoolError, match="not a readable JSON file"):
        load_dataset(world / "data")


def test_one_bad_file_does_not_end_the_batch(run_cli, world):
    bad = world / "bad"
    bad.mkdir()
    np.save(bad / "strings.npy", np.array(["a", "b"]))
    np.save(bad / "empty.npy", np.zeros((0, 0), np.float32))
    np.save(bad / "huge.npy", np.full((32, 32), 1e300))  # float64 beyond float32
    np.save(bad / "stack.npy", np.zeros((3, 32, 32), np.float32))
    np.save(bad / "line.npy", np.zeros(32, np.float32))
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    from PIL import Image

    Image.fromarray(rgb).save(bad / "colour.png")
    (bad / "truncated.tif").write_bytes(b"II*\x00garbage")
    out = world / "out"
    code, stdout, err = run_cli(
        "segment", world / "img.npy", bad, "--method", "fourier", "--pixel-size", 0.02, "--out", out, "--json"
    )
    assert code == 2 and "Traceback" not in err
    res = json.loads(stdout)
    assert [Path(r["file"]).name for r in res["results"]] == ["img.npy"]
    failed = {Path(f["file"]).name: f["error"] for f in res["failed"]}
    assert set(failed) == {
        "strings.npy",
        "empty.npy",
        "huge.npy",
        "stack.npy",
        "line.npy",
        "colour.png",
        "truncated.tif",
    }
    assert "float32" in failed["huge.npy"] and "--frame" in failed["stack.npy"]
    assert "--channel" in failed["colour.png"]
    for name, why in failed.items():
        assert name not in why  # the path is printed once, beside the reason
    assert (out / "img_mask.png").is_file()
    assert not [p for p in written(out) if p.name.startswith(".")]


def test_frame_and_channel_select_from_stacks_and_colour(run_cli, world):
    np.save(world / "stack.npy", np.random.default_rng(0).random((3, 64, 64)).astype(np.float32))
    code, out, err = run_cli(
        "segment", world / "stack.npy", "--frame", 5, "--method", "fourier", "--pixel-size", 0.02,
        "--out", world / "o",
    )  # fmt: skip
    assert code == 2 and "--frame 5 is not one of them" in err
    code, out, err = run_cli(
        "segment", world / "stack.npy", "--frame", 1, "--method", "fourier", "--pixel-size", 0.02,
        "--out", world / "o",
    )  # fmt: skip
    assert code == 0, err


def test_same_stem_inputs_do_not_overwrite_each_other(run_cli, world):
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    write_tiff(world / "a.tif", img, 0.02)
    np.save(world / "a.npy", img)
    out = world / "o"
    code, stdout, err = run_cli(
        "segment", world / "a.tif", world / "a.npy", "--method", "fourier", "--pixel-size", 0.02,
        "--out", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(stdout)
    assert sorted(r["output_stem"] for r in res["results"]) == ["a_npy", "a_tif"]
    assert (out / "a_npy_mask.png").is_file() and (out / "a_tif_mask.png").is_file()


def test_prepare_refuses_names_that_collide_after_normalisation(run_cli, world):
    raw = world / "raw"
    (raw / "images" / "m_0.tif").rename(raw / "images" / "m-0.tif")
    write_tiff(raw / "images" / "M_0.tif", np.zeros((64, 64), np.float32), 0.5)
    before = _tree(world)
    code, out, err = run_cli("prepare", raw, world / "p", "--patch", 32)
    _one_line_error(code, out, err, "rename one")
    assert _tree(world) == before


def test_a_second_writer_never_silently_replaces_the_first(tmp_path):
    from temtool.data.io import atomic_dir
    from temtool.errors import TemtoolError

    out = tmp_path / "ds"
    with pytest.raises(TemtoolError, match="another process wrote this folder"):
        with atomic_dir(out, replace=False) as tmp:
            (tmp / "mine").write_text("1")
            out.mkdir()  # the other run finished first
            (out / "theirs").write_text("2")
    assert [p.name for p in out.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folder left


def test_stale_temporary_folder_of_a_killed_run_is_cleaned(run_cli, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ds.tmp-{dead.pid}-abc"
    stale.mkdir()
    (stale / "half.tif").write_text("x")
    code, _, err = run_cli("simulate", tmp_path / "ds", "--n", 2, "--size", 32, "--workers", 1)
    assert code == 0, err
    assert not stale.exists()


def test_output_folders_follow_the_umask(run_cli, tmp_path):
    old = os.umask(0o022)
    try:
        code, _, err = run_cli("simulate", tmp_path / "ds", "--n", 2, "--size", 32, "--workers", 1)
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE((tmp_path / "ds").stat().st_mode) == 0o755


def test_microscope_unit_spellings_are_understood():
    from temtool.data.io import unit_to_nm

    assert unit_to_nm("n_m") == 1.0
    assert unit_to_nm(" nm ") == 1.0
    assert unit_to_nm("µm") == unit_to_nm("um") == unit_to_nm("Micron") == 1e3
    assert unit_to_nm("Å") == unit_to_nm("angstroms") == 0.1
    assert unit_to_nm("1/nm") is None and unit_to_nm("") is None


def test_anisotropic_pixels_are_refused(tmp_path, monkeypatch):
    import temtool.data.io as io_mod
    from temtool.errors import TemtoolError

    def reader(path):  # what RosettaSciIO returns for a DM4 with 0.2 nm x 1.0 nm pixels
        axes = [
            {"size": 32, "scale": 0.2, "units": "nm"},
            {"size": 48, "scale": 1.0, "units": "nm"},
        ]
        return [{"data": np.zeros((32, 48), np.float32), "axes": axes}]

    monkeypatch.setitem(sys.modules, "rsciio.digitalmicrograph", type(sys)("fake"))
    sys.modules["rsciio.digitalmicrograph"].file_reader = reader
    f = tmp_path / "x.dm4"
    f.write_bytes(b"\0")
    with pytest.raises(TemtoolError, match="not square"):
        io_mod.read_image(f)


def _wait_for(predicate, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _interrupt(cmd, started, tmp_path, timeout=120, sig=signal.SIGINT):
    """Run ``cmd`` in its own process group, send ``sig`` (Ctrl-C's SIGINT) to the group once
    ``started()``, return (exit code, output, seconds from the signal to the exit)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}

    def default_sigint():  # a launcher without job control (`cmd &`) leaves SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    p = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True, preexec_fn=default_sigint,
    )  # fmt: skip
    try:
        assert _wait_for(started, timeout), "the command never got going"
        time.sleep(0.5)
        t0 = time.monotonic()
        os.killpg(p.pid, sig)
        out = p.communicate(timeout=60)[0]
        return p.returncode, out, time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)


def test_ctrl_c_stops_simulate_with_workers_cleanly(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "temtool.cli",
        "simulate",
        "ds",
        "--n",
        5000,
        "--size",
        128,
        "--workers",
        2,
    ]
    code, out, dt = _interrupt(
        [str(c) for c in cmd], lambda: any(tmp_path.glob(".ds.tmp-*/images/*.tif")), tmp_path
    )
    assert code == 130, out
    assert "interrupted" in out and "Traceback" not in out and "KeyboardInterrupt" not in out
    assert dt < 10
    assert list(tmp_path.iterdir()) == []  # no dataset, no temporary folder


def test_ctrl_c_stops_tune(small_data, tmp_path):
    base = [sys.executable, "-m", "temtool.cli", "tune", "--data", str(small_data), "--pools", "2,4"]
    base += ["--epochs", "30", "--patience", "30", "--directory", str(tmp_path / "tl"), "--project", "p"]
    code, out, dt = _interrupt(base, lambda: any((tmp_path / "tl" / "p").glob("trial_*")), tmp_path)
    assert code == 130, out
    assert "interrupted" in out and "Traceback" not in out
    assert dt < 30


@pytest.mark.parametrize(
    "sig,code,said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_and_sigterm_stop_a_folder_pipeline_cleanly(tmp_path, monkeypatch, sig, code, said):
    """Ctrl-C, or SIGTERM (timeout, Slurm, docker stop), while `segment` reads, segments and
    writes a folder in parallel: one line, no traceback, and no temporary or half-written
    file in the output folder."""
    from PIL import Image

    from temtool.data.io import write_tiff
    from temtool.data.simulate import config_for, simulate_image

    (tmp_path / "in").mkdir()
    img = simulate_image(config_for("standard", pixel_size_nm=0.5), 256, 0).image
    for i in range(40):
        write_tiff(tmp_path / "in" / f"m{i:02d}.tif", img, 0.5)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "temtool.cli", "segment", "in", "--out", "out", "--workers", "2"]
    monkeypatch.setenv("TEMTOOL_CACHE", str(tmp_path / "cache"))  # the shipped model
    got, text, dt = _interrupt(cmd, lambda: any(out.glob("*_sizes.png")), tmp_path, sig=sig)
    assert got == code, text
    assert said in text and "Traceback" not in text
    assert dt < 30
    files = written(out)
    assert files and not [f for f in files if f.name.startswith(".")]  # no temporaries
    assert len({f.name.split("_")[0] for f in files}) < 40  # really stopped early
    for f in out.glob("*.png"):
        Image.open(f).load()  # every file that is there is whole


def test_staged_files_of_a_killed_run_are_cleaned_by_the_next(run_cli, tmp_path):
    """What a run killed by SIGKILL left under temporary names goes; a live run's stays."""
    write_tiff(tmp_path / "m.tif", np.random.default_rng(0).random((64, 64)).astype(np.float32), 0.5)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    stale = [out / f".m_mask.png.part-{dead.pid}.png", out / f".m_prob.tif.tmp-{dead.pid}.tif"]
    live = out / f".x_mask.png.part-{os.getpid()}.png"
    for f in (*stale, live):
        f.write_bytes(b"half")
    code, _, err = run_cli("segment", tmp_path / "m.tif", "--method", "fourier", "--out", out)
    assert code == 0, err
    assert not any(f.exists() for f in stale) and live.exists()
    assert (out / "m_mask.png").is_file()


def test_one_line_where_a_traceback_was(run_cli, tmp_path, monkeypatch):
    """A backend that is not installed, a cache folder that is a file, stdout closed by its
    reader, a micrograph whose values overflow float32 arithmetic: one line (or none), no
    traceback, no flood of warnings."""
    f = tmp_path / "a.tif"
    write_tiff(f, np.random.default_rng(0).random((64, 64)).astype(np.float32), 0.5)
    env = {**os.environ, "KERAS_BACKEND": "no-such-backend"}
    cli = [sys.executable, "-m", "temtool.cli"]
    r = subprocess.run([*cli, "rf", "--exact"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "KERAS_BACKEND=no-such-backend" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "cachefile").write_text("")
    monkeypatch.setenv("TEMTOOL_CACHE", str(tmp_path / "cachefile"))
    code, _, err = run_cli("train", "--data", "sim:standard", "--epochs", 1, "--out", tmp_path / "m")
    assert code == 2 and "cachefile" in err and "TEMTOOL_CACHE" in err and "Traceback" not in err
    monkeypatch.delenv("TEMTOOL_CACHE")
    head = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    r = subprocess.run(
        [*cli, "rf", "--depth", "4", "--breakdown", "--json"],
        stdout=head.stdin, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    head.stdin.close()
    head.wait()
    assert r.returncode in (0, 141) and "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 1
    huge = np.random.default_rng(1).random((128, 128)).astype(np.float32) * 1e38
    huge[:8] = 1.0
    write_tiff(tmp_path / "huge.tif", huge)
    r = subprocess.run(
        [*cli, "segment", str(tmp_path / "huge.tif"), "--out", str(tmp_path / "h"), "--json"],
        capture_output=True, text=True, env={**os.environ, "TEMTOOL_CACHE": str(tmp_path / "c")},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "RuntimeWarning" not in r.stderr and "overflow" not in r.stderr


def test_user_text_is_never_read_as_markup(run_cli, tmp_path):
    """Paths and option values with rich markup in them are printed as they are, in one
    line, never a MarkupError traceback or a silently dropped tag."""
    good = tmp_path / "[red]good.tif"
    write_tiff(good, np.random.default_rng(0).random((64, 64)).astype(np.float32), 0.5)
    missing = tmp_path / "[/x] missing.tif"
    code, out, err = run_cli("segment", good, missing, "--method", "fourier", "--out", tmp_path / "[/o]")
    assert code == 2 and "Traceback" not in err and "MarkupError" not in err
    assert "[/x] missing.tif" in err and "[red]good.tif" in out
    assert (tmp_path / "[/o]" / "[red]good_mask.png").is_file()
    code, _, err = run_cli("rf", "--pool", "[red]2")
    assert code == 2 and "[red]2" in err and "Traceback" not in err


def test_outputs_never_replace_a_file_temtool_did_not_write(run_cli, tmp_path):
    """Segmenting into a folder that holds the user's own hand-drawn `img_mask.png` leaves it
    as it was and says so; outputs a temtool run recorded writing are replaced on a rerun."""
    ow = tmp_path / "ow"
    ow.mkdir()
    write_tiff(ow / "img.tif", np.random.default_rng(0).random((64, 64)).astype(np.float32), 0.5)
    write_tiff(ow / "other.tif", np.random.default_rng(1).random((64, 64)).astype(np.float32), 0.5)
    (ow / "img_mask.png").write_bytes(b"the user's hand-drawn mask")
    code, _, err = run_cli("segment", ow, "--method", "fourier", "--out", ow)
    assert code == 2 and "img_mask.png: exists and was not written by temtool" in err
    assert (ow / "img_mask.png").read_bytes() == b"the user's hand-drawn mask"
    assert not (ow / "img_prob.tif").exists()  # none of that micrograph's set
    assert (ow / "other_mask.png").is_file()  # the other micrograph went on
    before = (ow / "other_mask.png").stat().st_mtime_ns
    code, _, err = run_cli("segment", ow / "other.tif", "--method", "fourier", "--out", ow)
    assert code == 0, err  # its own earlier outputs are replaced
    assert (ow / "other_mask.png").stat().st_mtime_ns >= before


def test_a_full_disk_during_simulate_is_one_line_and_leaves_nothing(run_cli, tmp_path, monkeypatch):
    """The file system says 'No space left on device' at the third image written: one line
    naming the file system's complaint, exit 2, no traceback, no dataset and no temporary
    folder left behind."""
    import errno

    import temtool.data.dataset as dataset

    calls = {"n": 0}
    real_write = dataset.write_png

    def filling(path, data, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data, *a, **kw)

    monkeypatch.setattr(dataset, "write_png", filling)
    code, out, err = run_cli(
        "simulate", tmp_path / "sims", "--regime", "standard", "--n", 4, "--size", 32, "--workers", 1
    )
    assert code == 2 and calls["n"] == 3
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and os.strerror(errno.ENOSPC) in errors[0] and "sims" in errors[0]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary folder
