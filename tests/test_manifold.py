"""Precision/recall and density/coverage (dcgan.metrics.manifold): agreement with torch-fidelity's metric_prc,
answers worked out by hand, a loop-by-loop reference, blocking, the shared cache and the errors a caller meets."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

from dcgan.metrics import manifold
from dcgan.metrics.manifold import density_coverage, knn_radii, manifold_scores, precision_recall

LINE = torch.arange(10.0)[:, None]  # real: 0, 1, ..., 9 on a line; exact in the matmul form |x|^2 + |y|^2 - 2xy


def _features(n: int, m: int, dim: int, seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(n, dim, generator=gen, dtype=dtype)
    fake = torch.randn(m, dim, generator=gen, dtype=dtype) + 0.5  # overlapping, not identical
    return real, fake


def _brute_force(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """The papers' sums, one pair of points at a time."""
    x, y = real.tolist(), fake.tolist()

    def nnd(points: list[list[float]], i: int) -> float:
        return sorted(math.dist(points[i], p) for j, p in enumerate(points) if j != i)[k - 1]

    rx = [nnd(x, i) for i in range(len(x))]
    ry = [nnd(y, j) for j in range(len(y))]
    in_real = [[math.dist(yj, xi) <= rx[i] for i, xi in enumerate(x)] for yj in y]  # [j][i]: Y_j in B(X_i)
    return {
        "precision": sum(any(row) for row in in_real) / len(y),
        "recall": sum(any(math.dist(xi, yj) <= ry[j] for j, yj in enumerate(y)) for xi in x) / len(x),
        "density": sum(sum(row) for row in in_real) / (k * len(y)),
        "coverage": sum(any(row[i] for row in in_real) for i in range(len(x))) / len(x),
    }


@pytest.mark.parametrize("save_cpu_ram", [False, True])
@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_equal_torch_fidelity_metric_prc(save_cpu_ram: bool, k: int) -> None:
    metric_prc = pytest.importorskip("torch_fidelity.metric_prc")
    real, fake = _features(200, 171, 32, seed=0)
    theirs = metric_prc.prc_features_to_metric(
        fake, real, prc_neighborhood=k, prc_batch_size=100, save_cpu_ram=save_cpu_ram, verbose=False
    )  # their convention: features_1 generated, features_2 real
    precision, recall = precision_recall(real, fake, k=k, batch_size=128)
    assert 0.2 < precision < 0.9 and 0.2 < recall < 0.9  # a case that tells the two apart
    assert precision == pytest.approx(theirs["precision"], abs=1e-6)  # theirs is a float32 mean of the same flags
    assert recall == pytest.approx(theirs["recall"], abs=1e-6)


def test_knn_radii_are_the_kth_neighbour_distance_without_the_point_itself() -> None:
    real, _ = _features(200, 1, 16, seed=1)
    expected = torch.cdist(real.double(), real.double()).kthvalue(4, dim=1).values  # the 1st is the point itself
    torch.testing.assert_close(knn_radii(real, 3, batch_size=64).double(), expected, rtol=1e-5, atol=1e-5)
    assert knn_radii(LINE, 2).tolist() == [2, 1, 1, 1, 1, 1, 1, 1, 1, 2]


@pytest.mark.parametrize("batch_size", [7, 2048])
def test_identical_sets_score_full_precision_recall_coverage_and_density_k_plus_1_over_k(batch_size: int) -> None:
    real, _ = _features(120, 1, 8, seed=2)
    # Each ball holds its centre and its k neighbours, the k-th on its edge: density = (k + 1) / k exactly.
    expected = {"precision": 1.0, "recall": 1.0, "density": 6 / 5, "coverage": 1.0}
    assert manifold_scores(real, real.clone(), batch_size=batch_size) == expected


def test_far_apart_sets_score_zero() -> None:
    real, fake = _features(60, 50, 8, seed=3)
    assert manifold_scores(real, fake + 1000.0) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_fake_subset_of_a_line_gives_the_hand_worked_values() -> None:
    # real 0..9: NND_5 = 5 4 3 3 3 3 3 3 4 5; fake 0..3: NND_3 = 3 2 2 3.
    # Real balls holding fake 0, 1, 2, 3: 4, 5, 6, 7 (of balls 0-3, 0-4, 0-5, 0-6); fake balls reach 3, 3, 4, 6.
    fake = LINE[:4]
    assert precision_recall(LINE, fake) == (1.0, 7 / 10)  # every fake is a real point; fake balls reach 0..6
    assert density_coverage(LINE, fake) == (22 / (5 * 4), 7 / 10)  # balls 0..6 hold a fake
    assert precision_recall(fake, LINE) == (7 / 10, 1.0)  # swapping the roles swaps precision and recall
    # k=2: NND_2 = 2 1 1 1 1 1 1 1 1 2; fake 0, 1, 2 lie in 2, 3, 4 real balls (0-1, 0-2, 0-3)
    assert density_coverage(LINE, LINE[:3], k=2) == (9 / (2 * 3), 4 / 10)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_scores_equal_a_loop_by_loop_reference(k: int) -> None:
    real, fake = _features(23, 17, 3, seed=10 + k, dtype=torch.float64)
    expected = _brute_force(real, fake, k)
    assert precision_recall(real, fake, k=k, batch_size=8) == (expected["precision"], expected["recall"])
    assert density_coverage(real, fake, k=k, batch_size=8) == (expected["density"], expected["coverage"])
    assert manifold_scores(real, fake, k_pr=k, k_dc=k) == expected


def test_blocked_distances_give_the_unblocked_scores() -> None:
    real, fake = _features(17, 13, 16, seed=4)
    whole = manifold_scores(real, fake, batch_size=4096)
    for batch_size in (1, 4, 7):  # ragged last blocks, and blocks smaller than k
        assert precision_recall(real, fake, batch_size=batch_size) == (whole["precision"], whole["recall"])
        assert density_coverage(real, fake, batch_size=batch_size) == (whole["density"], whole["coverage"])
        torch.testing.assert_close(knn_radii(real, 5, batch_size), knn_radii(real, 5, 4096), rtol=1e-6, atol=1e-6)


def test_four_metrics_share_one_computation_until_the_features_change(monkeypatch: pytest.MonkeyPatch) -> None:
    real, fake = _features(80, 70, 8, seed=5)
    calls = {"knn": 0, "scores": 0}
    knn, scores = manifold._knn_sq, manifold._scores

    def counted_knn(*args: object) -> torch.Tensor:
        calls["knn"] += 1
        return knn(*args)

    def counted_scores(*args: object) -> dict[str, float]:
        calls["scores"] += 1
        return scores(*args)

    monkeypatch.setattr(manifold, "_KNN_CACHE", OrderedDict())  # nothing remembered from other tests
    monkeypatch.setattr(manifold, "_SCORES_CACHE", OrderedDict())
    monkeypatch.setattr(manifold, "_knn_sq", counted_knn)
    monkeypatch.setattr(manifold, "_scores", counted_scores)
    first = manifold_scores(real, fake)
    assert [manifold_scores(real.numpy(), fake)[key] for key in first] == list(first.values())
    assert calls == {"knn": 2, "scores": 1}  # the real and the fake radii, one pass over real x fake

    fake += 0.5  # refilled in place: same address and shape, other values
    moved = manifold_scores(real, fake)
    assert calls == {"knn": 3, "scores": 2}  # the real radii are kept
    assert moved != first
    assert moved == dict(zip(first, (*precision_recall(real, fake), *density_coverage(real, fake)), strict=True))


@pytest.mark.parametrize(
    ("real", "fake", "k", "match"),
    [
        (torch.zeros(10, 8), torch.zeros(10, 4), 3, r"real features are 8-d and fake features 4-d.*same network"),
        (torch.zeros(3, 4), torch.zeros(10, 4), 3, r"real features have 3 rows.*at least 4 rows.*smaller k"),
        (torch.zeros(10, 4), torch.zeros(2, 4), 3, r"fake features have 2 rows.*at least 4 rows"),
        (torch.zeros(10), torch.zeros(10, 4), 3, r"real features of shape \(10,\): expected \(N, D\)"),
        (torch.zeros(10, 4), torch.zeros(10, 4), 0, r"k=0: expected a positive whole number"),
        (torch.full((10, 4), np.nan), torch.zeros(10, 4), 3, r"real features hold NaN or inf"),
    ],
)
def test_bad_inputs_name_the_value_and_the_fix(real: torch.Tensor, fake: torch.Tensor, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        precision_recall(real, fake, k=k)
    with pytest.raises(ValueError, match=match):
        manifold_scores(real, fake, k_pr=k)


def test_density_coverage_need_no_neighbours_among_the_fakes() -> None:
    assert density_coverage(LINE, LINE[:1]) == (4 / 5, 4 / 10)  # fake 0 lies in real balls 0-3 (NND_5: 5 4 3 3)
