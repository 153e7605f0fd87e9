"""Statistics of the benchmark tables: mean ± sd over runs, and paired per-case comparisons.

A paired comparison works on per-case values of two methods (``{case: value}``, e.g. each
case's Dice averaged over seeds, or out of fold): :func:`paired_differences` pairs the cases
both have, :func:`bootstrap_ci` and :func:`wilcoxon_p` test the differences, and
:func:`paired_comparison` reports all three; :func:`holm` corrects p-values across methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "bootstrap_ci",
    "fold_level_comparison",
    "holm",
    "mean_sd",
    "paired_comparison",
    "paired_differences",
    "wilcoxon_p",
]


def mean_sd(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample sd (``ddof=1``; 0 for one value) of the values that are not None or NaN; NaNs when none."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def paired_differences(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    """The cases both ``a`` and ``b`` have (sorted) and ``b - a`` on each of them."""
    cases = sorted(set(a) & set(b))
    return cases, np.asarray([b[c] - a[c] for c in cases], dtype=float)


def bootstrap_ci(d: np.ndarray, seed: int = 0, n_boot: int = 10000) -> tuple[float, float]:
    """Percentile bootstrap 95 % CI of the mean of ``d`` (``n_boot`` resamples drawn with ``default_rng(seed)``).

    The resamples are scipy's (:func:`scipy.stats.bootstrap`); the interval is taken with
    ``np.percentile(..., 2.5 / 97.5)`` because scipy's own quantile at ``(1 - 0.95) / 2``
    differs from it in the last bits, which would change the published table1.json numbers.
    """
    from scipy.stats import bootstrap

    boots = bootstrap((d,), np.mean, n_resamples=n_boot, method="percentile", rng=np.random.default_rng(seed))
    dist = boots.bootstrap_distribution
    return float(np.percentile(dist, 2.5)), float(np.percentile(dist, 97.5))


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of the paired differences ``d``; 1 when all are zero."""
    from scipy.stats import wilcoxon

    return float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0


def paired_comparison(a: Mapping[str, float], b: Mapping[str, float], seed: int = 0, n_boot: int = 10000) -> dict[str, Any]:
    """``b - a`` over the cases both have: mean, bootstrap 95 % CI, Wilcoxon signed-rank p."""
    cases, d = paired_differences(a, b)
    out: dict[str, Any] = {"n": len(cases), "mean_diff": float(d.mean()) if len(d) else float("nan")}
    if len(d) >= 2:
        out["ci_low"], out["ci_high"] = bootstrap_ci(d, seed, n_boot)
        out["wilcoxon_p"] = wilcoxon_p(d)
    else:
        out["ci_low"] = out["ci_high"] = out["wilcoxon_p"] = float("nan")
    return out


def fold_level_comparison(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """``b - a`` over the folds both have, each fold one replicate (its mean over its cases).

    Returns the per-fold differences, their mean, a t-based 95 % CI of the mean (``n - 1`` degrees
    of freedom), the paired t-test p and the exact two-sided Wilcoxon signed-rank p (with 5 folds
    its smallest possible value is 0.0625, so it cannot reach 0.05: the t-test is the test that can),
    and how many folds favour ``b``.
    """
    from scipy import stats

    folds = sorted(set(a) & set(b))
    d = np.asarray([b[f] - a[f] for f in folds], dtype=float)
    out: dict[str, Any] = {"folds": folds, "per_fold": [float(v) for v in d], "n": len(d),
                           "mean_diff": float(d.mean()) if len(d) else float("nan"), "b_better": int((d > 0).sum())}  # fmt: skip
    if len(d) >= 2 and np.any(d != d[0]):
        half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
        out["ci_low"], out["ci_high"] = out["mean_diff"] - half, out["mean_diff"] + half
        out["t_p"] = float(stats.ttest_rel(np.asarray([b[f] for f in folds]), np.asarray([a[f] for f in folds])).pvalue)
        out["wilcoxon_p"] = float(stats.wilcoxon(d, method="exact").pvalue) if np.any(d != 0) else 1.0
    else:
        out["ci_low"] = out["ci_high"] = out["t_p"] = out["wilcoxon_p"] = float("nan")
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error across the comparisons), in input order.

    The i-th smallest p (from 0) is multiplied by ``m - i``, made non-decreasing in that order
    and capped at 1; NaNs stay NaN and do not count towards ``m``.
    """
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, np.nan)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (len(valid) - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]
