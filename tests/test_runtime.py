"""KAN layers and networks where MONAI users run them: casts, autocast, MetaTensors, empty batches, memory formats,
failed checkpoint loads, and the plain-convolution twin of KMUNet (eager kernels; compiled ones in test_fused.py)."""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.networks.nets import UNet

from monai_kan.layers import KAELayer, KANConv, KANLinear
from monai_kan.networks.fourier_kan import FourierKANLinear
from monai_kan.networks.wavelet_kan import WaveletKANLinear
from monai_kan.networks import KAE, KMUNet, PatchKAE

from helpers import saved_bytes

LOW = [torch.bfloat16, torch.float16]


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# ------------------------------------------------------------------------------------------------------ precision


@pytest.mark.parametrize("dtype", LOW)
def test_knots_stay_float32_after_a_cast(dtype):
    layer = KANConv(2, 3, 4)
    knots = layer.knots.clone()
    cast = layer.to(dtype)
    assert cast.spline_weight.dtype == dtype and cast.knots.dtype == torch.float32
    assert torch.equal(cast.knots, knots)  # not rounded: a 0.4 spacing stays 0.4
    assert cast.float().knots.dtype == torch.float32 and cast.double().knots.dtype == torch.float64


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_cast_layer_error_is_within_twice_that_of_the_same_cast_torch_layer(dtype, kind):
    """Relative error against the float32 layer on the same (already rounded) input: only the layer's own
    rounding counts. Target of the runtime issue: at most 2x that of nn.Linear / nn.Conv2d cast alike."""
    torch.manual_seed(0)
    if kind == "linear":
        kan, ref, x = KANLinear(16, 8), nn.Linear(16, 8), torch.randn(256, 16)
    else:
        kan, ref, x = KANConv(2, 8, 8), nn.Conv2d(8, 8, 3, padding=1), torch.randn(4, 8, 16, 16)
    x = x.to(dtype).float()
    with torch.no_grad():
        kan_err = rel_error(copy.deepcopy(kan).to(dtype)(x.to(dtype)), kan(x))
        ref_err = rel_error(copy.deepcopy(ref).to(dtype)(x.to(dtype)), ref(x))
    assert kan_err <= 2 * ref_err, (kan_err, ref_err)


@pytest.mark.parametrize("dtype", LOW)
def test_cast_kmunet_keeps_the_float32_segmentation(dtype):
    torch.manual_seed(0)
    net = KMUNet(2, 1, 3, channels=(8, 16, 32), strides=(2, 2)).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ref = net(x).argmax(1)
        agree = (copy.deepcopy(net).to(dtype)(x.to(dtype)).argmax(1) == ref).float().mean()
    assert agree >= 0.99


def test_autocast_output_dtype_memory_and_values_follow_nn_conv():
    torch.manual_seed(0)
    # the runtime issue's case: 16 -> 16 channels on 1x16x32^3 (fp32: 2.5 MiB, autocast before the fix: 100.5 MiB)
    kan, conv = KANConv(3, 16, 16), nn.Conv3d(16, 16, 3, padding=1, bias=False)
    x = torch.randn(1, 16, 32, 32, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = kan(x)
        assert y.dtype == conv(x).dtype == torch.bfloat16
        kan_bytes = saved_bytes(lambda: kan(x))
        conv_bytes = saved_bytes(lambda: conv(x))
    assert kan_bytes <= 1.5 * conv_bytes, (kan_bytes, conv_bytes)
    with torch.no_grad():
        assert rel_error(y, kan(x)) < 0.02  # bf16 rounding of input and expansion, not of the spline maths
    y.float().square().sum().backward()
    assert x.grad.dtype == torch.float32 and kan.spline_weight.grad.dtype == torch.float32
    assert torch.isfinite(x.grad).all()


def test_autocast_gradients_equal_those_of_the_bf16_rounded_formula():
    """Under autocast the layer computes KAN(round_bf16(x)) with a float32 basis rounded once: the recomputing
    backward must give the gradients of exactly that function (checked against autograd through the plain path)."""
    torch.manual_seed(0)
    layer = KANConv(2, 3, 4, bias=True)
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    grads = []
    for fast in (True, False):
        x.grad = None
        layer.zero_grad()
        if not fast:
            layer._use_fast_path = lambda inp: False
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        y.float().square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------------------- MetaTensors


def _meta(x: torch.Tensor) -> MetaTensor:
    m = MetaTensor(x, affine=torch.diag(torch.tensor([0.7, 0.7, 3.0, 1.0], dtype=torch.float64)))
    m.is_batch = True
    return m


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: KANConv(2, 1, 2), (2, 1, 8, 8)),
        (lambda: KANLinear(4, 3), (5, 4)),
        (lambda: KMUNet(2, 1, 2, channels=(4, 8), strides=(2,)), (2, 1, 16, 16)),
        (lambda: KMUNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1), (1, 1, 8, 8, 8)),
        (lambda: KAE(16, 4), (3, 16)),
        (lambda: PatchKAE(2, patch_size=4), (1, 1, 12, 12)),
    ],
)
def test_metatensor_in_metatensor_out_with_plain_tensor_values(make, shape):
    torch.manual_seed(0)
    net = make()
    x = torch.randn(shape)
    meta = _meta(x.clone()).requires_grad_(True)
    out = net(meta)
    assert type(out) is MetaTensor and out.is_batch
    torch.testing.assert_close(out.affine, meta.affine)
    torch.testing.assert_close(out.as_tensor(), net(x), rtol=0, atol=0)
    out.sum().backward()
    assert meta.grad is not None and torch.isfinite(meta.grad).all()


def test_metatensor_takes_no_metadata_path_inside_the_network(monkeypatch):
    """The network works on the plain tensor: MetaTensor.__torch_function__ runs a constant number of times (the
    unwrap/re-wrap), not once per operation as it does inside MONAI's UNet."""
    calls = []
    original = MetaTensor.__torch_function__.__func__

    def counting(cls, func, types, args=(), kwargs=None):
        calls.append(func)
        return original(cls, func, types, args, kwargs)

    monkeypatch.setattr(MetaTensor, "__torch_function__", classmethod(counting))
    x = _meta(torch.randn(2, 1, 16, 16))
    KMUNet(2, 1, 2, channels=(4, 8), strides=(2,))(x)
    ours = len(calls)
    calls.clear()
    UNet(2, 1, 2, channels=(4, 8), strides=(2,))(x)
    assert ours <= 5 < len(calls), (ours, len(calls))


# ------------------------------------------------------------------------------------------------- empty batches


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: KANLinear(6, 4), (0, 6)),
        (lambda: KANLinear(6, 4, base_activation=None), (2, 0, 6)),
        (lambda: KANConv(1, 2, 3), (0, 2, 7)),
        (lambda: KANConv(2, 2, 3, stride=2, padding_mode="reflect"), (0, 2, 8, 8)),
        (lambda: KANConv(3, 2, 3, base_activation="prelu"), (0, 2, 4, 4, 4)),
        (lambda: KAELayer(6, 4), (0, 6)),
        (lambda: FourierKANLinear(6, 4), (0, 6)),
        (lambda: WaveletKANLinear(6, 4), (0, 6)),
        (lambda: KMUNet(2, 1, 3, channels=(4, 8), strides=(2,)), (0, 1, 16, 16)),
        (lambda: KMUNet(3, 1, 3, channels=(4, 8), strides=(2,), num_res_units=2), (0, 1, 8, 8, 8)),
        (lambda: KAE(16, 4, hidden_dims=(8,), layer_type="kan"), (0, 16)),
        (lambda: PatchKAE(2, patch_size=4), (0, 1, 12, 12)),
    ],
)
def test_an_empty_batch_runs_forward_and_backward(make, shape):
    net = make()
    x = torch.randn(shape, requires_grad=True)
    y = net(x)
    assert y.shape[0] == shape[0] and y.numel() == 0
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(float(g.abs().sum()) == 0.0 for g in grads)


# ----------------------------------------------------------------------------------------------- state and layout


def test_a_failed_load_leaves_the_layer_unchanged_and_reports_true_shapes():
    torch.manual_seed(0)
    source = KANLinear(4, 3, spline_order=3)
    layer = KANLinear(4, 3, spline_order=2)
    x = torch.randn(5, 4)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    expected = layer(x)
    with pytest.raises(RuntimeError) as err:
        layer.load_state_dict(source.state_dict())
    msg = str(err.value)
    assert "spline_order 3" in msg and "spline_order=2" in msg
    assert "torch.Size([3, 4, 7])" in msg and "[3, 4, 9]" not in msg  # this layer's real shape is reported
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    assert layer.grid_size == 5 and layer.knots.shape == (4, 10)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    # a grid-extended checkpoint with one wrong entry is rejected as a whole, too
    extended = KANLinear(4, 3, grid_size=8, spline_order=2).state_dict()
    extended["base_weight"] = torch.zeros(2, 2)
    with pytest.raises(RuntimeError, match="base_weight"):
        layer.load_state_dict(extended)
    assert layer.grid_size == 5 and layer.spline_weight.shape == (3, 4, 7)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "make,shape,fmt",
    [
        (lambda: KMUNet(2, 1, 3, channels=(8, 16), strides=(2,)), (2, 1, 16, 16), torch.channels_last),
        (lambda: KMUNet(2, 1, 3, channels=(8, 16), strides=(2,), num_res_units=2), (1, 1, 16, 16), torch.channels_last),
        (lambda: KMUNet(2, 1, 3, channels=(8, 16), strides=(2,), conv_type="standard"), (1, 1, 16, 16),
         torch.channels_last),
        (lambda: KMUNet(3, 1, 3, channels=(4, 8), strides=(2,)), (1, 1, 8, 8, 8), torch.channels_last_3d),
        (lambda: KMUNet(1, 1, 3, channels=(4, 8), strides=(2,)), (2, 1, 16), None),
        (lambda: PatchKAE(2, patch_size=4), (1, 1, 12, 12), torch.channels_last),
    ],
)
def test_memory_formats_convert_every_network(make, shape, fmt):
    torch.manual_seed(0)
    net = make().eval()
    x = torch.randn(shape)
    ref = net(x)
    fmt = fmt or torch.channels_last
    net = net.to(memory_format=fmt)
    if x.dim() in (4, 5):
        x = x.to(memory_format=fmt)
    torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ the plain-conv twin


def test_standard_twin_has_the_same_topology_without_splines():
    kan = KMUNet(3, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=2)
    twin = KMUNet(3, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=2, conv_type="standard")
    assert not any(isinstance(m, KANConv) for m in twin.modules())
    n_kan = sum(isinstance(m, KANConv) for m in kan.modules())
    twin_convs = [m for m in twin.modules() if isinstance(m, nn.Sequential) and len(m) == 2
                  and isinstance(m[0], nn.SiLU) and isinstance(m[1], nn.Conv3d)]
    assert len(twin_convs) == n_kan
    kan_convs = [m for m in kan.modules() if isinstance(m, KANConv)]
    for k, t in zip(kan_convs, twin_convs):
        c = t[1]
        assert (k.in_channels, k.out_channels, tuple(k.kernel_size), tuple(k.stride), tuple(k.padding)) == \
            (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding)
    x = torch.randn(1, 1, 16, 16, 16)
    assert twin(x).shape == kan(x).shape == (1, 3, 16, 16, 16)
    with pytest.raises(ValueError, match="conv_type"):
        KMUNet(2, 1, 3, channels=(4, 8), strides=(2,), conv_type="mlp")
    with pytest.raises(ValueError, match="linear"):
        KMUNet(2, 1, 3, channels=(4, 8), strides=(2,), conv_type="standard", base_activation=None)


# --------------------------------------------------------------------------------------------------------- CUDA


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).resolve().parents[1] / "scripts" /
                                                  "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_script_passes_on_the_cpu_with_eager_kernels():
    """The script a GPU session runs: its float64 reference, tolerances and twin-relative network check hold on the
    CPU (the fused kernels there are checked in test_fused.py)."""
    worst = _gpu_check().check_against_cpu_reference(torch.device("cpu"), kernels=("eager",))
    assert worst and all(err < tol for err, tol in worst.values()), worst


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_float64_reference():
    worst = _gpu_check().check_against_cpu_reference(torch.device("cuda"))
    assert all(err < tol for err, tol in worst.values()), worst
