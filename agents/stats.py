"""Statistics for benchmark tables: mean, spread and confidence interval per agent, paired tests between agents.

Why paired: every agent is evaluated on the same seeds, i.e. the same task instances, data order and
model initialisation. Seed-to-seed variance is large next to the effect of the sampling policy, and
comparing per-seed differences removes it; two unpaired means would need many more seeds to show
the same effect.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Below this many pairs the Wilcoxon signed-rank test is not reported: with n = 5 its smallest
#: possible two-sided p-value is 2 / 2^5 = 0.0625, so it could never reach p < 0.05.
MIN_WILCOXON_PAIRS = 6
#: Fewer pairs than this get no t-test p-value ("n/a" in the tables): with 2 pairs the test has one
#: degree of freedom and its p-value says next to nothing.
MIN_T_PAIRS = 3


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and t-interval of one metric over seeds (units of the input).

    :param n: number of values.
    :param mean: their mean.
    :param std: sample standard deviation (``ddof=1``); NaN for a single value.
    :param ci_low: lower end of the t-interval for the mean; NaN for a single value.
    :param ci_high: upper end of the t-interval for the mean; NaN for a single value.
    :param confidence: coverage of the interval, e.g. 0.95.
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95


@dataclass(frozen=True)
class PairedComparison:
    """Per-seed differences ``agent - baseline`` of one metric (units of the inputs).

    :param n: number of pairs (seeds).
    :param mean_diff: mean difference.
    :param ci_low: lower end of the t-interval of the mean difference.
    :param ci_high: upper end of the t-interval of the mean difference.
    :param t_pvalue: two-sided paired t-test p-value (:func:`scipy.stats.ttest_rel`); 1.0 when every
        difference is exactly 0 (no evidence of a difference), NaN for a single pair.
    :param wilcoxon_pvalue: two-sided Wilcoxon signed-rank p-value, or ``None`` below
        :data:`MIN_WILCOXON_PAIRS` pairs; 1.0 when every difference is 0.
    :param confidence: coverage of the interval.
    """

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    t_pvalue: float
    wilcoxon_pvalue: float | None
    confidence: float = 0.95

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the paired t-test rejects "no difference" at level ``alpha``."""
        return not math.isnan(self.t_pvalue) and self.t_pvalue < alpha


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, std and the Student-t confidence interval of the mean of ``values``.

    :param values: one value per seed.
    :param confidence: coverage of the interval, in ``(0, 1)``.
    """
    x = _as_array(values, "values")
    mean = float(x.mean())
    if x.size < 2:
        return Summary(int(x.size), mean, math.nan, math.nan, math.nan, confidence)
    std = float(x.std(ddof=1))
    low, high = _t_interval(mean, std, x.size, confidence)
    return Summary(int(x.size), mean, std, low, high, confidence)


def paired_comparison(
    values: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> PairedComparison:
    """Compare an agent with the baseline on the same seeds: mean difference, its CI, and two tests.

    :param values: the agent's metric, one value per seed.
    :param baseline: the baseline's metric on the same seeds, in the same order.
    :param confidence: coverage of the interval of the mean difference.
    """
    x, y = _as_array(values, "values"), _as_array(baseline, "baseline")
    if x.shape != y.shape:
        raise ValueError(f"paired comparison needs one baseline value per value: got {x.size} and {y.size}")
    diff = x - y
    n = int(diff.size)
    mean = float(diff.mean())
    if n < 2:
        return PairedComparison(n, mean, math.nan, math.nan, math.nan, None, confidence)
    std = float(diff.std(ddof=1))
    low, high = _t_interval(mean, std, n, confidence)
    if np.all(diff == 0):
        # Zero variance: both tests divide by zero, so neither reports a p-value ("n/a", never a star).
        return PairedComparison(n, mean, low, high, math.nan, None, confidence)
    # scipy warns about ties or a constant difference and then still returns the documented value;
    # the warnings would only interleave with the progress bar.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A constant non-zero difference has zero variance: the t statistic is infinite and scipy's
        # p = 0 would be starred as certain, so it is reported as not available, as are too few pairs.
        constant = std <= 1e-12 * max(1.0, abs(mean))  # equal up to float rounding of the differences
        t_pvalue = math.nan if n < MIN_T_PAIRS or constant else float(stats.ttest_rel(x, y).pvalue)
        wilcoxon_pvalue = float(stats.wilcoxon(x, y).pvalue) if n >= MIN_WILCOXON_PAIRS else None
    return PairedComparison(n, mean, low, high, t_pvalue, wilcoxon_pvalue, confidence)


def _t_interval(mean: float, std: float, n: int, confidence: float) -> tuple[float, float]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} is invalid: expected a number in (0, 1), e.g. 0.95")
    half_width = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * std / math.sqrt(n)
    return mean - half_width, mean + half_width


def _as_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"{name} is empty: need at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or inf: {x.tolist()}")
    return x
