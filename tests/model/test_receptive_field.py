import numpy as np
import pytest

from temtool.model.architecture import Architecture
from temtool.model.receptive_field import exact_rf_px, rf_breakdown, rf_recommendation, theoretical_rf_px


def test_study_values(run_cli):
    """The paper's smallest and largest depth-2 fields: 44 px (0.95 nm) and 392 px (8.4 nm) at
    0.02152 nm/px, as `temtool rf` reports them."""
    import json

    for pool, px, nm in (("2,2", 44, 0.95), ("8,8", 392, 8.4)):
        assert theoretical_rf_px(Architecture.create(depth=2, pool=pool)) == px
        code, out, err = run_cli("rf", "--pool", pool, "--depth", 2, "--pixel-size", 0.02152, "--json")
        assert code == 0, err
        r = json.loads(out)
        assert r["rf_px"] == px and r["rf_nm"] == pytest.approx(nm, abs=0.01 if nm < 1 else 0.05)


def test_breakdown_ends_at_total_and_stride_returns_to_one():
    a = Architecture.create(depth=3, pool="2,4,8")
    rows = rf_breakdown(a)
    assert rows[-1].rf_px == theoretical_rf_px(a)
    assert rows[-1].stride_px == 1
    assert max(r.stride_px for r in rows) == 64
    assert all(b.rf_px >= a_.rf_px for a_, b in zip(rows, rows[1:]))


def _brute_force_dependency(arch: Architecture, length: int) -> int:
    """Independent 1-D dependency propagation written from the paper's layer list."""
    k, r = arch.kernel_size, arch.kernel_size // 2
    eye = np.eye(length, dtype=bool)

    def conv(d):  # 'same' conv: output i depends on inputs i-r..i+r
        out = np.zeros_like(d)
        for s in range(-r, r + 1):
            lo, hi = max(0, -s), min(len(d), len(d) - s)
            out[lo:hi] |= d[lo + s : hi + s]
        return out

    def block(d):
        return conv(conv(d)) | d  # two convs, plus the 1x1 skip

    skips, d = [], eye
    for p in arch.pools:
        d = block(d)
        skips.append(d)
        d = d[: len(d) // p * p].reshape(len(d) // p, p, length).any(axis=1)
    d = block(d)
    for p, s in zip(reversed(arch.pools), reversed(skips)):
        d = np.repeat(d, p, axis=0) | s
        d = block(d)
    rows = [np.nonzero(row)[0] for row in d[k * 4 : -k * 4]]
    return max(int(row[-1] - row[0] + 1) for row in rows if row.size)


@pytest.mark.parametrize("seed", range(8))
def test_exact_never_below_formula_on_random_architectures(seed):
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 4))
    pools = tuple(int(p) for p in rng.choice([1, 2, 3, 4], size=depth))
    kernel = int(rng.choice([1, 3, 5]))
    a = Architecture(depth=depth, pools=pools, filters=(1,) * (depth + 1), kernel_size=kernel)
    theory = theoretical_rf_px(a)
    exact = exact_rf_px(a)
    assert exact >= theory, (a, exact, theory)
    # the Keras impulse probe agrees with an independent numpy dependency propagation
    P = a.pool_product
    length = (4 * exact // P + 8) * P
    assert exact == _brute_force_dependency(a, length=length), a


def test_pools_of_two_with_3x3_match_formula_and_larger_pools_exceed_it():
    a22 = Architecture.create(depth=2, pool=2)
    a88 = Architecture.create(depth=2, pool=8)
    assert exact_rf_px(a22) == theoretical_rf_px(a22) == 44
    assert exact_rf_px(a88) > theoretical_rf_px(a88)


def test_recommendation_covers_and_is_sorted():
    recs = rf_recommendation(feature_nm=5.0, pixel_size_nm=0.02152, depth=2)
    assert recs, "some depth-2 pool sequence covers 5 nm"
    rfs = [r[1] for r in recs]
    assert rfs == sorted(rfs)
    assert all(nm >= 5.0 for _, _, nm in recs)
    # sequences that do not cover are excluded: (2, 2) is only 0.95 nm
    assert (2, 2) not in [r[0] for r in recs]
    assert rf_recommendation(feature_nm=100.0, pixel_size_nm=0.02152, depth=2) == []
