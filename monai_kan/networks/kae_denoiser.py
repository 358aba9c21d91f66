"""Patch-based Kolmogorov-Arnold Auto-Encoder for whole images of any size (denoising, restoration).

The KAE paper's auto-encoder is fully connected, so it sees a fixed number of pixels. :class:`PatchKAE` applies one
such :class:`~monai_kan.networks.KAE` (shared weights) to every overlapping ``patch_size`` patch of the image and
averages the overlapping reconstructions, so a single trained model denoises slices (or volumes) of any size.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_kan.layers.metatensor import is_meta_tensor, plain_tensor, with_meta_of
from monai_kan.networks.kae import KAE
from monai_kan.utils import check_floating_input, check_positive_int

__all__ = ["PatchKAE"]



class PatchKAE(nn.Module):
    """KAE applied to all overlapping patches of an image, with overlap averaging.

    ``forward``: pad the image (replicate) so that patches of side ``patch_size`` taken every ``stride`` pixels cover
    every pixel equally often, even at the border; encode and decode every patch with one shared
    :class:`~monai_kan.networks.KAE` (layers of eq. 3 of F. Yu et al., arXiv:2501.00420; sigmoid output); put the
    reconstructed patches back and average where they overlap; crop to the input size. Patch extraction and placement are convolutions with a fixed
    one-hot kernel (exact copies) in 3D, ``F.unfold``/``F.fold`` in 2D; the module is TorchScript-able.

    Args:
        spatial_dims: number of spatial dimensions, 2 (slices, ``(N, C, H, W)``) or 3 (volumes, ``(N, C, H, W, D)``).
        in_channels: number of image channels ``C``; a patch holds ``C * patch_size ** spatial_dims`` values. Defaults
            to 1.
        patch_size: side of the square (cubic) patches. Defaults to 8.
        stride: step between patches, ``1 <= stride <= patch_size``; every pixel lies in
            ``(patch_size / stride) ** spatial_dims`` patches when ``stride`` divides ``patch_size``. Defaults to
            ``patch_size // 2``.
        latent_dim: size of each patch's latent code. Defaults to 16.
        hidden_dims: hidden layer sizes between patch and latent (mirrored in the decoder). Defaults to ``(64,)``.
        order: polynomial order ``p`` of the KAE layers; ``None`` (default) gives 3. Only for ``layer_type="kae"``.
        layer_type: edge family of the auto-encoder layers, as in :class:`~monai_kan.networks.KAE`: ``"kae"``
            (default), ``"linear"`` (the standard auto-encoder, the paper's AE baseline) or ``"kan"`` (B-spline KAN).
        constant: constant-term parametrisation of the KAE layers (``"output"``, ``"edge"``), as in
            :class:`~monai_kan.networks.KAE`; ``None`` (default) gives ``"output"``. Only for ``layer_type="kae"``.

    Input ``(N, in_channels, *spatial)`` floating point, intensities expected in ``[0, 1]`` (any spatial size >= 1);
    output of the same shape, in ``[0, 1]``.

    Example::

        net = PatchKAE(spatial_dims=2, patch_size=8, stride=4, latent_dim=16)
        denoised = net(torch.rand(2, 1, 181, 217))  # (2, 1, 181, 217)

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3; ``in_channels``, ``patch_size`` or ``stride`` not positive
            integers; ``stride > patch_size`` (pixels left uncovered); or from :class:`~monai_kan.networks.KAE`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        patch_size: int = 8,
        stride: int | None = None,
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (64,),
        order: Optional[int] = None,
        layer_type: str = "kae",
        constant: Optional[str] = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}.")
        check_positive_int(in_channels=in_channels)
        check_positive_int(patch_size=patch_size)
        stride = max(patch_size // 2, 1) if stride is None else stride
        check_positive_int(stride=stride)
        if stride > patch_size:
            raise ValueError(f"`stride` must be <= `patch_size` ({patch_size}) to cover every pixel, got {stride}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.stride = stride
        self.patch_features = in_channels * patch_size**spatial_dims
        # KAE validates latent_dim, hidden_dims, order and layer_type with its own messages
        self.kae = KAE(self.patch_features, latent_dim, hidden_dims=hidden_dims, order=order, layer_type=layer_type,
                       constant=constant)
        # 3D patches (no F.unfold in 3D): output channel c * p^d + offset copies pixel `offset` of channel c, as
        # F.unfold orders them; not persistent, so checkpoints hold only the KAE weights; empty in 2D
        feats = self.patch_features if spatial_dims == 3 else 0
        eye = torch.eye(feats, self.patch_features).view(feats, in_channels, *([patch_size] * spatial_dims))
        self.register_buffer("patch_kernel", eye, persistent=False)

    def _extract(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *padded)`` -> patch columns ``(N, C * p^d, L)`` in F.unfold's order."""
        if self.spatial_dims == 2:
            return F.unfold(x, self.patch_size, stride=self.stride)
        return F.conv3d(x, self.patch_kernel, stride=self.stride).flatten(2)

    def _place(self, cols: torch.Tensor, padded: List[int]) -> torch.Tensor:
        """Patch columns ``(N, C * p^d, L)`` -> ``(N, C, *padded)``, overlapping patches summed."""
        if self.spatial_dims == 2:
            return F.fold(cols, padded, self.patch_size, stride=self.stride)
        grid = [(size - self.patch_size) // self.stride + 1 for size in padded]
        patches = cols.reshape([cols.shape[0], cols.shape[1]] + grid)
        return F.conv_transpose3d(patches, self.patch_kernel, stride=self.stride)

    def _padding(self, spatial: List[int]) -> List[int]:
        # F.pad order: last dimension first, (before, after) each. `before = p - s` gives border pixels as many
        # patches as interior ones; `after` also rounds the padded size up to a whole number of strides.
        pads: List[int] = []
        p, s = self.patch_size, self.stride
        for size in spatial[::-1]:
            before = p - s
            total = before + size + (p - s)
            after = (p - s) + (-(total - p)) % s
            pads += [before, after]
        return pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and is_meta_tensor(x):
            return with_meta_of(self._forward(plain_tensor(x)), x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"PatchKAE(spatial_dims={self.spatial_dims}) expected input of shape (N, C, *spatial) with "
                f"{self.spatial_dims} spatial dimensions, got {list(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"PatchKAE expected {self.in_channels} input channel(s), got {x.shape[1]} "
                f"(input shape {list(x.shape)})."
            )
        check_floating_input(x, "PatchKAE")
        if any(size == 0 for size in x.shape[2:]):
            raise ValueError(f"PatchKAE got an input with an empty spatial dimension, shape {list(x.shape)}.")
        spatial: List[int] = list(x.shape[2:])
        pads = self._padding(spatial)
        padded = F.pad(x, pads, mode="replicate")
        padded_size: List[int] = list(padded.shape[2:])
        cols = self._extract(padded)  # (N, C * p^d, L)
        n = cols.shape[0]
        rows = cols.transpose(1, 2).reshape(-1, self.patch_features)  # (N * L, C * p^d): one patch per row
        recon = self.kae(rows).view(n, cols.shape[2], self.patch_features).transpose(1, 2)  # (N, C * p^d, L)
        summed = self._place(recon, padded_size)  # (N, C, *padded)
        counts = self._place(torch.ones_like(recon[:1]), padded_size)  # patches covering each pixel, all >= 1
        out = summed / counts
        if self.spatial_dims == 2:
            return out[:, :, pads[2] : pads[2] + spatial[0], pads[0] : pads[0] + spatial[1]]
        return out[:, :, pads[4] : pads[4] + spatial[0], pads[2] : pads[2] + spatial[1], pads[0] : pads[0] + spatial[2]]

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, "
            f"patch_size={self.patch_size}, stride={self.stride}"
        )
