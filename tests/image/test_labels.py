"""The 3-class targets of an instance-aware network."""

import numpy as np

from temtool.image.labels import BACKGROUND, BOUNDARY, INTERIOR, boundary_classes


def test_touching_particles_are_parted_by_boundary_pixels_on_both_sides():
    inst = np.zeros((12, 20), np.uint16)
    inst[2:10, 2:10] = 1
    inst[2:10, 10:18] = 2  # touching the first along a whole side
    t = boundary_classes(inst)
    assert set(np.unique(t)) == {BACKGROUND, INTERIOR, BOUNDARY}
    assert np.array_equal(t > 0, inst > 0)  # the particle classes are the mask
    assert (t[3:9, 9] == BOUNDARY).all() and (t[3:9, 10] == BOUNDARY).all()
    assert (t[3:9, 3:9] == INTERIOR).all() and (t[3:9, 11:17] == INTERIOR).all()
    # the interiors are two separate regions: one mask component, two particles
    from scipy import ndimage as ndi

    assert ndi.label(inst > 0)[1] == 1 and ndi.label(t == INTERIOR)[1] == 2


def test_an_isolated_particle_has_a_one_pixel_outline():
    inst = np.zeros((9, 9), np.uint8)
    inst[2:7, 2:7] = 5
    t = boundary_classes(inst)
    assert (t == BOUNDARY).sum() == 16 and (t == INTERIOR).sum() == 9
