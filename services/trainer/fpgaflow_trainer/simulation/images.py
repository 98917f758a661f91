"""Jet images (the top-tagging data set's recipe): each jet's constituents as pT-weighted pixels in (rapidity,
azimuth) about the jet's pT-weighted centre, optionally rotated so that the principal axis of the pT spread is
vertical and flipped so that the upper and the right halves hold more pT than the lower and left ones; each
image is normalized to a total of 1."""

from __future__ import annotations

import awkward as ak
import numpy as np

from fpgaflow_trainer.simulation.features import JET_RADIUS, MOMENTA


def _coordinates(constituents: ak.Array) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """pT, rapidity and azimuth of each jet's constituents, the azimuth unwrapped about the jet's direction."""
    pts, ys, phis = [], [], []
    for jet in constituents:
        px, py, pz, e = (np.asarray(jet[k], dtype=np.float64) for k in MOMENTA)
        pt = np.hypot(px, py)
        y = 0.5 * np.log((e + pz) / np.maximum(e - pz, 1e-12))
        phi = np.arctan2(py, px)
        axis = np.arctan2(py.sum(), px.sum())
        phi = (phi - axis + np.pi) % (2 * np.pi) - np.pi + axis
        pts.append(pt), ys.append(y), phis.append(phi)
    return pts, ys, phis


def jet_images(constituents: ak.Array, size: int = 32, half_width: float = JET_RADIUS, rotate: bool = True,
               flip: bool = True) -> np.ndarray:
    """Images (n, size, size), float32, each summing to 1: row 0 is the top (largest azimuth after rotation),
    column 0 the left (smallest rapidity); the window is ``half_width`` either side of the jet's centre."""
    if size < 2:
        raise ValueError(f"an image needs at least 2 x 2 pixels, not {size} x {size}")
    images = np.zeros((len(constituents), size, size), dtype=np.float32)
    edges = np.linspace(-half_width, half_width, size + 1)
    for i, (pt, y, phi) in enumerate(zip(*_coordinates(constituents), strict=True)):
        w = pt / pt.sum()
        u, v = y - np.dot(w, y), phi - np.dot(w, phi)
        if rotate and len(pt) > 1:
            cov = np.cov(np.stack([u, v]), aweights=w, bias=True)
            values, vectors = np.linalg.eigh(cov)
            major = vectors[:, np.argmax(values)]  # the principal axis becomes vertical (+v)
            angle = np.arctan2(major[0], major[1])
            u, v = u * np.cos(angle) - v * np.sin(angle), u * np.sin(angle) + v * np.cos(angle)
        if flip:
            u = -u if np.dot(w, u > 0) < np.dot(w, u < 0) else u
            v = -v if np.dot(w, v > 0) < np.dot(w, v < 0) else v
        counts, _, _ = np.histogram2d(v, u, bins=(edges, edges), weights=w)
        total = counts.sum()
        images[i] = (counts[::-1] / total) if total > 0 else counts  # row 0 at the top: largest v
    return images
