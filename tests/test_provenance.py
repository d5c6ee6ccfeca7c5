"""Results files name the data recipe they used; a changed recipe cannot go unnoticed."""

import json

import pytest

from temtool.data.dataset import BUILTIN, builtin_recipe_hash, recipe_hash
from tests.helpers import ROOT

PROVENANCE = json.loads((ROOT / "benchmarks" / "results" / "provenance.json").read_text())["files"]
RECIPE_DEPENDENT = sorted(
    [
        *(ROOT / "examples" / "figures").glob("*.csv"),
        *(ROOT / "benchmarks" / "results").glob("main_job_*.csv"),
    ]
)


@pytest.mark.parametrize("path", RECIPE_DEPENDENT, ids=lambda p: p.name)
def test_every_results_file_on_simulated_data_has_its_provenance(path):
    entry = PROVENANCE.get(str(path.relative_to(ROOT)))
    assert entry, f"{path}: add it to benchmarks/results/provenance.json (command, commit, data recipe)"
    assert entry["command"] and entry["commit"] and entry["data"]


@pytest.mark.parametrize("name", sorted(PROVENANCE))
def test_results_files_claim_the_current_recipe_or_say_they_are_stale(name):
    entry = PROVENANCE[name]
    assert (ROOT / name).is_file(), name
    for data, claimed in entry["data"].items():
        current = builtin_recipe_hash(data.removeprefix("sim:"))
        if "stale" not in entry:
            assert claimed == current, (
                f"{name}: made with recipe {claimed} of {data}, now {current}: rerun or mark stale"
            )


def test_the_recipe_hash_follows_every_range_and_the_builtin_cache_key_with_it(monkeypatch):
    """Widening one range of the randomised recipe, or one default of a regime, changes the
    hash; the built-in's cache folder changes with it, so an old cache is never served."""
    import temtool.data.dataset as dataset

    before, folder = builtin_recipe_hash("randomised"), dataset.builtin_path("randomised")
    hrtem = recipe_hash("hrtem", BUILTIN["hrtem"]["overrides"])
    ranges = dict(dataset.RANGES)
    key = next(iter(ranges))
    ranges[key] = (ranges[key][0], ranges[key][1] * 2)
    monkeypatch.setattr(dataset, "RANGES", ranges)
    assert builtin_recipe_hash("randomised") != before
    assert dataset.builtin_path("randomised") != folder
    assert recipe_hash("hrtem", BUILTIN["hrtem"]["overrides"]) == hrtem  # other recipes unchanged
    assert recipe_hash("hrtem", {**BUILTIN["hrtem"]["overrides"], "diameter_nm": 6.0}) != hrtem
