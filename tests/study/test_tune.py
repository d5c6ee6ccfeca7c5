import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from temtool.study.tune import SearchSpace


def test_search_space_constraints():
    s = SearchSpace(depths=(2, 3), pools=(2, 4, 8), base_filters=(4, 32), max_params=50_000)
    seqs = s.pool_sequences(2, 64)
    assert (8, 8) not in seqs  # 64 / 64 = 1 px bottleneck < 4
    assert (4, 4) in seqs and all(64 % (a * b) == 0 for a, b in seqs)
    assert s.filter_choices(2) == [4]  # filters 32 exceed 50k parameters
    assert s.pool_sequences(3, 64) == [(2, 2, 2), (2, 2, 4), (2, 4, 2), (4, 2, 2)]


def _grid_2_4(data, directory, project: str, *extra) -> list:
    """`temtool tune` over pools {2, 4}, one epoch, a project of its own, JSON out."""
    grid = ["tune", "--data", data, "--pools", "2,4", "--epochs", 1]
    return [*grid, "--directory", directory, "--project", project, "--json", *extra]


def test_grid_search_repeats_resume_report(run_cli, small_data, tmp_path, monkeypatch):
    args = _grid_2_4(small_data, tmp_path, "p", "--repeats", 2)
    code, out, err = run_cli(*args)
    assert code == 0, err
    res = json.loads(out)
    assert res["n_trials"] == 4
    seen = {tuple(r["pools"]) for r in res["trials"]}
    assert seen == {(2, 2), (2, 4), (4, 2), (4, 4)}
    baseline = json.loads((tmp_path / "p" / "baselines.json").read_text())["otsu"]["per_image"]
    for r in res["trials"]:
        vals = [x["val_hard_dice"] for x in r["repeats"]]
        assert len(vals) == 2 and r["val_hard_dice_std"] == pytest.approx(np.std(vals, ddof=1))
        # the paired difference to the tuned threshold, from the trial's bundle and the baseline
        per_image = json.loads((tmp_path / "p" / r["trial_dir"] / "bundle" / "bundle.json").read_text())
        per_image = per_image["metrics"]["test_dice_per_image"]
        assert sorted(per_image) == sorted(baseline)
        assert r["test_minus_otsu"] == pytest.approx(np.mean([per_image[k] - baseline[k] for k in baseline]))
        assert r["test_vs_otsu"] in ("above", "level", "below")
        assert r["rf_nm"] == pytest.approx(r["rf_px"] * 0.5)
        assert r["params"] == 8234
    dice = [r["val_hard_dice_mean"] for r in res["trials"]]
    assert dice == sorted(dice, reverse=True)
    assert (tmp_path / "p" / "results.csv").read_text().count("\n") == 5
    assert (tmp_path / "p" / "best_model" / "model.keras").is_file()

    # resuming keeps finished trials and trains nothing
    import temtool.study.tune as tune_mod

    def boom(*a, **k):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(tune_mod, "train", boom)
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert out, (out, err)
    assert json.loads(out)["n_trials"] == 4

    code, out, err = run_cli("tune", "--report", "p", "--directory", tmp_path)
    assert code == 0, err
    assert "test-Otsu" in out and "beats the tuned threshold" in " ".join(out.split())
    assert (tmp_path / "p" / "dice_vs_rf.png").stat().st_size > 1000
    assert "4,4" in out


def test_impossible_space_is_a_clear_error(run_cli, small_data, tmp_path):
    code, _, err = run_cli(
        "tune", "--data", small_data, "--pools", "8", "--depths", "3", "--directory", tmp_path
    )
    assert code == 2 and "no architecture" in err
    code, _, err = run_cli("tune", "--report", "nope", "--directory", tmp_path)
    assert code == 2 and "no such project" in err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_chief_and_two_workers(small_data, tmp_path):
    port = _free_port()
    base = [
        sys.executable,
        "-m",
        "temtool.cli",
        "tune",
        "--data",
        str(small_data),
        "--pools",
        "2,4",
        "--epochs",
        1,
        "--directory",
        str(tmp_path),
        "--project",
        "dist",
    ]
    base = [str(a) for a in base]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    chief = subprocess.Popen(
        [*base, "--chief", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workers = [
        subprocess.Popen(
            [*base, "--worker", f"127.0.0.1:{port}", "--worker-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [w.communicate(timeout=600)[0] for w in workers]
        chief_out = chief.communicate(timeout=120)[0]
    finally:
        for p in (chief, *workers):
            p.kill()
    assert chief.returncode == 0, chief_out[-3000:]
    assert all(w.returncode == 0 for w in workers), outs
    res = json.loads((tmp_path / "dist" / "results.json").read_text())
    ids = [r["trial_id"] for r in res["trials"]]
    assert len(ids) == len(set(ids)) == 4  # every configuration ran exactly once
    assert {tuple(r["pools"]) for r in res["trials"]} == {(2, 2), (2, 4), (4, 2), (4, 4)}
    assert {r["tuner_id"] for r in res["trials"]} <= {"tuner0", "tuner1"}


def test_grid_resumes_after_partial_and_interrupted_runs(run_cli, small_data, tmp_path, monkeypatch):
    """A resumed grid search finishes the grid: after a --max-trials stop, and after a trial
    interrupted by Ctrl-C (re-run, never counted twice)."""
    import temtool.study.tune as tune_mod

    base = _grid_2_4(small_data, tmp_path, "r")
    code, out, err = run_cli(*base, "--max-trials", 2)
    assert code == 0, err
    assert json.loads(out)["n_trials"] == 2

    real_fit, calls = tune_mod.train, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_fit(*a, **k)

    monkeypatch.setattr(tune_mod, "train", interrupted)
    code, out, err = run_cli(*base)
    assert code == 130  # Ctrl-C
    monkeypatch.setattr(tune_mod, "train", real_fit)
    code, out, err = run_cli(*base)
    assert code == 0, err
    res = json.loads(out)
    assert res["n_trials"] == 4
    assert sorted(tuple(r["pools"]) for r in res["trials"]) == [(2, 2), (2, 4), (4, 2), (4, 4)]


def test_grid_over_several_depths_runs_every_architecture(run_cli, small_data, tmp_path):
    """KerasTuner's grid does not fill conditional hyperparameters; one categorical
    architecture choice does (this failed with KeyError 'pools_d3')."""
    code, out, err = run_cli(
        "tune", "--data", small_data, "--depths", "2,3", "--pools", "2", "--filters", "2",
        "--epochs", 1, "--directory", tmp_path, "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(out)
    assert sorted((r["depth"], tuple(r["pools"])) for r in res["trials"]) == [(2, (2, 2)), (3, (2, 2, 2))]


def test_explicit_pool_sequences_replace_the_product_grid():
    from temtool.errors import ParameterError

    space = SearchSpace(depths=(3,), base_filters=(4,), sequences=((1, 1, 4), (2, 2, 2), (8, 8, 8), (2, 2)))
    # only sequences of the depth, and only those that fit 256 px patches (8*8*8 does not)
    assert space.pool_sequences(3, 256) == [(1, 1, 4), (2, 2, 2)]
    assert len(SearchSpace(depths=(3,), pools=(2, 4)).pool_sequences(3, 256)) == 8
    with pytest.raises(ParameterError):
        SearchSpace(sequences=((2, 0),))


def test_a_project_resumed_with_other_settings_or_in_use_is_refused(run_cli, small_data, tmp_path):
    """A project records its data, space and training: resuming it with another --data or
    --epochs (or a narrowed grid) is one line, never the old trials under new labels; a second
    process on the same project is refused while the first runs."""
    import subprocess
    import sys

    args = _grid_2_4(small_data, tmp_path, "q", "--max-trials", 1)
    code, out, err = run_cli(*args)
    assert code == 0, err
    other = tmp_path / "other" / "data"
    shutil.copytree(small_data, other)
    for changed, what in (
        (_grid_2_4(other, tmp_path, "q"), "data differ"),
        ([*_grid_2_4(small_data, tmp_path, "q"), "--epochs", 2], "train differ"),
        ([*_grid_2_4(small_data, tmp_path, "q"), "--pools", "2"], "space differ"),  # narrowed
    ):  # fmt: skip
        code, _, err = run_cli(*changed)
        assert code == 2 and what in err and "--overwrite" in err and "Traceback" not in err
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "q" / ".temtool-tune.lock").write_text(str(sleeper.pid))
        code, _, err = run_cli(*_grid_2_4(small_data, tmp_path, "q"))
        assert code == 2 and f"process {sleeper.pid}" in err
    finally:
        sleeper.kill()
        sleeper.wait()
    code, out, err = run_cli(*_grid_2_4(small_data, tmp_path, "q"))  # the lock of a dead run is taken over
    assert code == 0, err
    assert json.loads(out)["n_trials"] == 4


def test_a_widened_grid_runs_only_its_additions(run_cli, small_data, tmp_path, monkeypatch):
    """--pools 2,4 then 2,4,8 on the same project: the two new architectures (2,8 and 8,2; the
    others do not fit 64 px patches) run, the four searched ones are not trained again, and the
    table holds all six; each grid resumed again trains nothing."""
    code, out, err = run_cli(*_grid_2_4(small_data, tmp_path, "w"))
    assert code == 0, err
    assert json.loads(out)["n_trials"] == 4
    code, out, err = run_cli(*_grid_2_4(small_data, tmp_path, "w"), "--pools", "2,4,8")
    assert code == 0, err
    res = json.loads(out)
    assert sorted(tuple(r["pools"]) for r in res["trials"]) == [
        (2, 2),
        (2, 4),
        (2, 8),
        (4, 2),
        (4, 4),
        (8, 2),
    ]
    added = [r for r in res["trials"] if r["trial_dir"].startswith("additions-1/")]
    assert sorted(tuple(r["pools"]) for r in added) == [(2, 8), (8, 2)]
    assert len({r["trial_id"] for r in res["trials"]}) == 6
    assert (tmp_path / "w" / "best_model" / "bundle.json").is_file()
    record = json.loads((tmp_path / "w" / "temtool_project.json").read_text())
    assert [a["folder"] for a in record["additions"]] == ["additions-1"]

    import temtool.study.tune as tune_mod

    def boom(*a, **k):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(tune_mod, "train", boom)
    for pools in ("2,4,8", "2,4"):
        code, out, err = run_cli(*_grid_2_4(small_data, tmp_path, "w"), "--pools", pools)
        assert code == 0, err
        assert json.loads(out)["n_trials"] == 6
