"""The distances, on features already extracted: FID (Heusel et al. 2017), KID (Binkowski et al. 2018), IS
(Salimans et al. 2016), class balance, and the mode count and KL of Stacked MNIST.

Computed in float64 with the same estimators and random subsets as torch-fidelity, so that the same
features give the same numbers as that reference tool (tests/test_metrics.py checks it).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch


def feature_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, ``np.cov``) of (N, D) features, in float64."""
    x = np.asarray(features.double().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features of shape {x.shape}: expected (N, D) with N >= 2 to estimate a covariance.")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).

    Tr((S1 S2)^1/2) is the sum of the square roots of S1 S2's eigenvalues (as torch-fidelity and torchmetrics
    compute it): no matrix root to fail on a singular product, e.g. with fewer samples than dimensions.
    """
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"Statistics of different sizes ({mu1.shape} vs {mu2.shape}): they come from different feature "
            "extractors. Compare statistics made with the same network and layer."
        )
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    eigenvalues = scipy.linalg.eigvals(np.asarray(sigma1, np.float64) @ np.asarray(sigma2, np.float64))
    tr_covmean = np.sqrt(eigenvalues.astype(np.complex128)).real.sum()
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def kernel_distance(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 2020,
) -> tuple[float, float]:
    """KID: the unbiased MMD^2 with the cubic kernel (x.y / d + 1)^3, mean and std over random subsets.

    Subsets are drawn as torch-fidelity draws them (one ``RandomState(seed)``, fake then real per subset).
    """
    f_real, f_fake = (
        np.asarray(t.double().cpu() if isinstance(t, torch.Tensor) else t, np.float64) for t in (real, fake)
    )
    if subset_size > min(len(f_real), len(f_fake)):
        raise ValueError(
            f"KID subset size {subset_size} > {min(len(f_real), len(f_fake))} samples: use a subset size no larger "
            "than the number of real and generated images."
        )
    rng = np.random.RandomState(seed)
    dim = f_real.shape[1]
    m = subset_size
    values = np.empty(subsets)
    for i in range(subsets):
        x = f_fake[rng.choice(len(f_fake), m, replace=False)]
        y = f_real[rng.choice(len(f_real), m, replace=False)]
        k_xx, k_yy, k_xy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        values[i] = (
            (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
            + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
            - 2 * k_xy.mean()
        )
    return float(values.mean()), float(values.std())


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """exp(E KL(p(y|x) || p(y))) over ``splits`` chunks of softmax(logits): mean and std (ddof 0).

    The samples are shuffled with ``RandomState(seed)`` first and split at i*N//splits, as torch-fidelity does.
    """
    n = len(logits)
    if n < splits:
        raise ValueError(f"Inception score with {splits} splits needs at least {splits} images, got {n}.")
    order = torch.from_numpy(np.random.RandomState(seed).permutation(n))
    log_p = torch.log_softmax(logits.double()[order], dim=1)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        log_marginal = torch.logsumexp(part, dim=0) - np.log(len(part))
        kl = (part.exp() * (part - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def class_balance(logits: torch.Tensor, num_classes: int) -> float:
    """exp(entropy of the predicted-class histogram) / classes: 1 when samples spread evenly, 1/K when one class."""
    counts = torch.bincount(logits.argmax(1), minlength=num_classes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return math.exp(entropy) / num_classes


def mode_histogram(logits: torch.Tensor) -> torch.Tensor:
    """How many samples fall in each mode (the argmax of ``logits`` over K modes): (K,) int64 counts."""
    return torch.bincount(logits.argmax(1), minlength=logits.size(1))


def modes_and_kl(logits: torch.Tensor) -> tuple[int, float]:
    """Stacked MNIST's two numbers (Metz et al. 2017; VEEGAN; PacGAN): the modes with at least one sample, and
    KL(p || uniform) of the mode histogram p, sum over p > 0 of p log(p K), in nats."""
    counts = mode_histogram(logits).double()
    p = counts[counts > 0] / counts.sum()
    return int((counts > 0).sum()), float((p * (p * logits.size(1)).log()).sum())
