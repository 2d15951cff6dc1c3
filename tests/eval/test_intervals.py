"""Cells of summary.json: intervals over repetitions and paired comparisons, against scipy and naive oracles."""

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from lib.eval.intervals import (
    BOOTSTRAP_RESAMPLES,
    ComparisonCell,
    IntervalCell,
    comparison_cell,
    holm,
    interval_cell,
)


# ------------------------------------------------------------------ Student-t
def test_unbounded_cell_is_scipys_t_interval():
    values = np.array([0.61, 0.58, 0.66, 0.70, 0.59])
    cell = interval_cell(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert cell.method == "t" and cell.n == 5 and cell.values == values.tolist()
    assert cell.mean == pytest.approx(values.mean())
    assert (cell.low, cell.high) == (pytest.approx(low), pytest.approx(high))
    # t_{0.975, 2} = 4.302653 with sd 1 over three values; another level changes the quantile.
    three = interval_cell([1.0, 2.0, 3.0])
    assert three.high - three.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    ninety = interval_cell([1.0, 2.0, 3.0], level=0.9)
    assert ninety.level == 0.9 and ninety.high - ninety.mean == pytest.approx(stats.t.ppf(0.95, 2) / math.sqrt(3))


def test_one_repetition_has_no_interval():
    for cell in (interval_cell([0.5]), interval_cell([0.5], bounds=(0, 1)),
                 interval_cell([0.5], bounds=(0, 1), items=[[0.0, 1.0]])):
        assert cell.mean == 0.5 and cell.low is None and cell.high is None and cell.n == 1
    assert interval_cell([0.5]).format() == "0.500"


def test_bad_values_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        interval_cell([])
    with pytest.raises(ValueError, match="finite"):
        interval_cell([0.5, float("nan")])
    with pytest.raises(ValueError, match="leave the bounds"):
        interval_cell([0.5, 1.2], bounds=(0.0, 1.0))
    assert interval_cell([0.5, 1.0 + 1e-7], bounds=(0.0, 1.0)).n == 2  # float32 rounding of a correlation of 1
    with pytest.raises(ValueError, match="low < high"):
        interval_cell([0.5, 0.6], bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="items hold 1 repetitions"):
        interval_cell([0.5, 0.6], items=[[0.5]])
    with pytest.raises(ValueError, match=r"items\[1\] average"):
        interval_cell([0.5, 0.6], items=[[0.0, 1.0], [1.0, 1.0]])


# ------------------------------------------------------------------ bootstrap
def test_bounded_cell_is_scipys_percentile_bootstrap():
    rng = np.random.default_rng(3)
    values = rng.beta(2, 5, size=12)
    cell = interval_cell(values, bounds=(0.0, 1.0))
    reference = stats.bootstrap((values,), np.mean, method="percentile", n_resamples=10 * BOOTSTRAP_RESAMPLES,
                                confidence_level=0.95, random_state=np.random.default_rng(1)).confidence_interval
    # Two Monte Carlo estimates of the same percentiles: ours carries about 0.03 standard errors of
    # resampling noise (10,000 resamples), so they agree within 0.1.
    spread = values.std(ddof=1) / math.sqrt(len(values))
    assert cell.method == "bootstrap"
    assert cell.low == pytest.approx(reference.low, abs=0.1 * spread)
    assert cell.high == pytest.approx(reference.high, abs=0.1 * spread)


def test_bounded_intervals_stay_in_range_and_contain_the_mean():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 20):
        for _ in range(20):
            values = np.clip(rng.normal(0.9, 0.2, size=n), -1.0, 1.0)  # correlations near the top of their range
            cell = interval_cell(values, bounds=(-1.0, 1.0))
            assert -1.0 <= values.min() <= cell.low <= cell.mean <= cell.high <= values.max() <= 1.0
    # The case that motivated it: a Student-t interval over three seeds leaves the range, the bootstrap cannot.
    values = [1.0, -0.4, 0.8]
    t = interval_cell(values)
    boot = interval_cell(values, bounds=(-1.0, 1.0))
    assert t.high > 1.0 and t.low < -1.0
    assert -1.0 <= boot.low <= boot.mean <= boot.high <= 1.0
    # Values at the bounds are fine (no transform to break); all equal gives a point interval.
    assert interval_cell([1.0, 1.0, 1.0], bounds=(0, 1)).low == 1.0


def test_bootstrap_is_deterministic():
    values = [0.2, 0.5, 0.45, 0.3]
    assert interval_cell(values, bounds=(0, 1)) == interval_cell(values, bounds=(0, 1))


def _naive_nested_bootstrap(items, level, n_resamples, rng):
    """From the definition, one resample at a time: draw repetitions, then items within each drawn one."""
    stats_ = []
    for _ in range(n_resamples):
        chosen = rng.integers(0, len(items), size=len(items))
        stats_.append(np.mean([np.mean(rng.choice(items[s], size=len(items[s]), replace=True)) for s in chosen]))
    return np.quantile(stats_, [(1 - level) / 2, (1 + level) / 2])


def test_item_bootstrap_matches_the_naive_nested_bootstrap():
    rng = np.random.default_rng(5)
    items = [rng.binomial(1, p, size=k).astype(float) for p, k in ((0.6, 40), (0.7, 50), (0.65, 45))]
    values = [v.mean() for v in items]
    cell = interval_cell(values, bounds=(0.0, 1.0), items=items)
    low, high = _naive_nested_bootstrap(items, 0.95, 4000, np.random.default_rng(9))
    assert cell.method == "bootstrap_items"
    assert cell.low == pytest.approx(low, abs=0.012) and cell.high == pytest.approx(high, abs=0.012)
    assert 0.0 <= cell.low <= cell.mean <= cell.high <= 1.0


def test_item_bootstrap_adds_the_item_variation_to_the_seeds():
    # Seeds that agree exactly: the seed bootstrap has no width, the items still vary.
    items = [np.array([0.0, 1.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 1.0, 1.0, 0.0])]
    seeds_only = interval_cell([0.6, 0.6], bounds=(0, 1))
    nested = interval_cell([0.6, 0.6], bounds=(0, 1), items=items)
    assert seeds_only.low == seeds_only.high == 0.6
    assert nested.low < 0.6 < nested.high


# ------------------------------------------------------------------ paired comparisons
def test_comparison_equals_scipys_paired_t_test():
    a = np.array([0.71, 0.69, 0.74, 0.70])
    b = np.array([0.66, 0.67, 0.69, 0.68])
    c = comparison_cell(a, b, a="rnc", b="l1")
    test = stats.ttest_rel(a, b)
    low, high = test.confidence_interval(0.95)
    assert (c.a, c.b, c.n) == ("rnc", "l1", 4)
    assert c.difference == pytest.approx((a - b).mean())
    assert (c.low, c.high) == (pytest.approx(low), pytest.approx(high))
    assert c.p_value == pytest.approx(test.pvalue)
    assert c.supported and c.direction == 1 and c.p_holm is None
    assert comparison_cell(b, a, a="l1", b="rnc").direction == -1


def test_bounded_comparison_is_the_bootstrap_of_the_differences_and_stays_in_range():
    a, b = np.array([0.90, 0.10]), np.array([0.10, 0.95])  # two seeds that disagree completely
    t = comparison_cell(a, b, a="x", b="y")
    assert t.method == "t" and t.low < -1.0 and t.high > 1.0  # a difference of two rates beyond +-1
    c = comparison_cell(a, b, a="x", b="y", bounds=(0.0, 1.0))
    assert c.method == "bootstrap" and -0.85 <= c.low <= c.difference <= c.high <= 0.8
    assert c.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)  # the test does not change
    rng = np.random.default_rng(4)
    a, b = rng.beta(5, 2, size=10), rng.beta(4, 2, size=10)
    c = comparison_cell(a, b, a="x", b="y", bounds=(0.0, 1.0))
    reference = stats.bootstrap((a - b,), np.mean, method="percentile", n_resamples=10 * BOOTSTRAP_RESAMPLES,
                                random_state=np.random.default_rng(1)).confidence_interval
    # Monte Carlo quantiles: ours carries about 0.03 standard errors of noise, so 0.1 is about three of its sds.
    spread = (a - b).std(ddof=1) / math.sqrt(len(a))
    assert (c.low, c.high) == (pytest.approx(reference.low, abs=0.1 * spread), pytest.approx(reference.high, abs=0.1 * spread))
    # a half-bounded quantity (R^2 <= 1) has an unbounded difference: Student-t
    assert comparison_cell(a, b, a="x", b="y", bounds=(-math.inf, 1.0)).method == "t"
    with pytest.raises(ValueError, match="leave the bounds"):
        comparison_cell([1.5, 0.5], [0.5, 0.5], a="x", b="y", bounds=(0.0, 1.0))


def test_comparison_edge_cases():
    c = comparison_cell([0.70, 0.60, 0.80], [0.65, 0.66, 0.70], a="x", b="y")
    assert not c.supported and c.direction == 0 and c.low < 0 < c.high
    one = comparison_cell([0.9], [0.1], a="x", b="y")
    assert one.low is None and one.p_value is None and not one.supported and one.difference == pytest.approx(0.8)
    equal = comparison_cell([0.5, 0.6], [0.5, 0.6], a="x", b="y")
    assert equal.difference == 0 and equal.p_value == 1.0 and not equal.supported
    shifted = comparison_cell([0.6, 0.7], [0.5, 0.6], a="x", b="y")  # the same gain in every seed
    assert shifted.p_value == 0.0 and shifted.supported and shifted.direction == 1
    with pytest.raises(ValueError, match="same number of repetitions"):
        comparison_cell([1.0, 2.0], [1.0], a="x", b="y")


# ------------------------------------------------------------------ Holm
def _naive_holm(p, alpha):
    """Holm (1979) as stated: reject H_(1), H_(2), ... while p_(i) <= alpha / (m - i + 1); and the adjusted
    p-values max_{j <= i} min(1, (m - j + 1) p_(j)), each from its own loop."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    rejected = [False] * m
    for rank, i in enumerate(order):
        if p[i] < alpha / (m - rank):
            rejected[i] = True
        else:
            break
    adjusted = [0.0] * m
    for rank, i in enumerate(order):
        adjusted[i] = max(min(1.0, (m - j) * p[order[j]]) for j in range(rank + 1))
    return adjusted, rejected


def _cell_with_p(p, difference=0.1):
    return ComparisonCell(a="x", b="y", difference=difference, low=difference - 0.01, high=difference + 0.01,
                          p_value=p, supported=p < 0.05, direction=1 if p < 0.05 else 0, n=3)


def test_holm_equals_the_naive_step_down():
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = list(np.concatenate([rng.uniform(0, 0.02, size=rng.integers(1, 5)), rng.uniform(0, 1, size=rng.integers(0, 8))]))
        corrected = holm([_cell_with_p(x) for x in p])
        adjusted, rejected = _naive_holm(p, 0.05)
        assert [c.p_holm for c in corrected] == pytest.approx(adjusted)
        assert [c.supported for c in corrected] == rejected
        assert all(c.direction == (1 if r else 0) for c, r in zip(corrected, rejected))


def test_holm_is_stricter_than_no_correction_and_skips_untested_cells():
    cells = [_cell_with_p(0.01), _cell_with_p(0.04), comparison_cell([0.9], [0.1], a="x", b="y"), _cell_with_p(0.03)]
    corrected = holm(cells)
    assert corrected[0].supported and corrected[0].p_holm == pytest.approx(0.03)  # 3 tested cells: 3 * 0.01
    assert not corrected[3].supported and corrected[3].p_holm == pytest.approx(0.06)  # 2 * 0.03
    assert not corrected[1].supported and corrected[1].p_holm == pytest.approx(0.06)  # max(0.06, 1 * 0.04)
    assert corrected[2].p_holm is None and not corrected[2].supported
    assert cells[1].supported and cells[1].p_holm is None  # the inputs are left as they were
    assert holm([]) == []


def test_cells_validate_their_own_consistency():
    with pytest.raises(ValidationError, match="both numbers or both null"):
        IntervalCell(mean=0.5, low=0.4, high=None, n=2, values=[0.4, 0.6], method="t")
    with pytest.raises(ValidationError, match="n = 3"):
        IntervalCell(mean=0.5, low=0.4, high=0.6, n=3, values=[0.4, 0.6], method="t")
    with pytest.raises(ValidationError):
        IntervalCell(mean=0.5, low=0.4, high=0.6, n=2, values=[0.4, 0.6], method="normal")
    with pytest.raises(ValidationError, match="does not match"):
        ComparisonCell(a="x", b="y", difference=0.1, low=0.0, high=0.2, p_value=0.01, supported=True, direction=0, n=3)
    with pytest.raises(ValidationError):
        IntervalCell(mean=0.5, low=0.4, high=0.6, n=2, values=[0.4, 0.6], method="t", ci95=0.1)


def test_cells_format_as_mean_and_interval():
    cell = interval_cell([0.5, 0.6, 0.7], bounds=(0, 1))
    assert cell.format(digits=1, scale=100) == f"60.0 [{100 * cell.low:.1f}, {100 * cell.high:.1f}]"
    c = comparison_cell([0.6, 0.7, 0.75], [0.5, 0.55, 0.7], a="x", b="y")
    assert c.format(digits=2).startswith("+0.10 [")
