"""A run over several micrographs writes pooled outputs: one row per micrograph, every particle
with its file, the pooled histogram, and the mean diameter with intervals over particles and
over micrographs; border particles left out; a user's own summary.csv is never replaced."""

import csv
import json

import numpy as np
import pytest

from temtool.data.io import write_tiff
from temtool.data.simulate import config_for, simulate_image
from temtool.inference.batch import diameter_statistics


@pytest.fixture
def micrographs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k, px in ((1, 1.0), (2, 1.0), (3, None)):
        sim = simulate_image(config_for("standard", pixel_size_nm=1.0), 192, seed=k)
        write_tiff(folder / f"m{k}.tif", sim.image, px)
    return folder


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_run_writes_pooled_outputs(run_cli, micrographs, tmp_path):
    code, out, err = run_cli("segment", micrographs, "--out", tmp_path / "o", "--json")
    assert code == 0, err
    res = json.loads(out)
    o = tmp_path / "o"
    summary = _rows(o / "summary.csv")
    assert [r["file"] for r in summary] == [r["file"] for r in res["results"]]
    assert [r["pixel_size_source"] for r in summary] == ["metadata", "metadata", ""]
    assert [int(r["particles"]) for r in summary] == [r["particles"] for r in res["results"]]
    pooled = _rows(o / "particles.csv")
    assert len(pooled) == sum(r["particles"] for r in res["results"])
    for r in res["results"]:  # each micrograph's own table, with its file named
        own = _rows(o / f"{r['output_stem']}_particles.csv")
        mine = [{k: p[k] for k in ("file", *own[0])} for p in pooled if p["file"] == r["file"]]
        assert [{"file": r["file"], **p} for p in own] == mine
    b = res["batch"]
    assert b["unit"] == "nm" and b["micrographs_in_other_units"] == 1 and b["border_particles"] == "left out"
    inside = [
        float(p["equivalent_diameter_nm"])
        for p in pooled
        if p["touches_border"] == "False" and p["equivalent_diameter_nm"]
    ]
    assert b["n_particles"] == len(inside) >= 3 and b["mean"] == pytest.approx(np.mean(inside), rel=1e-3)
    lo, hi = b["ci95_over_particles"]
    assert lo < b["mean"] < hi
    assert (o / "sizes.png").stat().st_size > 1000
    record = json.loads((o / ".temtool-outputs.json").read_text())["outputs"]
    assert {"summary.csv", "particles.csv", "sizes.png"} <= set(record)
    # the pooled line is printed under the table
    code, out, err = run_cli("segment", micrographs, "--out", o)
    assert code == 0, err
    text = " ".join(out.split())
    assert "pooled: " in text and "over micrographs" in text and "pooled outputs: summary.csv" in text


def test_a_users_summary_csv_stops_the_run_before_any_file(run_cli, micrographs, tmp_path):
    o = tmp_path / "o"
    o.mkdir()
    (o / "summary.csv").write_text("mine\n")
    code, _, err = run_cli("segment", micrographs, "--out", o)
    assert code == 2 and "summary.csv" in err and "not written by temtool" in err
    assert sorted(p.name for p in o.iterdir()) == ["summary.csv"]
    assert (o / "summary.csv").read_text() == "mine\n"
    code, out, err = run_cli("segment", micrographs / "m1.tif", "--out", o, "--json")  # one file: no pooling
    assert code == 0, err
    assert json.loads(out)["batch"] is None


def test_the_interval_over_micrographs_is_wider_when_micrographs_differ():
    rng = np.random.default_rng(0)
    same = [rng.normal(10, 1, 50) for _ in range(6)]
    differ = [rng.normal(10 + 3 * k, 1, 50) for k in range(6)]
    s, d = diameter_statistics(same), diameter_statistics(differ)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(d["ci95_over_micrographs"]) > 3 * width(d["ci95_over_particles"])
    assert width(s["ci95_over_micrographs"]) < 2 * width(s["ci95_over_particles"])
    assert s["n_particles"] == 300 and s["n_micrographs"] == 6
    assert diameter_statistics([np.zeros(0)])["mean"] is None
