"""The folder pipeline and the output set: results as one file after the other, bounded memory, whole sets."""

import time
from pathlib import Path

import numpy as np
import pytest

from temtool.data.io import write_tiff
from temtool.data.simulate import config_for, simulate_image
from temtool.inference.segmenter import Segmenter
from tests.helpers import written


def test_folder_pipeline_gives_what_one_file_after_the_other_gives(small_bundle, tmp_path):
    """Reading ahead, segmenting and writing in parallel changes nothing in the outputs, keeps
    the input order, reports every file once and still isolates a broken file."""
    from temtool.data.io import read_mask
    from temtool.inference.choice import ModelChooser
    from temtool.inference.pipeline import segment_files

    (tmp_path / "in").mkdir()
    for i in range(5):
        sim = simulate_image(config_for("standard", pixel_size_nm=0.5), 96 + 16 * i, i)
        write_tiff(tmp_path / "in" / f"m{i}.tif", sim.image, 0.5)
    (tmp_path / "in" / "m2.tif").write_bytes(b"II*\x00garbage")  # the third file is broken
    runs, calls = {}, {}
    for workers in (0, 2):
        seen = []
        runs[workers] = segment_files(
            [str(tmp_path / "in")],
            tmp_path / f"out{workers}",
            ModelChooser(small_bundle),
            on_file=lambda i, n, r, e, seen=seen: seen.append((i, n, r is None, e is None)),
            workers=workers,
        )
        calls[workers] = seen
    a, b = runs[0], runs[2]
    assert [r["file"] for r in a["results"]] == [r["file"] for r in b["results"]]
    assert [Path(r["file"]).name for r in b["results"]] == ["m0.tif", "m1.tif", "m3.tif", "m4.tif"]
    assert [f["file"] for f in b["failed"]] == [str(tmp_path / "in" / "m2.tif")]
    assert sorted(c[0] for c in calls[2]) == [1, 2, 3, 4, 5] and all(c[1] == 5 for c in calls[2])
    for ra, rb in zip(a["results"], b["results"]):
        assert {k: v for k, v in ra.items() if k not in ("time_s", "outputs")} == {
            k: v for k, v in rb.items() if k not in ("time_s", "outputs")
        }
        stem = ra["output_stem"]
        masks = [read_mask(tmp_path / f"out{w}" / f"{stem}_mask.png") for w in (0, 2)]
        assert (masks[0] == masks[1]).all()
    assert not [p for p in written(tmp_path / "out2") if p.name.startswith(".")]


def test_folder_pipeline_holds_a_bounded_number_of_micrographs(tmp_path, monkeypatch):
    """However many files a folder has, the pipeline holds at most ``workers + 1``
    micrographs being inferred or finished and two read ahead: memory stays bounded."""
    import threading

    from temtool.inference import pipeline as S

    n_files, workers = 12, 2
    (tmp_path / "in").mkdir()
    for i in range(n_files):
        (tmp_path / "in" / f"m{i:02d}.tif").write_bytes(b"stand-in")
    lock, held = threading.Lock(), {"now": 0, "max": 0}

    def read(path, options):  # a micrograph enters memory
        with lock:
            held["now"] += 1
            held["max"] = max(held["max"], held["now"])
        return path

    def finish(path, r, out, post, stem, t0):  # slow writers: the reader could run far ahead
        time.sleep(0.03)
        with lock:
            held["now"] -= 1
        return {"file": str(path), "output_stem": stem, "notes": []}

    monkeypatch.setattr(S, "read_micrograph", read)
    monkeypatch.setattr(S, "infer", lambda path, mg, segmenter, options: path)
    monkeypatch.setattr(S, "finish", finish)
    monkeypatch.setattr(S, "write_batch_outputs", lambda out, results: None)  # stand-in results
    res = S.segment_files([str(tmp_path / "in")], tmp_path / "out", None, workers=workers)
    assert [Path(r["file"]).name for r in res["results"]] == [f"m{i:02d}.tif" for i in range(n_files)]
    assert held["now"] == 0
    assert 3 <= held["max"] <= workers + 1 + 2  # overlapped, and bounded


def test_outputs_written_side_by_side_all_finish_and_the_first_error_is_raised(tmp_path, monkeypatch):
    """The writes of one micrograph run in threads and land as one set: a failing write is
    raised after the others finished, and then none of the new outputs is in place (no
    temporary either), while the outputs of an earlier run stay as they were. The overlay is
    a palette PNG whose outline colour marks exactly the labels' inner boundaries."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    import temtool.inference.pipeline as segm
    from temtool.inference.measure import PostProcessing
    from temtool.inference.outputs import OUTLINE_RGB
    from temtool.inference.pipeline import SegmentOptions
    from temtool.model.registry import shipped_models

    img = simulate_image(config_for("standard", pixel_size_nm=0.5), 128, 1).image
    f = tmp_path / "m.tif"
    write_tiff(f, img, 0.5)
    seg = Segmenter.from_bundle(shipped_models()["standard"])  # finds particles
    post = PostProcessing(threshold=0.5)

    def broken(*a, **k):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(segm, "write_size_histogram", broken)
        with pytest.raises(OSError, match="disk full"):
            segm.segment_file(f, tmp_path / "out", seg, SegmentOptions(post=post))
    assert written(tmp_path / "out") == []  # nothing half-done, no temporaries

    segm.segment_file(f, tmp_path / "out", seg, SegmentOptions(post=post))
    made = sorted(p.name for p in written(tmp_path / "out"))
    assert made == [
        "m_labels.tif",
        "m_mask.png",
        "m_overlay.png",
        "m_particles.csv",
        "m_prob.tif",
        "m_sizes.png",
    ]
    before = {n: (tmp_path / "out" / n).read_bytes() for n in made}
    img2 = simulate_image(config_for("standard", pixel_size_nm=0.5), 128, 2).image  # other outputs
    write_tiff(f, img2, 0.5)
    with monkeypatch.context() as m:
        m.setattr(segm, "write_overlay_png", broken)
        with pytest.raises(OSError, match="disk full"):
            segm.segment_file(f, tmp_path / "out", seg, SegmentOptions(post=post))
    assert {n.name: n.read_bytes() for n in written(tmp_path / "out")} == before  # the earlier set
    overlay = Image.open(tmp_path / "out" / "m_overlay.png")
    assert overlay.mode == "P"
    import tifffile

    labels = tifffile.imread(tmp_path / "out" / "m_labels.tif")
    rgb = np.asarray(overlay.convert("RGB"))
    outline = np.all(rgb == OUTLINE_RGB, axis=-1)
    assert labels.max() > 0 and outline.any()
    assert np.array_equal(outline, find_boundaries(labels, mode="inner"))


def test_a_file_name_is_never_taken_for_a_pattern(tmp_path):
    """`a[1].png` is that file even where `a1.png` exists; a path that does not exist is
    expanded as a glob."""
    from temtool.inference.pipeline import expand_inputs

    for name in ("a[1].png", "a1.png", "b1.png"):
        (tmp_path / name).write_bytes(b"")
    files, failed = expand_inputs([str(tmp_path / "a[1].png")])
    assert [f.name for f in files] == ["a[1].png"] and failed == []
    files, failed = expand_inputs([str(tmp_path / "[ab]1.png"), str(tmp_path / "c*.png")])
    assert [f.name for f in files] == ["a1.png", "b1.png"]
    assert failed == [(str(tmp_path / "c*.png"), "no file matches this pattern")]
