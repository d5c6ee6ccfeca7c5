"""Fit the rules that decide a micrograph's polarity (temtool.inference.polarity) on published
figures, and say how well the whole decision does on figures and micrographs it was not fitted on.

Data: ../shared/data/emps-train (366 figure crops from many labs, instance maps). The truth per
figure: ``dark`` where the particles' mean grey is below the background's. Folds: five, grouped
by source article (sources.csv: crops of one article never straddle a fit and its check). The
network cue uses the shipped ``standard`` model, as ``segment`` does. The decision procedure
(image rule, then the full rule with the network's veto) is scored out of fold, and the
decision of each figure out of fold is kept (benchmarks/real_data.py uses it, so the figures'
scores never rest on a rule fitted on the figure itself). Then the rules fitted on all of them
are checked on bright-field sets whose particles are all dark and that chose nothing: fresh
domain-randomised simulations (seeds 7000-7039; 5000-5039 were looked at while the margins were
set) and the 20 shared bright-field micrographs.

    python examples/fit_polarity.py [--json benchmarks/results/polarity.json] [--cues CUES.json]

Prints the cross-validated accuracy of each cue alone and of the procedure, and the rules to put
in temtool/inference/polarity.py (tests/inference/test_polarity.py keeps them equal to the
JSON's). About 10 minutes on 2 cores.
"""

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from temtool.backend import start_backend  # noqa: E402

start_backend()

from temtool.data.io import read_image, read_mask  # noqa: E402
from temtool.data.randomise import randomised_image  # noqa: E402
from temtool.inference.annotations import mask_annotations  # noqa: E402
from temtool.inference.polarity import (  # noqa: E402
    FEATURES,
    FULL_RULE,
    IMAGE_RULE,
    decide_polarity,
    invert,
    network_cue,
    polarity_features,
    rule_decision,
)
from temtool.inference.segmenter import Segmenter  # noqa: E402
from temtool.model.registry import shipped_models  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data"
EMPS = SHARED / "emps-train"
MSA = SHARED / "msa-seg-track-train"
N_FOLDS = 5
L2 = 1e-3


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = L2, steps: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularised logistic regression (Newton's method)."""
    A = np.c_[X, np.ones(len(X))]
    w = np.zeros(A.shape[1])
    reg = l2 * np.eye(A.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(A @ w, -60, 60)))
        g = A.T @ (p - y) + reg @ w
        H = (A * (p * (1 - p))[:, None]).T @ A + reg + 1e-9 * np.eye(A.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w[:-1], float(w[-1])


def rule(X: np.ndarray, y: np.ndarray) -> dict:
    w, b = fit_logistic(X, y)
    return {"weights": [round(float(v), 4) for v in w], "bias": round(b, 4)}


def emps_cues(seg: Segmenter) -> tuple[list[dict], np.ndarray, list[str], list[str]]:
    """Every cue of every figure (the network cue too), the truth, names and article of each."""
    groups = {r["filename"]: r["doi"] for r in csv.DictReader(open(EMPS / "sources.csv"))}
    cues, y, names, doi = [], [], [], []
    for p in sorted((EMPS / "images").glob("*.png")):
        img = read_image(p).data
        truth = read_mask(EMPS / "instances" / p.name) > 0
        if truth.all() or not truth.any():
            continue
        filled, drawn = mask_annotations(img)  # as `segment` sees it
        f = polarity_features(filled, drawn)
        f["network"] = network_cue(seg.probability(filled).prob, seg.probability(invert(filled)).prob, drawn)
        cues.append(f)
        y.append(float(img[truth].mean() < img[~truth].mean()))
        names.append(p.name)
        doi.append(groups.get(p.name, p.name))
    return cues, np.array(y), names, doi


def folds_by_group(groups: list[str], k: int = N_FOLDS) -> np.ndarray:
    """A fold per item, the same for every item of a group (groups dealt largest first to the
    emptiest fold)."""
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    load = [0] * k
    fold_of = {}
    for g in sorted(sizes, key=lambda g: (-sizes[g], g)):
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += sizes[g]
    return np.array([fold_of[g] for g in groups])


def matrix(cues: list[dict], names) -> np.ndarray:
    return np.array([[c[n] for n in names] for c in cues])


def out_of_fold(cues, y, folds) -> tuple[list, dict]:
    """The procedure's decision of each figure by rules fitted without its fold; and the
    out-of-fold accuracy of each cue alone (one logistic rule on it)."""
    decisions = [None] * len(y)
    alone = {n: np.zeros(len(y), bool) for n in FEATURES}
    for f in range(folds.max() + 1):
        test, fit = folds == f, folds != f
        image_rule = rule(matrix([c for c, k in zip(cues, fit) if k], FEATURES[:2]), y[fit])
        full_rule = rule(matrix([c for c, k in zip(cues, fit) if k], FEATURES), y[fit])
        for i in np.flatnonzero(test):
            decisions[i] = rule_decision(cues[i], image_rule, full_rule)
        for n in FEATURES:
            w, b = fit_logistic(matrix([c for c, k in zip(cues, fit) if k], [n]), y[fit])
            alone[n][test] = ((matrix([cues[i] for i in np.flatnonzero(test)], [n]) @ w + b) >= 0) == (
                y[test] > 0.5
            )
    return decisions, {n: float(v.mean()) for n, v in alone.items()}


def dark_sets(chooser) -> dict[str, list]:
    """Decisions of the rules in temtool/inference/polarity.py, as `segment` makes them, on sets
    whose particles are all darker than the background."""
    sets = {
        "fresh domain-randomised bright-field simulations (seeds 7000-7039, 512 px, a third crowded)": [
            (f"seed {7000 + i}", randomised_image(512, 7000 + i, crowded=i % 3 == 2).image) for i in range(40)
        ],
    }
    if (MSA / "images").is_dir():
        sets["msa-seg-track-train (20 bright-field micrographs)"] = [
            (p.name, read_image(p).data) for p in sorted((MSA / "images").glob("*.png"))
        ]
    out = {}
    for name, images in sets.items():
        rows = []
        for label, img in images:
            filled, drawn = mask_annotations(img)
            seg = chooser(filled)
            if seg.regime == "hrtem":  # segment does not decide polarity for the HRTEM model
                rows.append({"image": label, "decided": "not asked (HRTEM model chosen)"})
                continue
            d = decide_polarity(filled, drawn, lambda x, seg=seg: seg.probability(x).prob)
            rows.append({"image": label, "decided": d.polarity, "p_dark": round(d.p_dark, 4), "rule": d.rule})
        out[name] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the fit and its checks here")
    ap.add_argument("--cues", help="keep the figures' cues in this JSON file and reuse them (the slow part)")
    args = ap.parse_args()
    t0 = time.time()
    from temtool.inference.choice import default_model

    standard = Segmenter.from_bundle(shipped_models()["standard"])
    if args.cues and Path(args.cues).is_file():
        cues, y, names, doi = json.loads(Path(args.cues).read_text())
        y = np.array(y)
    else:
        cues, y, names, doi = emps_cues(standard)
        if args.cues:
            Path(args.cues).write_text(json.dumps([cues, y.tolist(), names, doi]))
    folds = folds_by_group(doi)
    print(
        f"emps-train: {len(y)} figures, {int(y.sum())} dark-particle, {len(set(doi))} articles, "
        f"{N_FOLDS} folds"
    )
    decisions, alone = out_of_fold(cues, y, folds)
    for n, a in alone.items():
        print(f"  {n} cue alone: out-of-fold accuracy {a:.3f}")
    hit = np.array([(d.polarity == "dark") == (t > 0.5) for d, t in zip(decisions, y)])
    n_full = sum(d.rule == "full" for d in decisions)
    print(
        f"  the procedure: out-of-fold accuracy {hit.mean():.3f} ({int((~hit).sum())} wrong: "
        f"{sum(1 for d, t, h in zip(decisions, y, hit) if not h and t > 0.5)} dark called bright, "
        f"{sum(1 for d, t, h in zip(decisions, y, hit) if not h and t < 0.5)} bright called dark); "
        f"network asked for {n_full} of {len(y)}"
    )
    image_rule, full_rule = rule(matrix(cues, FEATURES[:2]), y), rule(matrix(cues, FEATURES), y)
    print(f"  IMAGE_RULE = {image_rule}\n  FULL_RULE = {full_rule}")
    in_code = (
        {"weights": list(IMAGE_RULE["weights"]), "bias": IMAGE_RULE["bias"]},
        {"weights": list(FULL_RULE["weights"]), "bias": FULL_RULE["bias"]},
    )
    if in_code != (image_rule, full_rule):
        print("  temtool/inference/polarity.py has other rules: copy these there and run this again")
        return

    cache: dict[str, Segmenter] = {"standard": standard}

    def chooser(image):
        path, _ = default_model(None, image)
        if str(path) not in cache:
            cache[str(path)] = Segmenter.from_bundle(path)
        return cache[str(path)]

    checks = dark_sets(chooser)
    for name, rows in checks.items():
        asked = [r for r in rows if "p_dark" in r]
        print(
            f"  {name}: {sum(r['decided'] == 'dark' for r in asked)}/{len(asked)} decided dark "
            f"({len(rows) - len(asked)} went to the HRTEM model)"
        )
    if args.json:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip()
        sources = hashlib.sha256((EMPS / "sources.csv").read_bytes()).hexdigest()[:12]
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": "python examples/fit_polarity.py --json " + args.json,
                    "commit": commit,
                    "data": {"emps-train": {"figures": len(y), "sources_csv_sha256": sources}},
                    "network": "temtool/pretrained/standard",
                    "features": list(FEATURES),
                    "n_dark": int(y.sum()),
                    "n_articles": len(set(doi)),
                    "folds": N_FOLDS,
                    "out_of_fold_accuracy": {"procedure": float(hit.mean()), **alone},
                    "network_asked": n_full,
                    "image_rule": image_rule,
                    "full_rule": full_rule,
                    "out_of_fold": {
                        n: {
                            "truth": "dark" if t > 0.5 else "bright",
                            "decided": d.polarity,
                            "p_dark": round(d.p_dark, 4),
                            "rule": d.rule,
                        }
                        for n, t, d in zip(names, y, decisions)
                    },
                    "all_dark_sets": checks,
                    "seconds": round(time.time() - t0, 1),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
