"""PatchKAE: whole images of any size through one patch KAE; exact patch placement; TorchScript; argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.networks.utils import convert_to_torchscript

from monai_kan.networks.kae_denoiser import PatchKAE


@pytest.mark.parametrize(
    "spatial_dims, shape",
    [(2, (2, 1, 37, 53)), (2, (1, 1, 128, 96)), (2, (1, 1, 1, 1)), (2, (3, 1, 5, 200)), (3, (1, 1, 9, 10, 11))],
)
def test_output_shape_and_range(spatial_dims, shape):
    net = PatchKAE(spatial_dims, patch_size=4 if spatial_dims == 3 else 8)
    y = net(torch.rand(shape))
    assert y.shape == shape
    assert y.min() >= 0.0 and y.max() <= 1.0  # sigmoid reconstruction, averaged


@pytest.mark.parametrize(
    "spatial_dims, patch_size, stride",
    [(2, 8, 4), (2, 8, 8), (2, 7, 3), (2, 5, 1), (2, 1, 1), (3, 4, 2), (3, 5, 3), (3, 3, 3), (3, 1, 1)],
)
@pytest.mark.parametrize("in_channels", [1, 2])
def test_patches_are_placed_back_exactly(spatial_dims, patch_size, stride, in_channels):
    """With an identity in place of the KAE, extraction + overlap averaging must return the input."""
    net = PatchKAE(spatial_dims, in_channels=in_channels, patch_size=patch_size, stride=stride)
    net.kae = nn.Identity()
    x = torch.rand((2, in_channels) + ((13, 17) if spatial_dims == 2 else (6, 7, 9)))
    torch.testing.assert_close(net(x), x, atol=1e-5, rtol=0)


def test_default_stride_and_parameters():
    net = PatchKAE(2, patch_size=8, latent_dim=16, hidden_dims=(64,))
    assert net.stride == 4 and net.patch_features == 64
    # checkpoints hold the KAE weights only (the patch kernel is a fixed, non-persistent buffer)
    assert all(k.startswith("kae.") for k in net.state_dict())
    ae = PatchKAE(2, layer_type="linear")
    assert sum(p.numel() for p in ae.parameters()) < sum(p.numel() for p in net.parameters())


def test_gradients_reach_every_parameter():
    net = PatchKAE(2, patch_size=4, stride=2, latent_dim=4, hidden_dims=(8,))
    x = torch.rand(2, 1, 19, 23)
    nn.functional.mse_loss(net(x), x).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_learns_to_reconstruct():
    torch.manual_seed(0)
    net = PatchKAE(2, patch_size=4, stride=2, latent_dim=8, hidden_dims=(16,))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 24), indexing="ij")
    x = (0.5 + 0.4 * torch.sin(6 * xx) * torch.cos(4 * yy))[None, None]
    first = None
    for _ in range(150):
        loss = nn.functional.mse_loss(net(x), x)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_torchscript_round_trip(spatial_dims, tmp_path):
    net = PatchKAE(spatial_dims, patch_size=4, stride=2, latent_dim=4, hidden_dims=(8,)).eval()
    x = torch.rand((1, 1) + (11,) * spatial_dims)
    scripted = convert_to_torchscript(net, filename_or_obj=str(tmp_path / "net.ts"), verify=True, inputs=[x])
    loaded = torch.jit.load(str(tmp_path / "net.ts"))
    other = torch.rand((2, 1) + (7,) * (spatial_dims - 1) + (13,))  # another size than the one used to script
    with torch.no_grad():
        torch.testing.assert_close(loaded(other), net(other))
        torch.testing.assert_close(scripted(other), net(other))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(spatial_dims=1), "spatial_dims"),
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(spatial_dims=True), "spatial_dims"),
        (dict(in_channels=0), "in_channels"),
        (dict(patch_size=0), "patch_size"),
        (dict(patch_size=2.5), "patch_size"),
        (dict(stride=0), "stride"),
        (dict(patch_size=4, stride=5), "stride"),
        (dict(latent_dim=0), "latent_dim"),
        (dict(hidden_dims=(0,)), "hidden_dims"),
        (dict(order=0), "order"),
        (dict(layer_type="bogus"), "layer_type"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PatchKAE(**kwargs)


def test_bad_inputs():
    net = PatchKAE(2)
    with pytest.raises(ValueError, match="spatial dimensions"):
        net(torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="spatial dimensions"):
        net(torch.rand(8, 8))
    with pytest.raises(ValueError, match="input channel"):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.ones(1, 1, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty spatial dimension"):
        net(torch.rand(1, 1, 0, 8))
    assert net(torch.rand(0, 1, 8, 8)).shape == (0, 1, 8, 8)  # an empty batch is not an error
