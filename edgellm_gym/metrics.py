"""Episode and benchmark statistics (pure functions over numpy arrays)."""

from __future__ import annotations

import numpy as np

__all__ = ["jain_index", "mean_or_zero", "mean_ci95"]


def jain_index(x) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all equal, 1/n at worst; 1.0 for no data."""
    x = np.asarray(x, dtype=float)
    sq = float(np.sum(x * x))
    if x.size == 0 or sq == 0.0:
        return 1.0
    return float(np.sum(x)) ** 2 / (x.size * sq)


def mean_or_zero(x) -> float:
    """Mean of `x`, or 0.0 when empty (an episode with nothing to average)."""
    x = np.asarray(x, dtype=float)
    return float(x.mean()) if x.size else 0.0


def mean_ci95(x) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t confidence interval (0 for n < 2)."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)
