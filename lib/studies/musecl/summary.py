"""The musecl study's ``summary.json`` files (what ``paper/sections/musecl.typ`` reads) and ``metrics.json``.

* :class:`CitySummary` - ``results/musecl/<city>/summary.json`` of
  ``musecl_train@<city>``: the city's regions, how semantic its pairs are,
  the encoders' training and the fusion's attention weights; built by
  :func:`city_summary`.
* :class:`Summary` - ``results/musecl/summary.json`` of ``musecl_eval``: the
  R^2 of every feature set per city, outcome and probe (mean and sd over the
  spatial block folds of one training seed), their means, the cities' stored
  truth and each fusion against the best single modality; built by
  :func:`summarise`. :func:`write_summary` validates and writes it with the
  headline ``metrics.json``.

Numbers are rounded to four decimals (the stored truth is kept as it is), so
that reruns on another machine differ in the files only where they differ
in the results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lib.data.semantic_pairs import PairSampler
from lib.io import write_json
from lib.studies.musecl.evaluate import FEATURE_SETS, SINGLE_MODALITIES, fusion_vs_best_single

__all__ = ["CitySummary", "FusionGap", "FusionVerdict", "PairAgreement", "ScoreRow", "Summary", "Truth",
           "city_summary", "headline_metrics", "pair_agreement", "summarise", "write_city_summary", "write_summary"]

Probe = Literal["ridge", "mlp"]
SingleModality = Literal[SINGLE_MODALITIES]


def _r4(value: float) -> float | None:
    """Four decimals; None for a value that is not finite (JSON has no NaN)."""
    return round(float(value), 4) if np.isfinite(value) else None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ------------------------------------------------------------------ musecl_train@<city>
class PairAgreement(_Strict):
    """How far the hidden factor that made a modality's pairs lies between anchor and positive, and between
    anchor and negative (mean absolute difference over the anchors): semantic pairs have the first smaller."""

    factor: str
    anchor_positive: float = Field(alias="|anchor - positive|")
    anchor_negative: float = Field(alias="|anchor - negative|")
    pairs: str = Field(description="POI, mobility or neighbours")


class CitySummary(_Strict):
    """``results/musecl/<city>/summary.json``; the paper reads ``n_regions``, ``regions_with_pois``,
    ``heldout_triplets_ranked`` and ``attention_aerial_mean``/``_sd``."""

    city: str
    n_regions: int = Field(ge=0, description="inhabited regions")
    n_pois: int = Field(ge=0)
    regions_with_pois: int = Field(ge=0)
    anchors: dict[str, int] = Field(description="encoder -> regions that can anchor its triplets")
    pair_agreement: list[PairAgreement]
    best_epoch: dict[str, int] = Field(description="encoder -> the epoch whose weights were kept (0-based)")
    heldout_triplets_ranked: dict[str, float] = Field(
        description="triplet encoder -> share of held-out triplets with d(a, p) < d(a, n), at the kept epoch")
    attention_aerial_mean: dict[str, float] = Field(description="fusion -> mean attention weight of aerial")
    attention_aerial_sd: dict[str, float]

    @model_validator(mode="after")
    def _consistent(self) -> CitySummary:
        if self.regions_with_pois > self.n_regions:
            raise ValueError(f"regions_with_pois ({self.regions_with_pois}) exceeds n_regions ({self.n_regions})")
        if set(self.attention_aerial_mean) != set(self.attention_aerial_sd):
            raise ValueError(f"attention_aerial_mean and _sd name different fusions: "
                             f"{sorted(self.attention_aerial_mean)} and {sorted(self.attention_aerial_sd)}")
        if not set(self.heldout_triplets_ranked) <= set(self.best_epoch):
            raise ValueError(f"heldout_triplets_ranked names encoders {sorted(self.heldout_triplets_ranked)} "
                             f"not all of which were trained ({sorted(self.best_epoch)})")
        return self


def pair_agreement(sampler: PairSampler, anchors: np.ndarray, factor: np.ndarray, factor_name: str, pairs: str,
                   seed: int) -> PairAgreement:
    """One triplet per anchor drawn from ``seed``; |f(anchor) - f(positive)| and |f(anchor) - f(negative)| of the
    hidden ``factor`` (one value per region), averaged over the anchors."""
    a, p, n = sampler.sample(anchors, np.random.default_rng(seed))
    factor = np.asarray(factor, float)
    return PairAgreement(factor=factor_name, anchor_positive=float(np.abs(factor[a] - factor[p]).mean()),
                         anchor_negative=float(np.abs(factor[a] - factor[n]).mean()), pairs=pairs)


def city_summary(city: str, n_pois: np.ndarray, n_poi_rows: int, anchors: Mapping[str, np.ndarray],
                 agreement: Sequence[PairAgreement], encoders: Mapping, weights: Mapping[str, np.ndarray]
                 ) -> CitySummary:
    """The summary of ``musecl_train@<city>``.

    ``n_pois`` (N,): POIs per inhabited region; ``n_poi_rows``: the POIs of
    those regions; ``encoders``: name -> :class:`lib.studies.musecl.train.EncoderResult`;
    ``weights``: fusion name -> its attention weights (N, M), aerial first.
    """
    ranked = {name: r.history.loc[r.history["epoch"] == r.best_epoch, "heldout_triplets_ranked"].iloc[0]
              for name, r in encoders.items() if "heldout_triplets_ranked" in r.history}
    return CitySummary(
        city=city, n_regions=len(n_pois), n_pois=n_poi_rows, regions_with_pois=int((np.asarray(n_pois) > 0).sum()),
        anchors={name: len(a) for name, a in anchors.items()},
        pair_agreement=[PairAgreement(factor=row.factor, anchor_positive=_r4(row.anchor_positive),
                                      anchor_negative=_r4(row.anchor_negative), pairs=row.pairs) for row in agreement],
        best_epoch={name: int(r.best_epoch) for name, r in encoders.items()},
        heldout_triplets_ranked={name: _r4(v) for name, v in ranked.items()},
        attention_aerial_mean={name: _r4(w[:, 0].mean()) for name, w in weights.items()},
        attention_aerial_sd={name: _r4(w[:, 0].std()) for name, w in weights.items()},
    )


def write_city_summary(path: str | Path, summary: CitySummary) -> None:
    """Validate ``summary`` again (its dicts could have been changed in place) and write it as JSON."""
    summary = CitySummary.model_validate(summary.model_dump())
    write_json(path, summary.model_dump(mode="json", by_alias=True))


# ------------------------------------------------------------------ musecl_eval
class ScoreRow(_Strict):
    """One feature set, outcome, probe and city: mean and sd over the folds."""

    city: str
    target: str
    probe: Probe
    features: str
    r2_mean: float
    r2_sd: float | None
    rmse_mean: float
    mae_mean: float


class Truth(_Strict):
    """A city's stored oracle R^2 of one outcome: each modality's true factors, all factors, the noise ceiling."""

    aerial: float
    street_view: float
    poi: float
    mobility: float
    all_factors: float
    ceiling: float


class FusionGap(_Strict):
    """A fusion against the best single modality of one city, outcome and probe (:func:`fusion_vs_best_single`)."""

    city: str
    target: str
    probe: Probe
    fusion: str
    best_single: SingleModality
    fusion_r2: float
    best_single_r2: float
    gap: float
    fold_sd: float | None
    gap_over_sd: float | None
    ceiling: float


class FusionVerdict(_Strict):
    """Counts over the (city, outcome) pairs of one fusion and probe; a gap within one fold sd is no finding."""

    beyond_one_sd_better: int = Field(ge=0)
    beyond_one_sd_worse: int = Field(ge=0)
    pairs: int = Field(ge=0)
    mean_gap: float


class Summary(_Strict):
    """``results/musecl/summary.json``; ``paper/sections/musecl.typ`` reads ``cities``, ``targets``, ``n_folds``,
    ``block_m``, ``mean_over_cities``, ``truth_mean``, ``mean_r2``, ``best_single_modality`` and
    ``fusion_verdict``."""

    cities: list[str] = Field(min_length=1)
    targets: list[str] = Field(min_length=1)
    n_folds: int = Field(ge=2)
    block_m: float = Field(gt=0)
    mean_r2: dict[Probe, dict[str, float]] = Field(description="probe -> feature set -> R^2 over cities, outcomes")
    scores: list[ScoreRow]
    truth: dict[str, dict[str, Truth]] = Field(description="city -> outcome -> stored oracle R^2")
    fusion_vs_best_single: list[FusionGap]
    mean_over_cities: dict[Probe, dict[str, dict[str, float]]] = Field(
        description="probe -> feature set -> outcome -> R^2 averaged over the cities")
    truth_mean: dict[str, Truth] = Field(description="outcome -> stored oracle R^2 averaged over the cities")
    best_single_modality: SingleModality = Field(description="the single modality of the highest mean ridge R^2")
    fusion_verdict: dict[str, FusionVerdict] = Field(description="<fusion>_<probe> -> counts")

    @model_validator(mode="after")
    def _consistent(self) -> Summary:
        targets = set(self.targets)
        if set(self.truth) != set(self.cities):
            raise ValueError(f"truth has cities {sorted(self.truth)}, expected {sorted(self.cities)}")
        for city, per_target in self.truth.items():
            if set(per_target) != targets:
                raise ValueError(f"truth[{city!r}] has outcomes {sorted(per_target)}, expected {sorted(targets)}")
        if set(self.truth_mean) != targets:
            raise ValueError(f"truth_mean has outcomes {sorted(self.truth_mean)}, expected {sorted(targets)}")
        for probe, rows in self.mean_over_cities.items():
            for name, per_target in rows.items():
                if set(per_target) != targets:
                    raise ValueError(f"mean_over_cities[{probe!r}][{name!r}] has outcomes {sorted(per_target)}, "
                                     f"expected {sorted(targets)}")
        if "ridge" not in self.mean_r2 or self.best_single_modality not in self.mean_r2["ridge"]:
            raise ValueError(f"best_single_modality {self.best_single_modality!r} has no mean ridge R^2")
        return self


def summarise(results: pd.DataFrame, truth: Mapping[str, pd.DataFrame], targets: Sequence[str], n_folds: int,
              block_m: float) -> Summary:
    """The summary of ``musecl_eval`` from :func:`~lib.studies.musecl.evaluate.probe_city`'s rows of every city
    (a ``city`` column added) and each city's :func:`~lib.studies.musecl.evaluate.truth_table`.

    Means over cities and outcomes weigh each (city, outcome) alike; feature
    sets come in the order of :data:`~lib.studies.musecl.evaluate.FEATURE_SETS`.
    """
    targets = list(targets)
    cities = list(truth)
    for city, table in truth.items():
        missing = [t for t in targets if t not in table.index]
        if missing:
            raise ValueError(f"the stored truth of {city} lacks the outcomes {missing}")
    unknown = sorted(set(results["city"]) - set(cities))
    if unknown:
        raise ValueError(f"probe results of cities without their truth: {unknown}")
    order = [name for name in FEATURE_SETS if name in set(results["features"])]
    probes = [probe for probe in ("ridge", "mlp") if probe in set(results["probe"])]
    by_probe = {probe: results[results["probe"] == probe] for probe in probes}
    mean_r2 = {}
    for probe, part in by_probe.items():
        means = part.groupby("features")["r2_mean"].mean()
        mean_r2[probe] = {name: _r4(means[name]) for name in order if name in means.index}
    mean_over_cities = {
        probe: {name: {t: _r4(row[t]) for t in targets} for name, row in
                part.groupby(["features", "target"])["r2_mean"].mean().unstack().reindex(
                    [name for name in order if name in mean_r2[probe]]).iterrows()}
        for probe, part in by_probe.items()}
    gaps = fusion_vs_best_single(results, dict(truth))
    verdict = {}
    for (fusion, probe), part in (gaps.groupby(["fusion", "probe"]) if len(gaps) else []):
        verdict[f"{fusion}_{probe}"] = FusionVerdict(
            beyond_one_sd_better=int((part["gap_over_sd"] > 1).sum()),
            beyond_one_sd_worse=int((part["gap_over_sd"] < -1).sum()), pairs=len(part),
            mean_gap=_r4(part["gap"].mean()))
    columns = list(Truth.model_fields)
    return Summary(
        cities=cities, targets=targets, n_folds=n_folds, block_m=block_m, mean_r2=mean_r2,
        scores=[ScoreRow(**{k: (_r4(v) if isinstance(v, float) else v) for k, v in row.items()})
                for row in results[["city", "target", "probe", "features", "r2_mean", "r2_sd", "rmse_mean",
                                    "mae_mean"]].to_dict("records")],
        truth={city: {t: Truth(**{c: float(table.loc[t, c]) for c in columns}) for t in targets}
               for city, table in truth.items()},
        fusion_vs_best_single=[FusionGap(**{k: (_r4(v) if isinstance(v, float) else v) for k, v in row.items()})
                               for row in gaps.to_dict("records")],
        mean_over_cities=mean_over_cities,
        truth_mean={t: Truth(**{c: _r4(np.mean([truth[city].loc[t, c] for city in cities])) for c in columns})
                    for t in targets},
        best_single_modality=max(SINGLE_MODALITIES, key=lambda name: mean_r2["ridge"][name]),
        fusion_verdict=verdict,
    )


def headline_metrics(summary: Summary) -> dict:
    """``metrics.json`` for ``dvc metrics show``: ridge R^2 averaged over cities and outcomes, and the mean ceiling."""
    ceilings = [row.ceiling for per_target in summary.truth.values() for row in per_target.values()]
    return {"ridge_r2_mean": summary.mean_r2["ridge"], "ceiling_mean": _r4(np.mean(ceilings))}


def write_summary(directory: str | Path, summary: Summary) -> None:
    """Validate ``summary`` again (its dicts could have been changed in place) and write ``summary.json`` and
    ``metrics.json`` into ``directory``."""
    summary = Summary.model_validate(summary.model_dump())
    write_json(Path(directory) / "metrics.json", headline_metrics(summary))
    write_json(Path(directory) / "summary.json", summary.model_dump(mode="json", by_alias=True))


#: The summaries musecl writes, by path under ``results/musecl`` (fnmatch): the study's and one per city.
SCHEMAS: dict[str, type[BaseModel]] = {"summary.json": Summary, "*/summary.json": CitySummary}
