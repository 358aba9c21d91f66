"""B-spline basis: Cox-de Boor and the closed form against scipy, derivative against autograd."""

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from monai_kan.basis import bspline_basis, make_knots, power_basis, uniform_bspline_basis
from monai_kan.basis.bspline import is_uniform_knots, uniform_bspline_basis_derivative


def scipy_basis(knots: np.ndarray, k: int, x: np.ndarray) -> np.ndarray:
    n = len(knots) - k - 1
    cols = [BSpline.basis_element(knots[i : i + k + 2], extrapolate=False)(x) for i in range(n)]
    return np.nan_to_num(np.stack(cols, -1))  # scipy gives NaN outside the support: the basis is 0 there


def sample_points(knots: np.ndarray, order: int) -> np.ndarray:
    # inside grid_range, the partial region between the outer knots and grid_range, and fully outside
    x = np.linspace(knots[0] - 1.0, knots[-1] + 1.0, 3001)
    if order == 0:  # order 0 is discontinuous at knots, where scipy closes the right end: compare off-knot
        x = x[np.min(np.abs(x[:, None] - knots[None]), 1) > 1e-9]
    return x


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("grid_size,grid_range", [(5, (-1.0, 1.0)), (3, (0.0, 2.5)), (8, (-3.0, 1.0))])
def test_cox_de_boor_and_closed_form_match_scipy(order, grid_size, grid_range):
    knots = make_knots(grid_size, order, grid_range, dtype=torch.float64)
    assert knots.shape == (grid_size + 2 * order + 1,)
    x = sample_points(knots.numpy(), order)
    ref = scipy_basis(knots.numpy(), order, x)
    xt = torch.from_numpy(x)
    recursion = bspline_basis(xt.unsqueeze(-1), knots, order)[:, 0]
    start, inv = knots[0], 1.0 / (knots[1] - knots[0])
    closed = uniform_bspline_basis(xt, start, inv, grid_size + order, order, 1)
    assert recursion.shape == (len(x), grid_size + order)
    np.testing.assert_allclose(recursion.numpy(), ref, atol=1e-10, rtol=0)
    np.testing.assert_allclose(closed.numpy(), ref, atol=1e-10, rtol=0)
    # the partial region outside grid_range really was exercised and is not identically zero
    if order > 0:
        outside = (x < grid_range[0]) & (x > knots[0].item())
        assert outside.any() and np.abs(ref[outside]).max() > 0


def test_non_uniform_knots_match_scipy():
    knots = torch.tensor([-2.0, -1.5, -1.2, -0.3, 0.0, 0.1, 0.9, 1.4, 2.2, 3.0], dtype=torch.float64)
    x = np.linspace(-2.5, 3.5, 1001)
    ref = scipy_basis(knots.numpy(), 3, x)
    out = bspline_basis(torch.from_numpy(x).unsqueeze(-1), knots, 3)[:, 0]
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10, rtol=0)
    assert not is_uniform_knots(knots)
    assert is_uniform_knots(make_knots(5, 3))


def test_per_channel_knots():
    knots = torch.stack([make_knots(4, 2, (-1, 1), dtype=torch.float64), make_knots(4, 2, (0, 3), dtype=torch.float64)])
    x = torch.rand(50, 2, dtype=torch.float64) * 4 - 1
    out = bspline_basis(x, knots, 2)
    assert out.shape == (50, 2, 6)
    for c in range(2):
        ref = scipy_basis(knots[c].numpy(), 2, x[:, c].numpy())
        np.testing.assert_allclose(out[:, c].numpy(), ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_closed_form_derivative_matches_autograd(order):
    knots = make_knots(5, order, dtype=torch.float64)
    x = torch.linspace(-3, 3, 777, dtype=torch.float64)
    x = x[(x.unsqueeze(-1) - knots).abs().min(-1).values > 1e-6]  # derivative of order 1 jumps at knots
    xr = x.clone().requires_grad_(True)
    basis = bspline_basis(xr.unsqueeze(-1), knots, order)[:, 0]
    auto = torch.stack([torch.autograd.grad(basis[:, i].sum(), xr, retain_graph=True)[0] for i in range(basis.shape[1])], -1)
    start, inv = knots[0], 1.0 / (knots[1] - knots[0])
    closed = uniform_bspline_basis_derivative(x, start, inv, 5 + order, order, 1)
    torch.testing.assert_close(closed, auto, atol=1e-10, rtol=0)


def test_partition_of_unity_inside_grid_range():
    knots = make_knots(5, 3, dtype=torch.float64)
    x = torch.linspace(-1, 1 - 1e-9, 101, dtype=torch.float64)
    basis = uniform_bspline_basis(x, knots[0], 1 / (knots[1] - knots[0]), 8, 3, 1)
    torch.testing.assert_close(basis.sum(-1), torch.ones_like(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(grid_size=0, spline_order=3), "grid_size"),
        (dict(grid_size=5, spline_order=-1), "spline_order"),
        (dict(grid_size=5, spline_order=3, grid_range=(1.0, -1.0)), "grid_range"),
    ],
)
def test_make_knots_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_knots(**kwargs)


def test_power_basis_layout():
    x = torch.tensor([[2.0, -3.0]])
    torch.testing.assert_close(power_basis(x, 3), torch.tensor([[2.0, -3.0, 4.0, 9.0, 8.0, -27.0]]))
