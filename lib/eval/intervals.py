"""The cells of every study's ``summary.json``: a number over repetitions with its interval, and a paired comparison.

A repetition is one seed (or one seed x fold); a study reports each number as
the mean over its repetitions with a 95 % interval that stays in the range of
the quantity, chosen per quantity by the caller through ``bounds``:

* ``"t"`` (no bounds: a loss, an MAE, a difference): the Student-t interval
  ``mean +- t_{(1 + level) / 2, n - 1} * s / sqrt(n)`` with the sample standard
  deviation ``s`` (ddof 1).
* ``"bootstrap"`` (a quantity with bounds: a rate, an accuracy, an AUC, R^2, a
  correlation): the percentile bootstrap of the mean. ``BOOTSTRAP_RESAMPLES``
  resamples of the n values with replacement, drawn by a NumPy generator seeded
  ``BOOTSTRAP_SEED`` (so a cell is the same in every run); the interval is the
  ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means.
  Every resampled mean is a mean of observed values, so the interval lies within
  [min, max] of the values and hence within the bounds, without any clipping. The
  price: it cannot reach beyond what was observed, so with few repetitions it is
  narrow (with three seeds about [min, max], which covers the mean less often than
  95 %); a t interval, by contrast, can leave the range (a rank correlation of
  0.47 +- 1.88 over three seeds). Fisher's z is not used for correlations: the
  correlations reported here reach +-1 (a Spearman rho over four intervals),
  where z is infinite, and the back-transformed mean z is not the mean the tables
  report.
* ``"bootstrap_items"`` (a per-item metric with the items at hand: Recall@1 per
  query, the pointing game per scene): the nested bootstrap. A resample draws n
  repetitions with replacement and, within each drawn repetition, its items with
  replacement; its statistic is the mean over the drawn repetitions of the mean
  over their drawn items (each repetition weighs the same, as in the reported
  mean). The interval (percentiles, as above) so carries both the seed-to-seed
  and the item-to-item variation, and stays within the items' range.

One repetition gives the mean without an interval (``low``, ``high`` None):
the seed-to-seed variation cannot be estimated from one seed.

A paired comparison ``a - b`` (both measured on the same repetitions) is the
mean difference ``d`` with its interval and the two-sided paired t-test of
``mean d = 0`` (``scipy.stats.ttest_rel``). The interval is Student-t, or, when
the compared quantity has bounds [lo, hi] (so that d lies in [lo - hi, hi - lo]),
the percentile bootstrap of the mean difference over the repetitions, for the
same reason as above (a t interval of a difference of two rates over two seeds
reaches beyond +-1). A study's comparisons form a family corrected by Holm's
step-down method (:func:`holm`), and a difference is ``supported`` when its
Holm-adjusted p-value is below ``1 - level``: the test, not the interval, decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator
from scipy import stats

#: Resamples of every bootstrap interval, and the seed of their generator (fixed: a cell is the same in every run).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

Method = Literal["t", "bootstrap", "bootstrap_items"]


def _fixed(x: float, digits: int, scale: float, signed: bool = False) -> str:
    return f"{scale * x:+.{digits}f}" if signed else f"{scale * x:.{digits}f}"


class IntervalCell(BaseModel):
    """One number over repetitions: ``mean`` of ``values`` (one per repetition, in repetition order) and its
    ``level`` interval [``low``, ``high``] by ``method`` (module docstring); no interval for one repetition."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    low: float | None
    high: float | None
    level: float = 0.95
    n: int
    values: list[float]
    method: Method

    @model_validator(mode="after")
    def _consistent(self) -> IntervalCell:
        if self.n != len(self.values) or self.n < 1:
            raise ValueError(f"n = {self.n} but {len(self.values)} values")
        if (self.low is None) != (self.high is None):
            raise ValueError("low and high are both numbers or both null")
        if self.low is not None and not self.low <= self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        return self

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        """``"mean [low, high]"``, or the mean alone without an interval (``scale`` 100 for percent)."""
        if self.low is None:
            return _fixed(self.mean, digits, scale)
        return f"{_fixed(self.mean, digits, scale)} [{_fixed(self.low, digits, scale)}, {_fixed(self.high, digits, scale)}]"


class ComparisonCell(BaseModel):
    """``a - b`` paired by repetition: the mean ``difference``, its interval by ``method`` (``"t"``, or
    ``"bootstrap"`` for a bounded quantity), the paired t-test's ``p_value``, its Holm-adjusted ``p_holm``
    once :func:`holm` has seen the study's family, whether the difference is ``supported`` (adjusted p, or p
    before :func:`holm`, below ``1 - level``) and its ``direction`` (+1: a higher, -1: b higher, 0: not
    supported)."""

    model_config = ConfigDict(extra="forbid")

    a: str
    b: str
    difference: float
    low: float | None
    high: float | None
    p_value: float | None
    p_holm: float | None = None
    supported: bool
    direction: int
    n: int
    level: float = 0.95
    method: Literal["t", "bootstrap"] = "t"

    @model_validator(mode="after")
    def _consistent(self) -> ComparisonCell:
        if (self.low is None) != (self.high is None) or (self.low is None) != (self.p_value is None):
            raise ValueError("low, high and p_value are all numbers or all null (one repetition)")
        if self.direction not in (-1, 0, 1) or (self.direction != 0) != self.supported:
            raise ValueError(f"direction {self.direction} does not match supported={self.supported}")
        if self.supported and self.direction != int(np.sign(self.difference)):
            raise ValueError(f"direction {self.direction} but difference {self.difference}")
        return self

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        """``"+d [low, high]"`` (signed), or the difference alone for one repetition."""
        if self.low is None:
            return _fixed(self.difference, digits, scale, signed=True)
        return (f"{_fixed(self.difference, digits, scale, signed=True)} "
                f"[{_fixed(self.low, digits, scale, signed=True)}, {_fixed(self.high, digits, scale, signed=True)}]")


def _as_values(values, name: str = "values") -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    if out.ndim != 1 or len(out) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence (one number per repetition), got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got {out.tolist()} (drop the repetitions without a number first)")
    return out


#: How far a value may pass its bounds by rounding (a float32 rank correlation of identical maps is 1 + 1e-7).
ROUNDING = 1e-6


def _check_bounds(values: np.ndarray, bounds: tuple[float, float] | None, what: str) -> None:
    if bounds is None:
        return
    low, high = bounds
    if not low < high:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
    if values.min() < low - ROUNDING or values.max() > high + ROUNDING:
        raise ValueError(f"{what} leave the bounds {bounds}: min {values.min()}, max {values.max()}")


def _percentiles(resampled: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(resampled, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def _bootstrap(x: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile bootstrap of the mean of ``x`` over its repetitions (module docstring)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    return _percentiles(x[rng.integers(0, len(x), size=(BOOTSTRAP_RESAMPLES, len(x)))].mean(axis=1), level)


def _item_bootstrap(items: list[np.ndarray], level: float) -> tuple[float, float]:
    """Nested percentile bootstrap (module docstring): repetitions with replacement, then items within each."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    n = len(items)
    drawn = rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))  # which repetition fills each slot of each resample
    slot_means = np.empty(drawn.shape)
    for s, values in enumerate(items):
        # Every slot that drew repetition s gets its own resample of s's items.
        slots = drawn == s
        picks = rng.integers(0, len(values), size=(int(slots.sum()), len(values)))
        slot_means[slots] = values[picks].mean(axis=1)
    return _percentiles(slot_means.mean(axis=1), level)


def interval_cell(values, *, bounds: tuple[float, float] | None = None, level: float = 0.95,
                  items: Sequence | None = None) -> IntervalCell:
    """The mean of ``values`` (n,), one per repetition, with its ``level`` interval (module docstring):

    * ``items`` given: one 1-D array per repetition of the per-item values whose
      mean is that repetition's value (e.g. Recall@1 of each query), and the
      nested bootstrap over repetitions and items (``"bootstrap_items"``);
    * else ``bounds`` (low, high) given: the percentile bootstrap over the
      repetitions (``"bootstrap"``); the values must lie within the bounds;
    * else the Student-t interval (``"t"``).

    One repetition gives ``low = high = None``. Non-finite values are refused:
    leave out the repetitions without a number (and say so) before calling.
    """
    x = _as_values(values)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    _check_bounds(x, bounds, "values")
    mean = float(x.mean())
    if items is not None:
        method: Method = "bootstrap_items"
        per_item = [_as_values(v, f"items[{s}]") for s, v in enumerate(items)]
        if len(per_item) != len(x):
            raise ValueError(f"items hold {len(per_item)} repetitions, values {len(x)}")
        for s, v in enumerate(per_item):
            _check_bounds(v, bounds, f"items[{s}]")
            # A repetition's value may have been summed in float32 (a score of a float32 model): 1e-6 relative.
            if not math.isclose(float(v.mean()), float(x[s]), rel_tol=1e-6, abs_tol=1e-9):
                raise ValueError(f"items[{s}] average {v.mean()}, but values[{s}] is {x[s]}: "
                                 "the items must be the ones the repetition's value is the mean of")
    else:
        method = "t" if bounds is None else "bootstrap"
    low = high = None
    if len(x) > 1:
        if method == "t":
            half = stats.t.ppf((1.0 + level) / 2.0, df=len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
            low, high = mean - float(half), mean + float(half)
        elif method == "bootstrap":
            low, high = _bootstrap(x, level)
        else:
            low, high = _item_bootstrap(per_item, level)
    return IntervalCell(mean=mean, low=low, high=high, level=level, n=len(x), values=x.tolist(), method=method)


def comparison_cell(a_values, b_values, *, a: str, b: str, bounds: tuple[float, float] | None = None,
                    level: float = 0.95) -> ComparisonCell:
    """``a - b`` paired by repetition (``a_values[s]`` and ``b_values[s]`` from repetition s).

    With d_s = a_s - b_s over n repetitions: the mean d; its interval, Student-t
    ``mean d +- t_{(1 + level) / 2, n - 1} * sd(d) / sqrt(n)``, or, when ``bounds``
    (lo, hi) of the compared quantity are both finite, the percentile bootstrap
    of the mean d (within [min d, max d], so within [lo - hi, hi - lo]); and the
    two-sided paired t-test's p-value (as ``scipy.stats.ttest_rel``; with
    sd(d) = 0, where the test is undefined, p is 1 for d = 0 and 0 otherwise).
    ``supported`` is p < 1 - level until :func:`holm` corrects it for the
    study's family; one repetition gives no interval, no p-value and never
    supports a difference.
    """
    x, y = _as_values(a_values, "a_values"), _as_values(b_values, "b_values")
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same number of repetitions, got {len(x)} ({a}) and {len(y)} ({b})")
    _check_bounds(x, bounds, f"values of {a}")
    _check_bounds(y, bounds, f"values of {b}")
    method = "bootstrap" if bounds is not None and all(map(math.isfinite, bounds)) else "t"
    d = x - y
    mean = float(d.mean())
    if len(d) < 2:
        return ComparisonCell(a=a, b=b, difference=mean, low=None, high=None, p_value=None, supported=False,
                              direction=0, n=1, level=level, method=method)
    sd = float(d.std(ddof=1))
    if method == "t":
        half = float(stats.t.ppf((1.0 + level) / 2.0, df=len(d) - 1)) * sd / math.sqrt(len(d))
        low, high = mean - half, mean + half
    else:
        low, high = _bootstrap(d, level)
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = float(2.0 * stats.t.sf(abs(mean) / (sd / math.sqrt(len(d))), df=len(d) - 1))
    supported = p < 1.0 - level
    return ComparisonCell(a=a, b=b, difference=mean, low=low, high=high, p_value=p, supported=supported,
                          direction=int(np.sign(mean)) if supported else 0, n=len(d), level=level, method=method)


def holm(cells: Sequence[ComparisonCell]) -> list[ComparisonCell]:
    """Holm's step-down correction of a family of comparisons; new cells, in the given order.

    With the m cells that have a p-value sorted ascending, p_(1) <= ... <= p_(m),
    the adjusted p_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)); a difference is
    ``supported`` when its adjusted p is below 1 - level (the family's error rate
    of falsely supported differences is then at most 1 - level). Cells without a
    p-value (one repetition) stay unsupported and count for nothing.
    """
    levels = {c.level for c in cells}
    if len(levels) > 1:
        raise ValueError(f"one family needs one level, got {sorted(levels)}")
    tested = [i for i, c in enumerate(cells) if c.p_value is not None]
    order = sorted(tested, key=lambda i: cells[i].p_value)
    m = len(order)
    adjusted: dict[int, float] = {}
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * cells[i].p_value))
        adjusted[i] = running
    out = []
    for i, c in enumerate(cells):
        p_holm = adjusted.get(i)
        supported = p_holm is not None and p_holm < 1.0 - c.level
        out.append(c.model_copy(update={"p_holm": p_holm, "supported": supported,
                                        "direction": int(np.sign(c.difference)) if supported else 0}))
    return out
