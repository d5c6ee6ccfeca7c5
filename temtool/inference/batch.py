"""What a run over several micrographs writes about all of them: one row per micrograph
(``summary.csv``), every particle with its file (``particles.csv``), the pooled size histogram
(``sizes.png``), and the mean equivalent diameter with bootstrap 95% intervals over particles
and over micrographs.

Particles cut by the image border are left out of the pooled sizes (their size is not known);
``particles.csv`` keeps them, flagged. Sizes are pooled in one unit: nm where the micrographs'
pixel sizes are known, else px; micrographs in the other unit are left out of the pooled sizes,
and the statistics say how many.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from temtool.inference.outputs import OutputSet, check_replaceable, write_size_histogram

__all__ = ["POOLED_FILES", "SUMMARY_COLUMNS", "pooled_paths", "diameter_statistics", "write_batch_outputs"]

POOLED_FILES = {"summary": "summary.csv", "particles": "particles.csv", "sizes": "sizes.png"}
SUMMARY_COLUMNS = (
    "file",
    "particles",
    "particles_not_touching_border",
    "diameter_mean",
    "diameter_sd",
    "diameter_median",
    "diameter_unit",
    "area_fraction",
    "pixel_size_nm",
    "pixel_size_source",
    "polarity",
    "model",
)
N_BOOT = 2000


def pooled_paths(out: Path) -> dict[str, Path]:
    """Where the pooled outputs of a run into ``out`` go, by kind."""
    return {k: Path(out) / v for k, v in POOLED_FILES.items()}


def _interval(values: np.ndarray, groups: np.ndarray | None, rng) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values``: resampling the values, or,
    with ``groups`` (a group id per value), resampling whole groups."""
    if groups is None:
        means = values[rng.integers(0, values.size, (N_BOOT, values.size))].mean(1)
    else:
        ids, inverse = np.unique(groups, return_inverse=True)
        sums, counts = np.bincount(inverse, values), np.bincount(inverse)
        pick = rng.integers(0, ids.size, (N_BOOT, ids.size))
        means = sums[pick].sum(1) / np.maximum(counts[pick].sum(1), 1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def diameter_statistics(diameters: list[np.ndarray], seed: int = 0) -> dict:
    """Mean equivalent diameter over the particles of several micrographs (one array each),
    with bootstrap 95% intervals over particles and over micrographs (a micrograph's particles
    resampled together: the interval that holds when micrographs differ)."""
    values = np.concatenate([np.asarray(d, float) for d in diameters]) if diameters else np.zeros(0)
    groups = (
        np.concatenate([np.full(len(d), i) for i, d in enumerate(diameters)]) if diameters else np.zeros(0)
    )
    out = {"n_particles": int(values.size), "n_micrographs": int(sum(len(d) > 0 for d in diameters))}
    if values.size == 0:
        return {**out, "mean": None, "sd": None, "ci95_over_particles": None, "ci95_over_micrographs": None}
    rng = np.random.default_rng(seed)
    return {
        **out,
        "mean": float(values.mean()),
        "sd": float(values.std()),
        "ci95_over_particles": _interval(values, None, rng),
        "ci95_over_micrographs": _interval(values, groups, rng) if out["n_micrographs"] > 1 else None,
    }


def _read_particles(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(
            {k: (f"{v:.4g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()}
        )
    return buf.getvalue()


def write_batch_outputs(out: Path, results: list[dict], include_border: bool = False) -> dict:
    """Write the pooled outputs of a run's ``results`` (summaries of
    :func:`temtool.inference.pipeline.segment_file`, whose particle tables are read back from
    ``out``) as one set (:class:`~temtool.inference.outputs.OutputSet`); returns the pooled
    diameter statistics, their unit and what was left out."""
    out = Path(out)
    paths = pooled_paths(out)
    check_replaceable(out, paths.values())
    units = [r["diameter_unit"] for r in results]
    unit = "nm" if "nm" in units else "px"
    particles, columns, diameters = [], ["file"], []
    for r in results:
        rows = _read_particles(Path(r["outputs"]) / f"{r['output_stem']}_particles.csv")
        for row in rows:
            particles.append({"file": r["file"], **row})
        for c in rows[0] if rows else ():
            if c not in columns:
                columns.append(c)
        if r["diameter_unit"] == unit:
            key = f"equivalent_diameter_{unit}"
            diameters.append(
                np.array([float(p[key]) for p in rows if include_border or p["touches_border"] != "True"])
            )
    stats = diameter_statistics(diameters)
    stats.update(
        unit=unit,
        border_particles="included" if include_border else "left out",
        micrographs_in_other_units=sum(u != unit for u in units),
    )
    summary = [
        {
            **{c: r.get(c) for c in SUMMARY_COLUMNS},
            "polarity": (r.get("polarity") or {}).get("value"),
            "model": Path(r["model"]).name if r.get("model") else None,
        }
        for r in results
    ]
    pooled = np.concatenate(diameters) if diameters else np.zeros(0)
    with OutputSet(out) as w:
        w.submit(lambda p: p.write_text(_csv_text(summary, list(SUMMARY_COLUMNS))), paths["summary"])
        w.submit(lambda p: p.write_text(_csv_text(particles, columns)), paths["particles"])
        w.submit(write_size_histogram, paths["sizes"], list(pooled), unit)
    stats["files"] = {k: str(p) for k, p in paths.items()}
    return stats
