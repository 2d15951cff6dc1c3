"""Outcomes of a generated city, their stated weights, and what each modality can know of them.

Every city carries five outcomes, for tiles and for regions alike. For a unit
``u`` (a tile or a region) with land-cover fractions ``f_uk``, hidden factors
affluence ``A_u``, commercial character ``C_u``, accessibility ``S_u``, water
proximity ``W_u = exp(-d_water / 300 m)`` and distance to the centre ``D_u``
(km)::

    b_u = intercept + sum_k w_k f_uk + w_A A_u + w_C C_u + w_S S_u + w_W W_u + w_D D_u
    y_u = b_u + g_u f_u,green + noise_sd * z_u,      g_u = g_low if b_u <= t else g_high

The last term is the **interval-dependent effect**: green urban space adds
``g_high`` per unit of its fraction to places whose other conditions ``b_u``
lie above the threshold ``t`` (the median of ``b`` over the city's inhabited
tiles, stored with the model) and ``g_low`` below it; a model with
``g_low = g_high`` has none. ``z`` is unit-variance noise (spatially smoothed
on the tile grid, independent per region). Outcomes are defined only where
people live: units whose water fraction is 0.5 or more are uninhabited and
get NaN.

The outcomes are indices on a linear scale, not clipped: at the outskirts (far
from the centre, on fields) the distance term and the noise can take
population density or land price a little below zero. Clipping would break
the stated model (the stored weights reproduce the noise-free outcome
exactly) and bias the oracle fits; a study that needs positive values can
shift or transform the outcome it reads.

Modalities and their true factors (:data:`MODALITY_FACTORS`): the aerial
image shows land cover, water and centrality; street-level views show
affluence; POIs carry commercial character; mobility flows carry
accessibility. :func:`oracle_r2` fits each outcome by least squares on one
modality's true factors at a time, on all of them, and on the full design
with the interval term (the ceiling: no model of the data can explain more
than the noise leaves).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lib.data.aerial import LandCover

__all__ = [
    "FACTORS",
    "MODALITY_FACTORS",
    "OUTCOMES",
    "IntervalEffect",
    "OutcomeModel",
    "outcome_models",
    "oracle_r2",
]

LANDCOVER_NAMES = tuple(c.label for c in LandCover)
FACTORS = ("affluence", "commercial", "accessibility", "water_proximity", "distance_to_centre_km")
MODALITY_FACTORS: dict[str, tuple[str, ...]] = {
    "aerial": (*(f"fraction_{n}" for n in LANDCOVER_NAMES), "water_proximity", "distance_to_centre_km"),
    "street_view": ("affluence",),
    "poi": ("commercial",),
    "mobility": ("accessibility",),
}
UNINHABITED_WATER_FRACTION = 0.5


@dataclass(frozen=True)
class IntervalEffect:
    """``g f_concept`` with ``g = below`` where the rest of the outcome is ``<= threshold``, else ``above``."""

    concept: str
    below: float
    above: float
    threshold: float = 0.0


@dataclass(frozen=True)
class OutcomeModel:
    """One outcome's stated model (see the module docstring)."""

    name: str
    units: str
    intercept: float
    landcover: dict[str, float]
    factors: dict[str, float]
    noise_sd: float
    interval: IntervalEffect | None = None

    def base(self, design: dict[str, np.ndarray]) -> np.ndarray:
        """``b``: everything but the interval term, for a design of ``fraction_<class>`` and factor arrays."""
        total = np.full(np.shape(design["fraction_water"]), self.intercept, dtype=np.float64)
        for name, w in self.landcover.items():
            total = total + w * np.asarray(design[f"fraction_{name}"], np.float64)
        for name, w in self.factors.items():
            total = total + w * np.asarray(design[name], np.float64)
        return total

    def slope(self, design: dict[str, np.ndarray]) -> np.ndarray:
        """``g_u``, the effect of the interval concept's fraction at each unit (0 without an interval effect)."""
        if self.interval is None:
            return np.zeros(np.shape(design["fraction_water"]))
        b = self.base(design)
        return np.where(b > self.interval.threshold, self.interval.above, self.interval.below)

    def predict(self, design: dict[str, np.ndarray]) -> np.ndarray:
        """The noise-free outcome."""
        y = self.base(design)
        if self.interval is not None:
            y = y + self.slope(design) * np.asarray(design[f"fraction_{self.interval.concept}"], np.float64)
        return y

    def to_json(self) -> dict:
        return {"units": self.units, "intercept": self.intercept, "landcover": self.landcover,
                "factors": self.factors, "noise_sd": self.noise_sd,
                "interval": None if self.interval is None else vars(self.interval).copy()}

    @classmethod
    def from_json(cls, name: str, data: dict) -> OutcomeModel:
        interval = None if data["interval"] is None else IntervalEffect(**data["interval"])
        return cls(name, data["units"], data["intercept"], dict(data["landcover"]), dict(data["factors"]),
                   data["noise_sd"], interval)


def _model(name, units, intercept, weights, factors, noise_sd, interval=None) -> OutcomeModel:
    return OutcomeModel(name, units, intercept, dict(zip(LANDCOVER_NAMES, weights, strict=True)),
                        dict(zip(FACTORS, factors, strict=True)), noise_sd, interval)


# Land-cover weights in class order: dense, medium, sparse residential,
# industrial, roads, green urban, forest, agriculture, water; factor weights in
# FACTORS order: affluence, commercial, accessibility, water proximity,
# distance (km). Stated, not fitted: the signs follow the usual story (people
# live in residential fabric and near transit, pay for centrality, water and
# shops; affluence shows in income; green space matters once the basics are met).
OUTCOMES: dict[str, OutcomeModel] = {
    "population_density": _model("population_density", "thousand inhabitants per km2", 0.5,
                                 [14.0, 7.0, 2.5, 0.3, 0.5, 0.0, 0.0, 0.1, 0.0], [0.0, -1.0, 3.0, 0.0, -0.15], 0.5),
    "land_price": _model("land_price", "thousand EUR per m2", 1.0,
                         [3.0, 2.0, 1.2, 0.8, 0.0, 0.5, 0.2, 0.1, 0.0], [0.4, 0.5, 1.2, 1.0, -0.35], 0.3),
    "income": _model("income", "thousand EUR per capita and year", 30.0,
                     [4.0, 8.0, 12.0, -6.0, -4.0, 0.0, 3.0, -2.0, 2.0], [5.0, 1.0, 4.0, 4.0, -1.0], 2.0,
                     IntervalEffect("green_urban", below=0.0, above=15.0)),
    "liveability": _model("liveability", "index points", 50.0,
                          [-2.0, 6.0, 8.0, -15.0, -10.0, 0.0, 12.0, 2.0, 5.0], [2.0, -2.0, 8.0, 8.0, -2.0], 3.0,
                          IntervalEffect("green_urban", below=0.0, above=30.0)),
    "environment_index": _model("environment_index", "index points", 50.0,
                                [-10.0, -4.0, 4.0, -25.0, -20.0, 20.0, 30.0, 10.0, 10.0],
                                [0.0, -3.0, 0.0, 5.0, 1.0], 4.0),
}


def outcome_models(outcome_noise: float = 1.0) -> dict[str, OutcomeModel]:
    """The stated models, with each noise sd scaled by ``outcome_noise`` (thresholds not yet set)."""
    return {name: replace(m, noise_sd=m.noise_sd * outcome_noise) for name, m in OUTCOMES.items()}


def with_thresholds(models: dict[str, OutcomeModel], design: dict[str, np.ndarray],
                    inhabited: np.ndarray) -> dict[str, OutcomeModel]:
    """Set each interval effect's threshold to the median of ``b`` over the inhabited units of ``design``."""
    result = {}
    for name, m in models.items():
        if m.interval is not None and inhabited.any():
            t = float(np.median(m.base(design)[inhabited]))
            m = replace(m, interval=replace(m.interval, threshold=round(t, 6)))
        result[name] = m
    return result


def _r2(y: np.ndarray, columns: list[np.ndarray]) -> float:
    """In-sample R^2 of a least-squares fit of ``y`` on ``columns`` and an intercept."""
    design = np.column_stack([np.ones_like(y), *columns])
    # Fractions sum to one: with the intercept they are collinear up to rounding. Singular values
    # under 1e-6 of the largest are such rounding, not information, and are cut.
    coef, *_ = np.linalg.lstsq(design, y, rcond=1e-6)
    residual = y - design @ coef
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - (residual**2).sum() / total) if total > 0 else float("nan")


def oracle_r2(model: OutcomeModel, design: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """R^2 of least-squares fits of the (noisy) outcome ``y`` on the true factors, per modality.

    Keys: each modality of :data:`MODALITY_FACTORS`; ``all_factors`` (every
    modality's factors together, linear); ``ceiling`` (the full true design:
    all factors and the interval term, i.e. the model class that generated
    ``y``, so no model can beat it beyond chance); ``noise_free`` (the R^2 of
    the noise-free outcome itself as the prediction). Fits are in-sample on
    the units given (the caller passes the inhabited ones). Nested designs
    give ``0 <= modality <= all_factors <= ceiling``.
    """
    y = np.asarray(y, np.float64)
    columns = {name: np.asarray(values, np.float64) for name, values in design.items()}
    result = {m: _r2(y, [columns[c] for c in cols]) for m, cols in MODALITY_FACTORS.items()}
    every = [columns[c] for cols in MODALITY_FACTORS.values() for c in cols]
    result["all_factors"] = _r2(y, every)
    if model.interval is not None:
        b = model.base(design)
        upper = (b > model.interval.threshold).astype(np.float64)
        every = every + [upper * columns[f"fraction_{model.interval.concept}"]]
    result["ceiling"] = _r2(y, every)
    noise_free = model.predict(design)
    total = ((y - y.mean()) ** 2).sum()
    result["noise_free"] = float(1 - ((y - noise_free) ** 2).sum() / total) if total > 0 else float("nan")
    return result
