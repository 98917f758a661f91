"""Jet images (fpgaflow_trainer.simulation.images) of constituent lists placed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow_trainer.simulation.images import jet_images
from tests.unit.test_jet_features import constituents


def test_two_particles_land_on_the_vertical_axis_the_harder_one_above():
    # a pair along the rapidity direction: the rotation turns it vertical, the flip puts the harder one on top
    # an odd size: the centre line is a column of pixels, not the edge between two
    [image] = jet_images(constituents([(300.0, 0.0, 1.0), (100.0, 0.4, 1.0)]), size=15, half_width=0.8)
    assert image.sum() == pytest.approx(1)
    (top, top_col), (bottom, bottom_col) = sorted(zip(*np.nonzero(image), strict=True))
    assert top_col == bottom_col, "one column: the principal axis is vertical"
    assert image[top, top_col] == pytest.approx(0.75) and image[bottom, bottom_col] == pytest.approx(0.25)
    # the pT-weighted centre is the image's centre (row 7 of 15) within a pixel
    assert top_col == 7 and abs(0.75 * top + 0.25 * bottom - 7) <= 1


def test_without_rotation_the_pair_stays_horizontal_and_the_azimuth_wraps():
    [image] = jet_images(constituents([(300.0, 0.0, np.pi - 0.05), (100.0, 0.4, -np.pi + 0.05)]), size=16,
                         rotate=False, flip=False)
    rows, cols = np.nonzero(image)
    assert image.sum() == pytest.approx(1) and len(rows) == 2, "both particles in the window across phi = pi"
    assert cols[0] != cols[1]


def test_an_image_needs_pixels():
    with pytest.raises(ValueError, match="at least 2 x 2 pixels"):
        jet_images(constituents([(1.0, 0.0, 0.0)]), size=1)
