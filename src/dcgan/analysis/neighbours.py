"""Is G copying its training images? (Radford et al. 2015, sec. 6.1.) Nearest training images of each sample, in
pixel space or a feature space, and a copy rate calibrated on real test images. Plain PyTorch."""

from __future__ import annotations

from collections.abc import Callable

import torch


def flat(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] (or uint8) -> (N, C*H*W) float32 rows: L2 between them is pixel distance."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 127.5 - 1
    return x.flatten(1)


def nearest(
    queries: torch.Tensor,
    pool: torch.Tensor,
    k: int = 1,
    batch_size: int = 512,
    done: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``queries`` (N, D), the ``k`` nearest rows of ``pool`` (M, D) by L2 distance:
    distances (N, k), nearest first, and their indices into ``pool`` (N, k). Chunked: N x M never in memory.

    The search uses the fast matrix-product form of the distance, whose rounding leaves an image about 1e-3 from
    itself; the k found are then measured exactly, so a copy is at distance 0. It runs on ``pool``'s device;
    ``done(n)`` is told after each chunk of ``n`` queries (progress). Results come back on the CPU.
    """
    if queries.dim() != 2 or pool.dim() != 2 or queries.size(1) != pool.size(1):
        raise ValueError(f"queries {tuple(queries.shape)} and pool {tuple(pool.shape)}: expected (N, D) and (M, D).")
    k = min(k, pool.size(0))
    pool = pool.float()
    distances, indices = [], []
    for chunk in queries.float().split(batch_size):
        chunk = chunk.to(pool.device)
        found = torch.cdist(chunk, pool).topk(k, dim=1, largest=False).indices  # (n, k)
        exact = (chunk[:, None, :] - pool[found]).norm(dim=2)  # (n, k)
        order = exact.argsort(dim=1)
        distances.append(exact.gather(1, order).cpu())
        indices.append(found.gather(1, order).cpu())
        if done is not None:
            done(len(chunk))
    return torch.cat(distances), torch.cat(indices)


def copy_threshold(test_to_train: torch.Tensor, percentile: float = 1.0) -> float:
    """The ``percentile``-th percentile of real test images' distances to their nearest training image: a sample
    nearer than that to a training image is closer than (100 - percentile)% of unseen real images are."""
    return float(torch.quantile(test_to_train.float(), percentile / 100))


def copy_rate(sample_to_train: torch.Tensor, threshold: float) -> float:
    """The share of samples at or within ``threshold`` of their nearest training image: about 1 for the training
    images themselves, the percentile's share for real test images (0.01), 0 for noise."""
    return float((sample_to_train <= threshold).float().mean())


def copy_report(
    sample_rows: torch.Tensor,
    train_rows: torch.Tensor,
    test_rows: torch.Tensor,
    percentile: float = 1.0,
    done: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """``copy_rate`` of samples against the training images, with its threshold from real test images, all given
    as rows of one space (``flat`` pixels, or a scorer's features); ``done`` as in :func:`nearest`."""
    threshold = copy_threshold(nearest(test_rows, train_rows, done=done)[0][:, 0], percentile)
    rate = copy_rate(nearest(sample_rows, train_rows, done=done)[0][:, 0], threshold)
    return {"copy_rate": rate, "threshold": threshold, "percentile": percentile}
