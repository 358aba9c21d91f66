"""A small generated image dataset that needs no install: for tests and ``--quick`` benchmark runs."""

from __future__ import annotations

import torch

from monai_kan.utils import check_int

from .mnist import ImageSplits

__all__ = ["make_blob_images"]


def make_blob_images(
    n_train: int = 2000, n_test: int = 500, num_classes: int = 10, size: int = 28, seed: int = 0
) -> ImageSplits:
    """MNIST-like images: each class is three Gaussian blobs at class-specific places, jittered per sample.

    Args:
        n_train: number of training images.
        n_test: number of test images.
        num_classes: number of classes (labels cycle ``0, 1, ..., num_classes - 1``).
        size: image side ``H = W``.
        seed: seed of the generator (same seed, same data).

    Returns:
        :class:`~benchmarks.kae_protocol.mnist.ImageSplits` with images ``(N, 1, size, size)`` in ``[0, 1]``.

    Raises:
        ValueError: a size or count is not a positive integer.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("num_classes", num_classes), ("size", size)):
        check_int(name, value)
    gen = torch.Generator().manual_seed(seed)
    centres = 0.2 + 0.6 * torch.rand(num_classes, 3, 2, generator=gen)  # blob centres in [0.2, 0.8]^2
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size

    def draw(n: int) -> tuple:
        labels = torch.arange(n) % num_classes
        c = centres[labels] + 0.04 * torch.randn(n, 3, 2, generator=gen)  # (n, 3, 2) jittered centres
        width = 0.06 + 0.03 * torch.rand(n, 3, 1, 1, generator=gen)
        dy = grid.view(1, 1, size, 1) - c[..., 0].view(n, 3, 1, 1)
        dx = grid.view(1, 1, 1, size) - c[..., 1].view(n, 3, 1, 1)
        img = torch.exp(-(dy.square() + dx.square()) / (2 * width.square())).amax(1)  # (n, size, size)
        img = img * (0.7 + 0.3 * torch.rand(n, 1, 1, generator=gen)) + 0.02 * torch.randn(n, size, size, generator=gen)
        return img.clamp_(0.0, 1.0).unsqueeze(1), labels

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return ImageSplits(train_x, train_y, test_x, test_y, f"generated Gaussian-blob images (seed {seed})")
