"""KMUNet, following MONAI's own network tests: shape cases, eval mode, TorchScript and ONNX, ill arguments."""

import numpy as np
import pytest
import torch
from monai.networks import eval_mode
from monai.networks.utils import convert_to_torchscript

from monai_kan.layers import KANConv
from monai_kan.networks import KMUNet

CASES = [
    # kwargs, input shape, expected output shape
    (dict(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2)), (2, 1, 16, 16), (2, 3, 16, 16)),
    (dict(spatial_dims=2, in_channels=2, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=2), (1, 2, 8, 12), (1, 2, 8, 12)),
    (dict(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8), strides=((2, 1),), upsample="nontrainable"), (2, 1, 8, 5), (2, 1, 8, 5)),
    (dict(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,)), (1, 1, 8, 8, 8), (1, 3, 8, 8, 8)),
    (dict(spatial_dims=3, in_channels=1, out_channels=2, channels=(2, 4, 4), strides=(2, 2), num_res_units=1, kernel_size=(3, 3, 1), base_activation=None, dropout=0.1), (1, 1, 8, 8, 4), (1, 2, 8, 8, 4)),
    (dict(spatial_dims=1, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), grid_size=3, spline_order=2), (3, 1, 16), (3, 2, 16)),
]


@pytest.mark.parametrize("kwargs,in_shape,out_shape", CASES)
def test_shape(kwargs, in_shape, out_shape):
    net = KMUNet(**kwargs)
    with eval_mode(net):
        assert net(torch.randn(in_shape)).shape == out_shape


def test_every_convolution_of_the_encoder_and_decoder_is_a_kan_convolution():
    net = KMUNet(2, 1, 3, (4, 8, 16), (2, 2), num_res_units=2)
    kan = [m for m in net.modules() if isinstance(m, KANConv)]
    assert len(kan) == 2 * 3 + 2 * 2 + 1  # encoder levels, decoder levels, head
    assert net.head[-1].kernel_size == (1, 1)


@pytest.mark.parametrize("kwargs,in_shape,out_shape", [CASES[0], CASES[3], CASES[4]])
def test_torchscript_round_trip(kwargs, in_shape, out_shape, tmp_path):
    net = KMUNet(**kwargs).eval()
    x = torch.randn(in_shape)
    path = tmp_path / "net.ts"
    convert_to_torchscript(net, filename_or_obj=str(path), verify=True, inputs=[x], rtol=1e-4, atol=1e-5)
    loaded = torch.jit.load(str(path))
    torch.testing.assert_close(loaded(x), net(x), rtol=1e-4, atol=1e-5)


def test_onnx_export_matches(tmp_path):
    import onnxruntime  # part of the test extra

    net = KMUNet(2, 1, 3, (4, 8), (2,)).eval()
    x = torch.randn(1, 1, 16, 16)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=["image"], output_names=["logits"])
    session = onnxruntime.InferenceSession(str(path))
    (out,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(out, net(x).detach().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(channels=(4,), strides=()), "channels"),
        (dict(channels=(4, 8, 16), strides=(2,)), "strides"),
        (dict(kernel_size=4), "kernel_size"),
        (dict(kernel_size=(3, 3, 3)), "kernel_size"),
        (dict(up_kernel_size=2), "up_kernel_size"),
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(in_channels=0), "in_channels"),
        (dict(num_res_units=-1), "num_res_units"),
        (dict(upsample="pixelshuffle"), "upsample"),
        (dict(channels=(4, 0)), "channels"),
        (dict(grid_size=0), "grid_size"),
    ],
)
def test_ill_arguments(kwargs, match):
    args = dict(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        KMUNet(**args)


def test_extra_strides_warn_like_monai_unet():
    with pytest.warns(UserWarning, match="strides"):
        KMUNet(2, 1, 2, (4, 8), (2, 2))


def test_bad_inputs_give_clear_errors():
    net = KMUNet(2, 1, 2, (4, 8, 8), (2, 2))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, <2 spatial dims>\), got \[1, 3, 16, 16\]"):
        net(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"got \[1, 1, 16, 16, 16\]"):
        net(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match=r"divisible by \[4, 4\].*got \[16, 18\]"):
        net(torch.randn(1, 1, 16, 18))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.ones(1, 1, 16, 16, dtype=torch.uint8))
    scripted = torch.jit.script(net)
    with pytest.raises(Exception, match="divisible by"):  # the checks survive scripting
        scripted(torch.randn(1, 1, 16, 18))


def test_nan_input_propagates():
    net = KMUNet(2, 1, 2, (4, 8), (2,)).eval()
    x = torch.randn(1, 1, 16, 16)
    x[0, 0, 3, 3] = float("nan")
    assert torch.isnan(net(x)).any()  # documented: NaN is not masked, it spreads through the norms


def test_training_lowers_the_loss():
    """A few Adam steps on a synthetic two-class problem (a bright disc on noise) reduce the Dice-CE loss."""
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    labels, images = [], []
    for cy, cx, r in [(5, 6, 3), (10, 9, 4), (7, 11, 3), (9, 5, 4)]:
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float()
        labels.append(mask)
        images.append(mask + 0.3 * torch.randn(16, 16))
    x = torch.stack(images)[:, None]
    y = torch.stack(labels)[:, None]
    net = KMUNet(2, 1, 2, (4, 8), (2,))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])
