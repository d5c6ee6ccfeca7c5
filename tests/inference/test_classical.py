"""Classical segmenters."""

import numpy as np

from temtool.data.simulate import config_for, simulate_batch
from temtool.inference.classical import fourier_segment, otsu_segment
from temtool.study.metrics import binary_scores_np


def test_fourier_baseline_finds_fringe_particles():
    cfg = config_for(  # crystalline particles with clear fringes (none weak, none twinned)
        "hrtem",
        state_weights=(1, 1, 1, 1, 1, 0),
        amplitude_scale=0.2,
        lattice_strength=(0.3, 0.7),
        twin_fraction=0,
    )
    f_d, o_d = [], []
    for s in simulate_batch(cfg, 3, 512, seed=3):
        f_d.append(binary_scores_np(s.mask, fourier_segment(s.image, cfg.pixel_size_nm))["dice"])
        o_d.append(binary_scores_np(s.mask, otsu_segment(s.image))["dice"])
    assert np.mean(f_d) > 0.7
    assert np.mean(f_d) > np.mean(o_d) + 0.15
