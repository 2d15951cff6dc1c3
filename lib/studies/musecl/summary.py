"""The musecl study's ``summary.json`` files (what ``paper/sections/musecl.typ`` reads) and ``metrics.json``.

* :class:`CitySummary` - ``results/musecl/<city>/summary.json`` of
  ``musecl_train@<city>``: the city's regions, how semantic its pairs are,
  the encoders' training and the fusion's attention weights; built by
  :func:`city_summary`.
* :class:`Summary` - ``results/musecl/summary.json`` of ``musecl_eval``: the
  study's tables as :class:`lib.eval.claims.Ladder` (spatial protocol, the
  pairs, the reference protocol), MuseCL's claims as
  :class:`lib.eval.claims.Claim` with verdicts from the Holm-corrected paired
  comparisons, the fraction of the observable ceiling each model reaches and
  the attention check; built by :func:`summarise`. :func:`write_summary`
  validates and writes it with the headline ``metrics.json``.

A repetition is one (city, training seed, spatial fold) under the spatial
protocol, one (city, training seed) under the reference protocol; its value is
the R^2 averaged over the outcomes. Comparisons pair by repetition.

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
from lib.eval.claims import Claim, Ladder, LadderRow, verdict_of
from lib.eval.intervals import (
    ComparisonCell,
    IntervalCell,
    comparison_cell,
    holm,
    interval_cell,
)
from lib.io import write_json
from lib.studies.musecl.evaluate import SINGLE_MODALITIES

__all__ = ["LABELS", "BoundTraining", "CitySummary", "PairAgreement", "Summary", "city_summary", "headline_metrics",
           "pair_agreement", "repetition_values", "summarise", "write_city_summary", "write_summary"]



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


class BoundTraining(_Strict):
    """One training of the supervised bound (a training seed, a spatial fold)."""

    seed: int
    fold: int = Field(ge=0)
    epochs_trained: int = Field(ge=1)
    best_epoch: int = Field(ge=0, description="the epoch kept (0-based)")
    stopped_at_plateau: bool
    heldout_r2: float | None = Field(description="R² of the held-out training blocks at the kept epoch, mean over outcomes")


class CitySummary(_Strict):
    """``results/musecl/<city>/summary.json``; the paper reads ``n_regions``, ``regions_with_pois``,
    ``heldout_triplets_ranked`` and ``attention_aerial_mean``/``_sd``."""

    city: str
    n_regions: int = Field(ge=0, description="inhabited regions")
    n_pois: int = Field(ge=0)
    regions_with_pois: int = Field(ge=0)
    seeds: list[int] = Field(min_length=1, description="the training seeds, in the order of every list below")
    anchors: dict[str, int] = Field(description="encoder -> regions that can anchor its triplets")
    pair_agreement: list[PairAgreement]
    best_epoch: dict[str, list[int]] = Field(description="encoder -> per seed the epoch kept (0-based)")
    epochs_trained: dict[str, list[int]] = Field(description="encoder -> per seed the epochs trained")
    stopped_at_plateau: dict[str, list[bool]] = Field(description="encoder -> per seed: stopped at its plateau")
    heldout_triplets_ranked: dict[str, list[float]] = Field(
        description="triplet encoder -> per seed the share of held-out triplets with d(a, p) < d(a, n), kept epoch")
    attention_aerial_mean: dict[str, float] = Field(description="fusion -> mean attention weight of aerial (seeds)")
    attention_aerial_sd: dict[str, float]
    supervised: list[BoundTraining] = Field(default_factory=list, description="the supervised bound's trainings")

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
        for field in ("best_epoch", "epochs_trained", "stopped_at_plateau", "heldout_triplets_ranked"):
            for name, values in getattr(self, field).items():
                if len(values) != len(self.seeds):
                    raise ValueError(f"{field}[{name!r}] has {len(values)} entries for {len(self.seeds)} seeds")
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
                 agreement: Sequence[PairAgreement], encoders: Mapping[int, Mapping],
                 weights: Mapping[int, Mapping[str, np.ndarray]], bound: Mapping | None = None) -> CitySummary:
    """The summary of ``musecl_train@<city>``.

    ``n_pois`` (N,): POIs per inhabited region; ``n_poi_rows``: the POIs of
    those regions; ``encoders``: seed -> name -> :class:`lib.studies.musecl.train.EncoderResult`
    (every seed the same names); ``weights``: seed -> fusion name -> its attention weights (N, M), aerial first.
    """
    seeds = list(encoders)
    names = list(encoders[seeds[0]])

    def per_seed(value) -> dict[str, list]:
        return {name: [value(encoders[s][name]) for s in seeds] for name in names}

    def ranked(r) -> float:
        return _r4(r.history.loc[r.history["epoch"] == r.best_epoch, "heldout_triplets_ranked"].iloc[0])

    fusions = list(weights[seeds[0]])
    aerial = {f: np.concatenate([weights[s][f][:, 0] for s in seeds]) for f in fusions}
    return CitySummary(
        city=city, n_regions=len(n_pois), n_pois=n_poi_rows, regions_with_pois=int((np.asarray(n_pois) > 0).sum()),
        seeds=seeds, anchors={name: len(a) for name, a in anchors.items()},
        pair_agreement=[PairAgreement(factor=row.factor, anchor_positive=_r4(row.anchor_positive),
                                      anchor_negative=_r4(row.anchor_negative), pairs=row.pairs) for row in agreement],
        best_epoch=per_seed(lambda r: int(r.best_epoch)),
        epochs_trained=per_seed(lambda r: int(r.history["epoch"].max()) + 1),
        stopped_at_plateau=per_seed(lambda r: bool(r.stopped_at_plateau)),
        heldout_triplets_ranked={name: [ranked(encoders[s][name]) for s in seeds] for name in names
                                 if "heldout_triplets_ranked" in encoders[seeds[0]][name].history},
        attention_aerial_mean={f: _r4(w.mean()) for f, w in aerial.items()},
        attention_aerial_sd={f: _r4(w.std()) for f, w in aerial.items()},
        supervised=[BoundTraining(seed=seed, fold=fold, epochs_trained=len(r.history), best_epoch=int(r.best_epoch),
                                  stopped_at_plateau=bool(r.stopped_at_plateau),
                                  heldout_r2=_r4(r.history.loc[r.history["epoch"] == r.best_epoch, "heldout_r2"].iloc[0]))
                    for (seed, fold), r in (bound or {}).items()],
    )


def write_city_summary(path: str | Path, summary: CitySummary) -> None:
    """Validate ``summary`` again (its dicts could have been changed in place) and write it as JSON."""
    summary = CitySummary.model_validate(summary.model_dump())
    write_json(path, summary.model_dump(mode="json", by_alias=True))


# ------------------------------------------------------------------ musecl_eval
#: Row labels of the tables, by feature set (:data:`lib.studies.musecl.evaluate.FEATURE_SETS` and the truth).
LABELS = {
    "poi_counts": "POI counts + category histogram", "image_statistics": "image statistics",
    "fusion_infonce": "fusion, InfoNCE (paper)", "fusion_mse": "fusion, MSE (reference code)",
    "fusion_text": "three-way fusion, text as input",
    "fusion_finetuned": "fusion, encoders fine-tuned through it", "concat": "concatenation (aerial, street, text)",
    "best_single": "best single modality", "aerial": "aerial, POI pairs", "street_view": "street view, mobility pairs",
    "poi_text": "POI text (MiniLM)", "tile2vec": "aerial, neighbour pairs (Tile2Vec)", "simclr": "SimCLR (aerial)",
    "aerial_random": "aerial, random pairs", "aerial_oracle": "aerial, oracle pairs",
    "street_neighbour": "street view, neighbour pairs", "street_random": "street view, random pairs",
    "street_oracle": "street view, oracle pairs", "supervised": "supervised: the same encoders and text, on the outcomes",
    "oracle_aerial": "oracle: what aerial images show", "oracle_street_view": "oracle: what street views show",
    "oracle_poi": "oracle: what POIs show", "oracle_mobility": "oracle: what trips show",
    "observable": "observable ceiling", "full": "full ceiling",
}
#: (rung, feature set) of each table, bottom to top; a feature set absent from the results is left out.
SPATIAL_ROWS = (("trivial", "poi_counts"), ("trivial", "image_statistics"), ("method", "fusion_infonce"),
                ("variant", "fusion_mse"), ("variant", "fusion_text"), ("variant", "fusion_finetuned"),
                ("variant", "concat"),
                ("variant", "best_single"), ("variant", "aerial"), ("variant", "street_view"),
                ("variant", "poi_text"), ("variant", "tile2vec"), ("variant", "simclr"), ("bound", "supervised"),
                ("ceiling", "oracle_aerial"), ("ceiling", "oracle_street_view"), ("ceiling", "oracle_poi"),
                ("ceiling", "oracle_mobility"), ("ceiling", "observable"), ("ceiling", "full"))
PAIR_ROWS = (("trivial", "image_statistics"), ("method", "aerial"), ("method", "street_view"),
             ("variant", "tile2vec"), ("variant", "aerial_random"), ("variant", "street_neighbour"),
             ("variant", "street_random"), ("bound", "aerial_oracle"), ("bound", "street_oracle"),
             ("ceiling", "oracle_aerial"), ("ceiling", "oracle_street_view"))
REFERENCE_ROWS = (("trivial", "poi_counts"), ("trivial", "image_statistics"), ("method", "fusion_infonce"),
                  ("variant", "fusion_mse"), ("variant", "fusion_text"), ("variant", "fusion_finetuned"),
                  ("variant", "concat"),
                  ("variant", "best_single"), ("variant", "aerial"), ("variant", "street_view"),
                  ("variant", "poi_text"), ("ceiling", "observable"))
#: The paired comparisons a - b of each table (feature sets), one Holm family over all three tables.
SPATIAL_COMPARISONS = (("fusion_infonce", "best_single"), ("fusion_infonce", "concat"), ("fusion_mse", "best_single"),
                       ("fusion_text", "best_single"), ("fusion_text", "concat"), ("fusion_infonce", "poi_counts"),
                       ("fusion_finetuned", "fusion_infonce"))
PAIR_COMPARISONS = (("aerial", "tile2vec"), ("aerial", "aerial_random"), ("aerial_oracle", "aerial"),
                    ("street_view", "street_neighbour"), ("street_view", "street_random"),
                    ("street_oracle", "street_view"))
REFERENCE_COMPARISONS = (("fusion_infonce", "best_single"), ("fusion_infonce", "concat"))
#: The tables of ``Summary.ladders``, in order.
LADDERS = ("spatial", "pairs", "reference")
R2_BOUNDS = (-np.inf, 1.0)
NOT_TRAINED = {"supervised": "not in this run's results (musecl_train stored no supervised predictions)"}
#: Feature sets scored on some repetitions only: the supervised bound, trained for the first
#: ``musecl.supervised.n_seeds`` training seeds; the truth's rungs, which a city of unknown truth (imported by
#: :mod:`lib.data.city_import`) lacks; the encoders from other pairs, trained in the cities of
#: ``musecl.pairs.variants``. Their cells and fractions are over the repetitions they have, and a comparison
#: pairs the repetitions both of its sets have.
PARTIAL = ("supervised", "oracle_aerial", "oracle_street_view", "oracle_poi", "oracle_mobility", "observable", "full",
           "aerial_random", "aerial_oracle", "street_neighbour", "street_random", "street_oracle")


def repetition_values(results: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """R^2 averaged over the outcomes per repetition (``keys``: the columns that name one) and feature set:
    one row per repetition, one column per feature set."""
    return results.groupby([*keys, "features"])["r2"].mean().unstack("features").sort_index()


def _ladder(title: str, protocol: str, values: pd.DataFrame, rows: Sequence[tuple[str, str]],
            pairs: Sequence[tuple[str, str]]) -> Ladder:
    """A ladder of the feature sets in ``values`` (repetition x feature set) and its unadjusted comparisons."""
    ladder_rows = []
    for rung, name in rows:
        if name in values.columns:
            ladder_rows.append(LadderRow(name=LABELS[name], rung=rung,
                                         cell=interval_cell(values[name].dropna().to_numpy(), bounds=R2_BOUNDS)))
        elif name in NOT_TRAINED:
            ladder_rows.append(LadderRow(name=LABELS[name], rung=rung, cell=None, note=NOT_TRAINED[name]))
    both = {(a, b): values[[a, b]].dropna() for a, b in pairs if a in values.columns and b in values.columns}
    comparisons = [comparison_cell(v[a].to_numpy(), v[b].to_numpy(), a=LABELS[a], b=LABELS[b])
                   for (a, b), v in both.items() if len(v)]
    return Ladder(title=title, metric=f"R² ({protocol}), mean over outcomes", rows=ladder_rows,
                  comparisons=comparisons)


class Summary(_Strict):
    """``results/musecl/summary.json``; ``paper/sections/musecl.typ`` reads every field."""

    cities: list[str] = Field(min_length=1)
    targets: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1, description="training seeds")
    n_folds: int = Field(ge=2)
    block_m: float = Field(gt=0)
    gap_m: float = Field(ge=0)
    n_spatial_repetitions: int = Field(ge=1, description="cities x seeds x folds")
    n_reference_repetitions: int = Field(ge=1, description="cities x seeds")
    ladders: list[Ladder] = Field(description="the tables in the order of LADDERS: spatial, pairs, reference")
    claims: list[Claim]
    mean_r2: dict[Literal["ridge", "reference_mlp"], dict[str, float]] = Field(
        description="protocol -> feature set -> R^2 averaged over repetitions and outcomes")
    per_target: dict[str, dict[str, float]] = Field(
        description="feature set -> outcome -> ridge R^2 averaged over the spatial repetitions")
    fraction_of_observable: dict[str, IntervalCell] = Field(
        description="row label -> (mean R^2 over outcomes) / (the observable ceiling's), per spatial repetition")
    best_single_chosen: dict[str, int] = Field(
        description="single modality -> (city, seed, fold, outcome) cases where the training folds chose it")
    attention_text_vs_pois: IntervalCell | None = Field(
        description="Spearman rho of the text's weight in the three-way fusion with the POI count, per city x seed")

    @model_validator(mode="after")
    def _consistent(self) -> Summary:
        if self.n_spatial_repetitions != len(self.cities) * len(self.seeds) * self.n_folds:
            raise ValueError(f"{self.n_spatial_repetitions} spatial repetitions, expected cities x seeds x folds = "
                             f"{len(self.cities) * len(self.seeds) * self.n_folds}")
        for name, per_target in self.per_target.items():
            if set(per_target) != set(self.targets):
                raise ValueError(f"per_target[{name!r}] has outcomes {sorted(per_target)}, expected {self.targets}")
        return self


def _claims(ladders: Mapping[str, Ladder]) -> list[Claim]:
    """MuseCL's claims against the Holm-corrected comparisons of the tables."""
    def find(ladder: str, a: str, b: str) -> ComparisonCell | None:
        for c in ladders[ladder].comparisons:
            if (c.a, c.b) == (LABELS[a], LABELS[b]):
                return c
        return None

    def claim(text: str, original: str, ladder: str, a: str, b: str, where: str) -> Claim:
        evidence = find(ladder, a, b)
        verdict = verdict_of(evidence, +1)
        if evidence is None:
            reason = "the pair variants were not trained in this run (musecl.pairs.variants names no city)"
        elif verdict == "reproduced":
            reason = ""
        else:
            reason = (f"{LABELS[a]} - {LABELS[b]} = {evidence.difference:+.3f} R² over {evidence.n} repetitions, "
                      f"Holm-adjusted "
                      f"p = {evidence.p_holm:.3g}: " + ("the other way round" if evidence.direction == -1
                                                        else "no supported difference"))
        return Claim(study="musecl", claim=text, original=original, evidence=evidence, verdict=verdict,
                     reason=reason, where=where)

    paper = "MuseCL (IJCAI 2024), real cities: "
    return [
        claim("The attentional fusion predicts socioeconomic outcomes better than the best single modality",
              paper + "the full model above every single-modality variant of its ablation", "spatial",
              "fusion_infonce", "best_single", "musecl table: spatial protocol"),
        claim("The attentional fusion beats concatenating the same embeddings",
              paper + "attention above concatenation in its ablation", "spatial", "fusion_infonce", "concat",
              "musecl table: spatial protocol"),
        claim("Fusion beats the best single modality under the paper's own protocol",
              paper + "random 60/20/20 split, MLP 512-256-128-64", "reference", "fusion_infonce", "best_single",
              "musecl table: reference protocol"),
        claim("Fusion beats concatenation under the paper's own protocol",
              paper + "random 60/20/20 split, MLP 512-256-128-64", "reference", "fusion_infonce", "concat",
              "musecl table: reference protocol"),
        claim("Pairing aerial images by POI similarity beats pairing spatial neighbours",
              paper + "semantic pairs above Tile2Vec's neighbour pairs", "pairs", "aerial", "tile2vec",
              "musecl table: pairs"),
        claim("Pairing street views by mobility similarity beats pairing spatial neighbours",
              paper + "semantic pairs above neighbour pairs", "pairs", "street_view", "street_neighbour",
              "musecl table: pairs"),
    ]


def summarise(spatial: pd.DataFrame, reference: pd.DataFrame, attention: pd.DataFrame, targets: Sequence[str],
              n_folds: int, block_m: float, gap_m: float) -> Summary:
    """The summary of ``musecl_eval``.

    ``spatial``: rows (city, seed, fold, target, features, r2[, chosen]) of
    :func:`~lib.studies.musecl.evaluate.probe_seed` for every city and seed, the
    truth's oracles and ceilings among the feature sets; ``reference``: rows
    (city, seed, target, features, r2) of the reference protocol;
    ``attention``: rows (city, seed, rho) of
    :func:`~lib.studies.musecl.evaluate.attention_agreement`.
    """
    targets = list(targets)
    missing = [t for t in targets if t not in set(spatial["target"])]
    if missing:
        raise ValueError(f"no spatial probe results of the outcomes {missing}")
    spatial_values = repetition_values(spatial, ["city", "seed", "fold"])
    reference_values = repetition_values(reference, ["city", "seed"])
    complete = spatial_values.drop(columns=[c for c in PARTIAL if c in spatial_values.columns])
    if complete.isna().any().any() or reference_values.isna().any().any():
        raise ValueError("some feature set lacks a score in some repetition: every repetition needs every set "
                         f"(but {', '.join(PARTIAL)})")
    ladders = {
        "spatial": _ladder(f"Region embeddings under spatial block CV ({n_folds} folds, {gap_m:g} m gap)",
                           "ridge, spatial CV", spatial_values, SPATIAL_ROWS, SPATIAL_COMPARISONS),
        "pairs": _ladder("What the pairs are worth: each image encoder from other pairs", "ridge, spatial CV",
                         spatial_values, PAIR_ROWS, PAIR_COMPARISONS),
        "reference": _ladder("The reference protocol: random 60/20/20 split, MLP 512-256-128-64",
                             "MLP, random split", reference_values, REFERENCE_ROWS, REFERENCE_COMPARISONS),
    }
    family = holm([c for ladder in ladders.values() for c in ladder.comparisons])
    for ladder in ladders.values():
        ladder.comparisons, family = family[:len(ladder.comparisons)], family[len(ladder.comparisons):]
    # a city of unknown truth (imported) has no observable ceiling: no fractions of it
    shown = [name for _, name in SPATIAL_ROWS if name in spatial_values.columns and name not in ("observable", "full")
             and "observable" in spatial_values.columns]
    chosen = spatial[spatial["features"] == "best_single"]
    per_target = spatial.groupby(["features", "target"])["r2"].mean().unstack("target")
    return Summary(
        cities=list(dict.fromkeys(spatial["city"])), targets=targets, seeds=sorted(set(spatial["seed"])),
        n_folds=n_folds, block_m=block_m, gap_m=gap_m, n_spatial_repetitions=len(spatial_values),
        n_reference_repetitions=len(reference_values), ladders=list(ladders.values()), claims=_claims(ladders),
        mean_r2={"ridge": {name: _r4(v) for name, v in spatial_values.mean().items()},
                 "reference_mlp": {name: _r4(v) for name, v in reference_values.mean().items()}},
        per_target={name: {t: _r4(row[t]) for t in targets} for name, row in per_target.iterrows()},
        fraction_of_observable={LABELS[name]: interval_cell((spatial_values[name] / spatial_values["observable"])
                                                            .dropna().to_numpy())
                                for name in shown},
        best_single_chosen={m: int((chosen["chosen"] == m).sum()) for m in SINGLE_MODALITIES} if len(chosen) else {},
        attention_text_vs_pois=(interval_cell(attention["rho"].to_numpy(), bounds=(-1.0, 1.0))
                                if len(attention) else None),
    )


#: The rungs ``metrics.json`` shows per protocol (``dvc metrics show``: a dozen numbers); every row is in
#: ``summary.json``.
HEADLINE = {"ridge": ("poi_counts", "image_statistics", "best_single", "concat", "fusion_infonce", "fusion_text",
                      "observable", "full"),
            "reference_mlp": ("best_single", "concat", "fusion_infonce")}


def headline_metrics(summary: Summary) -> dict:
    """``metrics.json`` for ``dvc metrics show``: R^2 averaged over repetitions and outcomes of the
    :data:`HEADLINE` rungs, per protocol."""
    return {f"{protocol}_r2_mean": {name: summary.mean_r2[protocol][name] for name in names
                                    if name in summary.mean_r2[protocol]}
            for protocol, names in HEADLINE.items()}


def write_summary(directory: str | Path, summary: Summary) -> None:
    """Validate ``summary`` again (its dicts could have been changed in place) and write ``summary.json`` and
    ``metrics.json`` into ``directory``."""
    summary = Summary.model_validate(summary.model_dump())
    write_json(Path(directory) / "metrics.json", headline_metrics(summary))
    write_json(Path(directory) / "summary.json", summary.model_dump(mode="json", by_alias=True))


#: The summaries musecl writes, by path under ``results/musecl`` (fnmatch): the study's and one per city.
SCHEMAS: dict[str, type[BaseModel]] = {"summary.json": Summary, "*/summary.json": CitySummary}
