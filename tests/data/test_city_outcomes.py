"""The stated outcome models of a generated city (lib.data.city_outcomes): the formula against a loop, the
interval threshold, and the oracle R^2 of each modality."""

import numpy as np
import pytest

from lib.data.city_outcomes import (
    LANDCOVER_NAMES,
    OUTCOMES,
    IntervalEffect,
    OutcomeModel,
    oracle_r2,
    outcome_models,
    with_thresholds,
)


def random_design(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = rng.dirichlet(np.ones(len(LANDCOVER_NAMES)), size=n)
    design = {f"fraction_{c}": f[:, k] for k, c in enumerate(LANDCOVER_NAMES)}
    return design | {k: rng.normal(size=n) for k in ("affluence", "commercial", "accessibility", "water_proximity",
                                                     "distance_to_centre_km")}


def test_predict_follows_the_stated_formula_unit_by_unit():
    design = random_design(30)
    model = with_thresholds({"income": OUTCOMES["income"]}, design, np.ones(30, bool))["income"]
    predicted = model.predict(design)
    for u in range(30):  # b = intercept + sum_k w_k f_k + sum_j w_j x_j; y = b + g f_green, g by b vs t
        b = model.intercept + sum(w * design[f"fraction_{k}"][u] for k, w in model.landcover.items())
        b += sum(w * design[name][u] for name, w in model.factors.items())
        g = model.interval.above if b > model.interval.threshold else model.interval.below
        assert predicted[u] == pytest.approx(b + g * design["fraction_green_urban"][u], rel=1e-12)
    no_interval = OUTCOMES["environment_index"]
    np.testing.assert_array_equal(no_interval.predict(design), no_interval.base(design))
    assert (no_interval.slope(design) == 0).all()


def test_the_threshold_is_the_median_of_the_inhabited_units():
    design = random_design(101, seed=1)
    inhabited = np.arange(101) % 3 != 0
    models = with_thresholds(outcome_models(), design, inhabited)
    for name, m in models.items():
        if m.interval is None:
            assert m == OUTCOMES[name]
        else:
            assert m.interval.threshold == round(float(np.median(m.base(design)[inhabited])), 6)
            slope = m.slope(design)
            assert set(np.unique(slope)) == {m.interval.below, m.interval.above}


def test_noise_scales_and_models_round_trip_through_json():
    noisy = outcome_models(2.0)
    assert all(noisy[name].noise_sd == 2 * m.noise_sd for name, m in OUTCOMES.items())
    for name, m in OUTCOMES.items():
        assert OutcomeModel.from_json(name, m.to_json()) == m


def test_oracle_r2_ordering_on_a_constructed_design():
    design = random_design(400)
    model = OutcomeModel("y", "", 0.0, dict.fromkeys(LANDCOVER_NAMES, 0.0),
                         {"affluence": 3.0, "commercial": 0.0, "accessibility": 0.0, "water_proximity": 0.0,
                          "distance_to_centre_km": 0.0}, 0.0, IntervalEffect("green_urban", 0.0, 40.0, 0.5))
    y = model.predict(design)
    r2 = oracle_r2(model, design, y)
    assert r2["ceiling"] == pytest.approx(1.0) and r2["noise_free"] == pytest.approx(1.0)
    assert r2["street_view"] > 0.5 and r2["poi"] < 0.05 and r2["all_factors"] < r2["ceiling"] - 0.01


def test_oracle_r2_of_one_modality_is_a_least_squares_fit():
    from sklearn.linear_model import LinearRegression

    design = random_design(300, seed=2)
    y = 2.0 * design["commercial"] + np.random.default_rng(3).normal(size=300)
    r2 = oracle_r2(OUTCOMES["land_price"], design, y)
    fit = LinearRegression().fit(design["commercial"][:, None], y)
    assert r2["poi"] == pytest.approx(fit.score(design["commercial"][:, None], y), rel=1e-9)
    assert 0 <= r2["street_view"] <= r2["all_factors"] <= r2["ceiling"] <= 1
