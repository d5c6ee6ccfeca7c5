"""`temtool segment`: outputs, partial failure, model choice, the console script's exit."""

import json
from pathlib import Path

import numpy as np

from temtool.data.io import write_tiff
from temtool.data.simulate import config_for, simulate_image
from tests.helpers import written


def test_cli_segment_outputs_and_partial_failure(run_cli, small_bundle, tmp_path):
    sim = simulate_image(config_for("standard", pixel_size_nm=0.5), 160, 0)
    write_tiff(tmp_path / "a.tif", sim.image, 0.5)
    write_tiff(tmp_path / "b.tif", sim.image, 1.0)  # twice the model's pixel size: resampled
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "segment",
        tmp_path / "a.tif",
        tmp_path / "b.tif",
        tmp_path / "broken.tif",
        "--model",
        small_bundle,
        "--out",
        out,
        "--json",
    )
    assert code == 2
    res = json.loads(stdout)
    assert [r["file"].endswith(n) for r, n in zip(res["results"], ("a.tif", "b.tif"))] == [True, True]
    assert res["failed"][0]["file"].endswith("broken.tif")
    assert any("resampled" in n for n in res["results"][1]["notes"])
    for stem in ("a", "b"):
        for suffix in ("_mask.png", "_prob.tif", "_overlay.png", "_particles.csv", "_sizes.png"):
            assert (out / f"{stem}{suffix}").is_file()
    header = (out / "a_particles.csv").read_text().splitlines()[0]
    assert header.startswith("id,area_nm2,equivalent_diameter_nm")
    assert not [p for p in written(out) if p.name.startswith(".")]


def test_cli_segment_fourier_needs_no_model(run_cli, tmp_path):
    cfg = config_for("hrtem", state_weights=(1, 0, 0, 0, 0, 0))
    sim = simulate_image(cfg, 256, 1)
    write_tiff(tmp_path / "h.tif", sim.image, cfg.pixel_size_nm)
    code, stdout, err = run_cli(
        "segment", tmp_path / "h.tif", "--method", "fourier", "--out", tmp_path / "o", "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["results"][0]["particles"] >= 1
    code, _, err = run_cli("segment", tmp_path / "nothing*.tif", "--method", "fourier")
    assert code == 2 and "no file matches" in err


def test_without_model_the_shipped_model_is_chosen_by_what_the_image_is(run_cli, tmp_path):
    cfg = config_for(
        "hrtem",
        pixel_size_nm=0.04,
        diameter_nm=3.0,
        state_weights=(1, 0, 0, 0, 0, 0),
        lattice_strength=0.7,  # clearly fringed [110] particles, none twinned
        twin_fraction=0,
        particles_per_256px2=3.0,
    )
    # seed 0: fringes detected (not every simulated image shows them: see test_real_data)
    write_tiff(tmp_path / "h.tif", simulate_image(cfg, 256, 0).image, 0.04)
    cfg = config_for("standard", pixel_size_nm=0.12)  # the study's sampling: never the HRTEM model
    write_tiff(tmp_path / "s.tif", simulate_image(cfg, 512, 0).image, 0.12)
    code, out, err = run_cli("segment", tmp_path / "h.tif", "--out", tmp_path / "o")
    assert code == 0, err
    assert "shipped 'hrtem' model (lattice fringes" in out
    code, out, err = run_cli("segment", tmp_path / "s.tif", "--out", tmp_path / "o")
    assert code == 0, err
    assert "shipped 'standard' model" in out


def test_console_script_writes_every_output_and_message(tmp_path):
    """`temtool segment` from the command line: the JSON on stdout is whole, every output is
    in place, and a partial failure gives its message on stderr and exit code 2."""
    import subprocess
    import sys

    x = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    write_tiff(tmp_path / "a.tif", x, 0.5)
    cmd = [
        sys.executable,
        "-m",
        "temtool.cli",
        "segment",
        str(tmp_path / "a.tif"),
        "--out",
        str(tmp_path / "o"),
    ]
    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert [Path(f["file"]).name for f in result["results"]] == ["a.tif"]
    suffixes = ("_labels.tif", "_mask.png", "_overlay.png", "_particles.csv", "_prob.tif", "_sizes.png")
    assert sorted(p.name for p in written(tmp_path / "o")) == sorted("a" + s for s in suffixes)
    r = subprocess.run(cmd + [str(tmp_path / "missing.tif")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "1 of 2 inputs failed" in r.stderr and "missing.tif" in r.stderr
    assert "a.tif" in r.stdout  # the table of the file that worked
