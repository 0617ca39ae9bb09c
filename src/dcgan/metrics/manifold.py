"""k-NN manifold metrics on extracted features: improved precision and recall (Kynkaanniemi et al. 2019,
arXiv:1904.06991) and density and coverage (Naeem et al. 2020, arXiv:2002.09797).

A sample's ball reaches its k-th nearest neighbour in its own set, itself excluded, and is closed (``<=``) as in
Kynkaanniemi et al. and torch-fidelity's ``metric_prc``. Distances are Euclidean (compared squared), in the
features' dtype and torch.cdist's matmul form |x|^2 + |y|^2 - 2 x.y as torch-fidelity computes them, one block of
``batch_size`` x ``batch_size`` at a time (2048: 16 MB of float32 stays in L3): 26k x 26k is never in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_CACHE_ENTRIES = 4  # feature sets (and pairs) remembered: a real and a fake set for a couple of extractors


def _features(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """``x`` as a (N, D) float32 (float64 kept) CPU tensor; ValueError names what is wrong."""
    t = torch.as_tensor(x).detach().cpu()
    if t.ndim != 2 or t.shape[1] == 0:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)}: expected (N, D), one row per sample. "
            "Flatten or pool each sample's features to a vector first."
        )
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} hold NaN or inf: check the extractor's input (images in [-1, 1]).")
    return t


def _check_k(k: int, n: int, name: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(
            f"k={k!r}: expected a positive whole number of neighbours (the papers use 3 for precision/recall, "
            "5 for density/coverage)."
        )
    if n < k + 1:
        raise ValueError(
            f"{name} have {n} rows: the k={k}-th nearest neighbour of each needs at least {k + 1} rows. "
            f"Score at least {k + 1} samples, or use a smaller k."
        )


def _check_batch(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive whole number of rows per block, e.g. 2048.")


def _pair(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = _features(real, "real features"), _features(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real features are {real.shape[1]}-d and fake features {fake.shape[1]}-d: they come from different "
            "extractors or layers. Extract both with the same network and layer."
        )
    if len(fake) == 0:
        raise ValueError("fake features have 0 rows: score at least one generated sample.")
    if real.dtype != fake.dtype:
        real, fake = real.double(), fake.double()
    _check_batch(batch_size)
    return real, fake


def _left(x: torch.Tensor) -> torch.Tensor:
    """(N, D+2) rows [-2x, |x|^2, 1]: ``_left(x) @ _right(y).T`` is the (N, M) squared distances, as in cdist."""
    sq = x.square().sum(1, keepdim=True)
    return torch.cat([-2 * x, sq, torch.ones_like(sq)], 1)


def _right(x: torch.Tensor) -> torch.Tensor:
    sq = x.square().sum(1, keepdim=True)
    return torch.cat([x, torch.ones_like(sq), sq], 1)


def _knn_sq(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """(N, k): each row's squared distances to its k nearest other rows, ascending.

    Every block is computed as ``_scores`` computes the real x fake blocks (not as the transpose of its mirror):
    for identical sets the k-th neighbour, which sits on the ball's edge, then rounds the same way in both.
    """
    left, right = _left(x), _right(x)
    out = []
    for i0 in range(0, len(x), batch_size):
        best = None
        for j0 in range(0, len(x), batch_size):
            d = left[i0 : i0 + batch_size] @ right[j0 : j0 + batch_size].T  # (rows of block i, rows of block j)
            if i0 == j0:
                d.fill_diagonal_(float("inf"))  # a sample is not its own neighbour
            d = d if best is None else torch.cat([best, d], 1)
            best = d.topk(min(k, d.shape[1]), dim=1, largest=False, sorted=True).values
        out.append(best)
    return torch.cat(out).clamp_min_(0)  # rounding can leave -1e-7 between duplicates


def knn_radii(features: torch.Tensor | np.ndarray, k: int, batch_size: int = 2048) -> torch.Tensor:
    """(N,): each row's Euclidean distance to its k-th nearest neighbour among the other rows (NND_k)."""
    x = _features(features, "features")
    _check_k(k, len(x), "features")
    _check_batch(batch_size)
    return _knn_sq(x, k, batch_size)[:, k - 1].sqrt()


def _scores(
    real: torch.Tensor,
    fake: torch.Tensor,
    real_knn: torch.Tensor,
    fake_knn: torch.Tensor | None,
    k_pr: int | None,
    k_dc: int | None,
    batch_size: int,
) -> dict[str, float]:
    """One pass over the real x fake distances for whichever of precision/recall (``k_pr``) and
    density/coverage (``k_dc``) is asked; ``*_knn``: ``_knn_sq`` of each set with at least that many columns."""
    n, m = len(real), len(fake)
    left, right = _left(real), _right(fake)
    precise = torch.zeros(m, dtype=torch.bool)  # fake j inside some real ball (k_pr)
    recalled = torch.zeros(n, dtype=torch.bool)  # real i inside some fake ball (k_pr)
    inside = torch.zeros(m, dtype=torch.int64)  # how many real balls (k_dc) hold fake j
    covered = torch.zeros(n, dtype=torch.bool)  # real ball i (k_dc) holds some fake
    for i0 in range(0, n, batch_size):
        i1 = min(i0 + batch_size, n)
        for j0 in range(0, m, batch_size):
            j1 = min(j0 + batch_size, m)
            d = left[i0:i1] @ right[j0:j1].T  # (real rows, fake rows), squared: torch-fidelity's dist_2_1
            if k_pr is not None:
                precise[j0:j1] |= (d <= real_knn[i0:i1, k_pr - 1, None]).any(0)
                recalled[i0:i1] |= (d <= fake_knn[j0:j1, k_pr - 1]).any(1)  # type: ignore[index]
            if k_dc is not None:
                within = d <= real_knn[i0:i1, k_dc - 1, None]
                inside[j0:j1] += within.sum(0, dtype=torch.int32)  # int32: 4x faster than the default int64
                covered[i0:i1] |= within.any(1)
    out = {}
    if k_pr is not None:
        out.update(precision=precise.double().mean().item(), recall=recalled.double().mean().item())
    if k_dc is not None:
        out.update(density=inside.sum().item() / (k_dc * m), coverage=covered.double().mean().item())
    return out


def precision_recall(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, k: int = 3, batch_size: int = 2048
) -> tuple[float, float]:
    """Improved precision (fake samples inside at least one real k-NN ball) and recall (real samples inside at
    least one fake k-NN ball), each a fraction in [0, 1]."""
    real, fake = _pair(real, fake, batch_size)
    _check_k(k, len(real), "real features")
    _check_k(k, len(fake), "fake features")
    s = _scores(real, fake, _knn_sq(real, k, batch_size), _knn_sq(fake, k, batch_size), k, None, batch_size)
    return s["precision"], s["recall"]


def density_coverage(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, k: int = 5, batch_size: int = 2048
) -> tuple[float, float]:
    """Density 1/(kM) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))] (about 1 when fakes follow the real density,
    above 1 where they crowd) and coverage 1/N sum_i 1[some Y_j in B(X_i, NND_k(X_i))], with real X (N rows)
    and fake Y (M rows)."""
    real, fake = _pair(real, fake, batch_size)
    _check_k(k, len(real), "real features")
    s = _scores(real, fake, _knn_sq(real, k, batch_size), None, None, k, batch_size)
    return s["density"], s["coverage"]


# Four metrics registered apart (precision, recall, density, coverage) share one computation through these;
# the real set's neighbours also carry over from one evaluation to the next.
_KNN_CACHE: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
_SCORES_CACHE: OrderedDict[Hashable, dict[str, float]] = OrderedDict()


def _remember(cache: OrderedDict[Hashable, T], key: Hashable, compute: Callable[[], T]) -> T:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = compute()
    if len(cache) > _CACHE_ENTRIES:
        cache.popitem(last=False)
    return value


def _fingerprint(x: torch.Tensor, batch_size: int) -> tuple:
    """Shape, dtype and a weighted float64 checksum of the values.

    Not the address (``data_ptr``): the allocator hands a freed block to the next evaluation's features, and a
    buffer can be refilled in place; both would then read stale scores.
    """
    col = torch.linspace(1, 2, x.shape[1], dtype=torch.float64)
    row_sums = torch.cat([chunk.double() @ col for chunk in x.split(batch_size)])
    checksum = float(row_sums @ torch.linspace(1, 2, len(x), dtype=torch.float64))
    return tuple(x.shape), x.dtype, checksum


def manifold_scores(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    k_pr: int = 3,
    k_dc: int = 5,
    batch_size: int = 2048,
) -> dict[str, float]:
    """``{"precision", "recall", "density", "coverage"}`` from one pass over the distances.

    Remembered by the features' values: the four metrics asking in turn compute once, and a real set seen
    before keeps its neighbour radii.
    """
    real, fake = _pair(real, fake, batch_size)
    _check_k(k_pr, len(real), "real features")
    _check_k(k_pr, len(fake), "fake features")
    _check_k(k_dc, len(real), "real features")
    real_id, fake_id = _fingerprint(real, batch_size), _fingerprint(fake, batch_size)
    kmax = max(k_pr, k_dc)

    def compute() -> dict[str, float]:
        real_knn = _remember(_KNN_CACHE, (real_id, kmax), lambda: _knn_sq(real, kmax, batch_size))
        fake_knn = _remember(_KNN_CACHE, (fake_id, k_pr), lambda: _knn_sq(fake, k_pr, batch_size))
        return _scores(real, fake, real_knn, fake_knn, k_pr, k_dc, batch_size)

    return dict(_remember(_SCORES_CACHE, (real_id, fake_id, k_pr, k_dc), compute))  # a copy: callers may edit it
