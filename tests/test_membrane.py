"""The one membrane solver (crispedit.membrane.membrane_solve) and the seam correction built on it."""

from __future__ import annotations

import numpy as np
import pytest

from crispedit.membrane import membrane_solve, neumann_laplacian, seam_correct


def test_neumann_laplacian_annihilates_constants_and_is_symmetric():
    lap = neumann_laplacian(5, 7)
    assert lap.shape == (35, 35)
    assert np.allclose(lap @ np.ones(35), 0.0)
    assert abs(lap - lap.T).max() == 0
    # interior cell: 4 neighbours; corner: 2
    assert lap[0, 0] == 2 and lap[8, 8] == 4


def test_exact_hard_constraints_reproduce_a_linear_ramp():
    gh, gw = 24, 30
    yy, xx = np.mgrid[:gh, :gw].astype(np.float64)
    ramp = 0.02 * xx - 0.01 * yy + 0.3
    border = np.zeros((gh, gw), bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    vals = np.where(border, ramp, 7.0)  # free cells' values must not be read
    out = membrane_solve(vals, border)
    assert out.dtype == np.float32 and out.shape == (gh, gw)
    assert np.abs(out - ramp).max() < 1e-5
    assert np.array_equal(out[border], ramp[border].astype(np.float32))


def test_exact_membrane_obeys_the_maximum_principle_per_channel():
    rng = np.random.default_rng(3)
    vals = rng.uniform(-1, 1, (20, 20, 3))
    pinned = rng.random((20, 20)) < 0.1
    out = membrane_solve(vals, pinned)
    assert out.shape == vals.shape
    for ch in range(3):
        lo, hi = vals[pinned, ch].min(), vals[pinned, ch].max()
        assert out[..., ch].min() >= lo - 1e-5 and out[..., ch].max() <= hi + 1e-5


def test_free_group_without_data_gets_zero():
    vals = np.ones((6, 9))
    weight = np.zeros((6, 9), bool)
    weight[:, 0] = True
    weight[:, 4] = True  # every free cell lies between data of 1
    out = membrane_solve(vals, weight)
    assert np.allclose(out, 1.0, atol=1e-6)
    assert np.array_equal(membrane_solve(vals, np.zeros((6, 9), bool)), np.zeros((6, 9), np.float32))
    assert np.array_equal(membrane_solve(vals, np.zeros((6, 9)), stiffness=10.0), np.zeros((6, 9), np.float32))


def test_soft_fit_reproduces_constants_and_bends_with_stiffness():
    gh, gw = 16, 40
    vals = np.zeros((gh, gw, 2))
    vals[:, :10] = [0.2, -0.1]
    weight = np.zeros((gh, gw))
    weight[:, :10] = 1.0
    out = membrane_solve(vals, weight, stiffness=10.0)
    assert np.allclose(out, [0.2, -0.1], atol=1e-5)  # data on one side only: the membrane is flat
    vals[:, -10:] = [0.6, 0.3]
    weight[:, -10:] = 0.5
    stiff = membrane_solve(vals, weight, stiffness=100.0)
    loose = membrane_solve(vals, weight, stiffness=0.01)
    assert abs(stiff[0, 0, 0] - 0.2) < abs(loose[0, 0, 0] - 0.2)  # stiffer fits the data closer
    assert 0.2 - 1e-5 <= stiff[..., 0].min() and stiff[..., 0].max() <= 0.6 + 1e-5


def test_bad_arguments_raise():
    v = np.zeros((4, 4))
    with pytest.raises(ValueError, match="shape"):
        membrane_solve(v, np.zeros((4, 5)))
    with pytest.raises(ValueError, match="stiffness"):
        membrane_solve(v, np.ones((4, 4)), stiffness=-1.0)
    with pytest.raises(ValueError, match="screening"):
        membrane_solve(v, np.ones((4, 4)), screening=-0.5)


def test_seam_correct_removes_a_constant_step_and_leaves_outside_alone():
    h, w = 160, 200
    rng = np.random.default_rng(0)
    orig = (0.5 + 0.01 * rng.standard_normal((h, w, 3))).astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    region = np.hypot(yy - 80, xx - 100) < 40
    edited = orig.copy()
    edited[region] += 0.08
    out = seam_correct(edited, orig, region, rim=4, sigma=6.0)
    assert np.array_equal(out[~region], edited[~region])
    rim = region & (np.hypot(yy - 80, xx - 100) >= 34)
    assert abs(float((out - orig)[rim].mean())) < 0.02  # the step at the border is (mostly) gone
    assert abs(float((edited - orig)[rim].mean())) > 0.07


def test_screening_fades_the_membrane_away_from_its_data():
    gh, gw = 12, 60
    vals = np.zeros((gh, gw))
    vals[:, 0] = 1.0
    pinned = np.zeros((gh, gw), bool)
    pinned[:, 0] = True
    plain = membrane_solve(vals, pinned)
    screened = membrane_solve(vals, pinned, screening=1.0 / 9.0)
    assert np.allclose(plain, 1.0, atol=1e-5)  # the plain membrane of one data column: flat
    row = screened[0]
    assert np.all(np.diff(row[:19]) < 0) and row[1] > 0.6
    # decays like exp(-d / 3): about 1/e every three cells, and exactly 0 beyond 6 / sqrt(mu) = 18 cells
    assert 0.2 < row[9] / row[6] < 0.5
    assert row[18] > 0 and np.all(row[19:] == 0.0)


def test_seam_correct_fade_keeps_the_correction_near_the_border():
    h, w = 200, 200
    orig = np.full((h, w, 3), 0.5, np.float32)
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot(yy - 100, xx - 100)
    region = d < 80
    edited = orig.copy()
    edited[region] += 0.1
    faded = seam_correct(edited, orig, region, rim=4, sigma=8.0)
    plain = seam_correct(edited, orig, region, rim=4, sigma=8.0, fade=0)
    centre = d < 10
    assert abs(float((plain - orig)[centre].mean())) < 0.01  # the plain membrane carries the step inwards
    assert abs(float((faded - edited)[centre].mean())) < 0.005  # the faded one leaves the centre alone
    assert abs(float((faded - orig)[region & (d > 74)].mean())) < 0.03  # and still closes the step at the border


def test_seam_correct_leaves_a_smooth_gradient_across_the_border_alone():
    # a ramp crossing the border (a bokeh edge, a sky darkening): the edit is the original there, so there is
    # no step to correct; rim means on both sides differ by about the slope times the rim, which a plain
    # difference of means (order=0) "corrects" into a visible band
    h, w = 200, 200
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    orig = np.repeat((0.2 + 0.004 * xx)[..., None], 3, axis=2).astype(np.float32)
    region = np.hypot(yy - 100, xx - 100) < 50
    out = seam_correct(orig.copy(), orig, region, rim=8, sigma=8.0)
    old = seam_correct(orig.copy(), orig, region, rim=8, sigma=8.0, order=0)
    assert np.abs(out - orig).max() < 0.004
    assert np.abs(old - orig).max() > 0.01


def test_seam_correct_still_closes_a_step_on_a_gradient():
    h, w = 200, 200
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    orig = np.repeat((0.2 + 0.003 * xx)[..., None], 3, axis=2).astype(np.float32)
    region = np.hypot(yy - 100, xx - 100) < 50
    edited = orig.copy()
    edited[region] += 0.08
    out = seam_correct(edited, orig, region, rim=8, sigma=8.0)
    border = region & (np.hypot(yy - 100, xx - 100) >= 46)
    assert abs(float((out - orig)[border].mean())) < 0.02
