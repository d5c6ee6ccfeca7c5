"""Tables fit an 80-column terminal (a pipe, a CI log) without cutting a value."""

from rich.console import Console

from temtool.cli.render import otsu_verdict, trials_table


def _trial(i, pools, test, ci, verdict, repeats=2):
    return {
        "trial_id": f"{i:04d}",
        "depth": 2,
        "pools": pools,
        "filters": [4, 8, 16],
        "params": 8234,
        "rf_px": 232,
        "rf_nm": 116.0,
        "val_hard_dice_mean": 0.8667,
        "val_hard_dice_std": 0.0123,
        "test_hard_dice_mean": test,
        "test_hard_dice_sd": 0.0101,
        "repeats": [{}] * repeats,
        "test_minus_otsu": test - 0.864,
        "test_minus_otsu_ci95": ci,
        "test_vs_otsu": verdict,
    }


def test_the_tune_table_fits_80_columns_with_its_intervals():
    results = {
        "project": "/tmp/tuner_logs/randomised-search",
        "n_trials": 3,
        "trials": [
            _trial(0, [8, 2], 0.9001, [0.012, 0.051], "above"),
            _trial(1, [2, 4], 0.8601, [-0.036, 0.027], "level"),
            _trial(2, [4, 8], 0.8101, [-0.081, -0.029], "below"),
        ],
        "baselines": {"otsu": {"dice": 0.864, "sigma_px": 1.5, "sigma_nm": 0.75}},
    }
    console = Console(width=80, record=True, color_system=None)
    console.print(trials_table(results))
    text = console.export_text()
    assert "…" not in text, text
    for cell in (
        "d2 p8,2 f4",
        "8,234",
        "116.00",
        "0.867+-0.012",
        "0.900+-0.010",
        "[+0.012, +0.051]",
        "Otsu s=0.75 nm",
    ):
        assert cell in text, cell
    assert otsu_verdict(results["trials"]).startswith("1 of 3 networks beat the tuned threshold")
    assert "1 above, 1 level, 1 below" in otsu_verdict(results["trials"])
    assert otsu_verdict([{"test_vs_otsu": "level"}]).startswith("no network of 1")
    assert otsu_verdict([{}]) is None  # no intervals (an old project): no sentence
