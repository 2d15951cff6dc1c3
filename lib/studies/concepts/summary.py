"""The concepts study's ``summary.json`` (one per city): its schema (:class:`Summary`), the function that builds it
from the repetitions, its headline ``metrics.json`` and the sentences the notebook prints.

Every number is summarised over seeds by :func:`lib.eval.intervals.interval_cell`
with the range of its quantity (:data:`METRIC_BOUNDS`, :data:`TRUTH_BOUNDS`): the
percentile bootstrap for every bounded one (R^2 <= 1, MAE >= 0, correlations in
[-1, 1], TCAV statistics and shares in [0, 1]), Student-t for the true effect per
interval (unbounded). Seeds without a number (a rank correlation of fewer than
three concepts) are left out of a cell, which then says over how many seeds it
is (``n``); a cell without any seed is null. RNC and L1 are compared paired by
seed over the seeds where both have a number (the paired t-test; the interval of
the difference is the bootstrap where both ends of the range are finite, so that
it stays within them, Student-t for R^2 and MAE), and the city's comparisons (every
metric, the ground-truth agreement and the three interval-truth scores) are one
Holm family: ``supported`` is the Holm-adjusted p below 0.05.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from lib.data.tiles import TileData
from lib.eval.intervals import ComparisonCell, IntervalCell, comparison_cell, holm, interval_cell
from lib.studies.concepts.data import IntervalTruth
from lib.studies.concepts.evaluate import (
    HIGHER_IS_BETTER,
    METRICS,
    NRandomChoice,
    Repetition,
    interval_summary,
    interval_truth_scores,
)
from lib.studies.concepts.model import VARIANT_LABELS, VARIANTS
from lib.studies.concepts.params import ConceptsEvalParams

INF = math.inf
#: The range of each test metric (R^2 reaches any negative value, MAE any positive one).
METRIC_BOUNDS = {"r2": (-INF, 1.0), "mae": (0.0, INF), "kendall_tau": (-1.0, 1.0), "latent_spearman": (-1.0, 1.0),
                 "knn_r2": (-INF, 1.0), "val_r2": (-INF, 1.0)}
#: Both TCAV statistics (the score, the magnitude ratio) are shares in [0, 1].
STATISTIC_BOUNDS = (0.0, 1.0)
CORRELATION_BOUNDS = (-1.0, 1.0)
#: The interval-truth scores: a rank correlation, a share, a difference of two TCAV statistics.
TRUTH_BOUNDS = {"spearman": CORRELATION_BOUNDS, "sign_agreement": (0.0, 1.0), "contrast": (-1.0, 1.0)}
TRUTH_SCORES = tuple(TRUTH_BOUNDS)
HEADLINE = ("r2", "latent_spearman", "knn_r2")  # per variant in metrics.json, with the two truth checks


class Tiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total: int
    uninhabited_excluded: int
    inhabited: int
    fit: int
    validation: int
    test: int


class TcavCell(IntervalCell):
    """A concept x interval cell of a variant: its TCAV statistic over seeds and in how many seeds it was
    significant."""

    significant_seeds: int


class NRandom(BaseModel):
    """How ``tcav.n_random`` was chosen (:class:`lib.studies.concepts.evaluate.NRandomChoice`)."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[int]
    agreement: dict[str, float]
    min_agreement: float
    chosen: int
    cells: int
    rule: str


class Tcav(BaseModel):
    """TCAV on the test tiles: the settings, each seed's concepts and interval edges, and
    ``cells[variant][concept][interval]``."""

    model_config = ConfigDict(extra="forbid")

    layer: str
    statistic: str
    n_intervals: int
    n_random: int
    n_random_choice: NRandom
    concepts: dict[str, list[str]]
    interval_edges: dict[str, list[float]]
    cells: dict[str, dict[str, dict[str, TcavCell]]]


class Agreement(BaseModel):
    """A variant's rank agreement of concept sensitivity with the generator's class weights."""

    model_config = ConfigDict(extra="forbid")

    spearman: IntervalCell | None
    kendall: IntervalCell | None
    n_concepts: int


class TruthVariant(BaseModel):
    """A variant's TCAV statistic of the truth concept per interval, significance per interval, and its scores."""

    model_config = ConfigDict(extra="forbid")

    tcav: list[IntervalCell | None]
    significant_seeds: list[int]
    spearman: IntervalCell | None
    sign_agreement: IntervalCell | None
    contrast: IntervalCell | None


class IntervalTruthSummary(BaseModel):
    """The per-interval truth check: the concept, its true slope below and above the threshold, the mean true
    slope per interval over seeds, each variant's :class:`TruthVariant` and RNC - L1 per score."""

    model_config = ConfigDict(extra="forbid")

    concept: str
    below: float
    above: float
    true_slope: list[IntervalCell | None]
    variants: dict[str, TruthVariant]
    comparison: dict[str, ComparisonCell | None]


class Summary(BaseModel):
    """``results/concepts/<city>/summary.json``, read by ``paper/sections/concepts.typ``.

    ``variants[variant][metric]``: the test metrics over seeds; ``comparison[metric]``:
    RNC - L1 paired by seed; ``holm_family``: how many comparisons the city's Holm
    family holds; ``best_epoch`` (from 1) and ``epochs`` per variant and seed.
    """

    model_config = ConfigDict(extra="forbid")

    city: str
    outcome: str
    units: str
    seeds: list[int]
    tiles: Tiles
    variants: dict[str, dict[str, IntervalCell | None]]
    comparison: dict[str, ComparisonCell | None]
    holm_family: int
    best_epoch: dict[str, list[int]]
    epochs: dict[str, list[int]]
    tcav: Tcav | None = None
    ground_truth_agreement: dict[str, Agreement] | None = None
    ground_truth_comparison: ComparisonCell | None = None
    interval_truth: IntervalTruthSummary | None = None

    def headline(self) -> dict:
        """``metrics.json``: per variant the means over seeds of the headline numbers, rounded to 4 decimals."""
        out = {v: {k: _rounded(self.variants[v][k]) for k in HEADLINE} for v in self.variants}
        for v, row in (self.ground_truth_agreement or {}).items():
            out[v]["ground_truth_spearman"] = _rounded(row.spearman)
        if self.interval_truth is not None:
            for v, row in self.interval_truth.variants.items():
                out[v]["interval_truth_spearman"] = _rounded(row.spearman)
        return out


def _rounded(cell: IntervalCell | None) -> float | None:
    return None if cell is None else round(cell.mean, 4)


# ------------------------------------------------------------------ cells
def seed_cell(values, bounds: tuple[float, float] | None) -> IntervalCell | None:
    """:func:`interval_cell` of the finite per-seed ``values`` (None when no seed has a number)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return interval_cell(finite, bounds=bounds) if finite else None


def paired(rnc, baseline, bounds: tuple[float, float] | None) -> ComparisonCell | None:
    """RNC - L1 paired by seed over the seeds where both are finite (None where none is), of a quantity within
    ``bounds``."""
    a, b = np.asarray(rnc, float), np.asarray(baseline, float)
    both = np.isfinite(a) & np.isfinite(b)
    return comparison_cell(a[both], b[both], a="rnc", b="baseline", bounds=bounds) if both.any() else None


def metrics_over_seeds(reps: list[Repetition]) -> tuple[dict, dict]:
    """Per variant and metric the cell over seeds; per metric RNC - L1 paired by seed (before Holm)."""
    per_seed = {v: {m: [float(rep.metrics.loc[v, m]) for rep in reps] for m in METRICS} for v in VARIANTS}
    variants = {v: {m: seed_cell(x, METRIC_BOUNDS[m]) for m, x in per_seed[v].items()} for v in VARIANTS}
    comparison = {m: paired(per_seed["rnc"][m], per_seed["baseline"][m], METRIC_BOUNDS[m]) for m in METRICS}
    return variants, comparison


def tcav_cells_over_seeds(reps: list[Repetition], statistic: str) -> pd.DataFrame:
    """Per variant, concept and interval: the cell over seeds of the mean ``statistic`` over runs (columns
    ``cell``, ``mean``), and in how many seeds the cell was significant (a seed without the concept counts as not)."""
    frames = [interval_summary(table).assign(variant=v, seed=rep.seed) for rep in reps for v, table in rep.tcav.items()]
    long = pd.concat(frames, ignore_index=True)
    rows = []
    for (variant, concept, interval), g in long.groupby(["variant", "concept", "interval"], sort=False):
        cell = interval_cell(g[statistic].to_numpy(), bounds=STATISTIC_BOUNDS)  # in the repetitions' order
        rows.append({"variant": variant, "concept": concept, "interval": int(interval), "cell": cell, "mean": cell.mean,
                     "significant_seeds": int(g["significant"].sum()), "seeds": len(reps)})
    return pd.DataFrame(rows)


def agreement_over_seeds(reps: list[Repetition], statistic: str) -> tuple[dict[str, Agreement], ComparisonCell | None]:
    """Ground-truth rank agreement per variant over seeds, and RNC - L1 paired by seed (Spearman, before Holm)."""
    rows = {v: [rep.agreement.set_index(["variant", "statistic"]).loc[(v, statistic)] for rep in reps] for v in VARIANTS}
    out = {v: Agreement(spearman=seed_cell([r["spearman"] for r in rs], CORRELATION_BOUNDS),
                        kendall=seed_cell([r["kendall"] for r in rs], CORRELATION_BOUNDS),
                        n_concepts=int(min(r["n_concepts"] for r in rs))) for v, rs in rows.items()}
    return out, paired([r["spearman"] for r in rows["rnc"]], [r["spearman"] for r in rows["baseline"]],
                       CORRELATION_BOUNDS)


def interval_truth_over_seeds(reps: list[Repetition], truth: IntervalTruth, n_intervals: int) -> IntervalTruthSummary:
    """The per-interval truth check over seeds: true slope and TCAV per interval, and the scores (before Holm)."""
    scores = {rep.seed: interval_truth_scores(rep.interval_truth).set_index("variant") for rep in reps}
    cells = {rep.seed: rep.interval_truth.set_index(["variant", "interval"]) for rep in reps}
    variants = {
        v: TruthVariant(
            tcav=[seed_cell([cells[rep.seed].loc[(v, i), "tcav"] for rep in reps], STATISTIC_BOUNDS)
                  for i in range(n_intervals)],
            significant_seeds=[int(sum(cells[rep.seed].loc[(v, i), "significant"] for rep in reps))
                               for i in range(n_intervals)],
            **{k: seed_cell([scores[rep.seed].loc[v, k] for rep in reps], TRUTH_BOUNDS[k]) for k in TRUTH_SCORES},
        )
        for v in VARIANTS
    }
    return IntervalTruthSummary(
        concept=truth.concept, below=truth.below, above=truth.above,
        true_slope=[seed_cell([cells[rep.seed].loc[(VARIANTS[0], i), "true_slope"] for rep in reps], None)
                    for i in range(n_intervals)],
        variants=variants,
        comparison={k: paired([scores[rep.seed].loc["rnc", k] for rep in reps],
                              [scores[rep.seed].loc["baseline", k] for rep in reps], TRUTH_BOUNDS[k])
                    for k in TRUTH_SCORES},
    )


def _tcav(reps: list[Repetition], cfg: ConceptsEvalParams, choice: NRandomChoice) -> Tcav:
    cells = tcav_cells_over_seeds(reps, cfg.tcav.statistic)
    return Tcav(
        layer=cfg.tcav.layer, statistic=cfg.tcav.statistic, n_intervals=cfg.tcav.n_intervals,
        n_random=choice.chosen, n_random_choice=NRandom(**choice.to_json()),
        concepts={str(rep.seed): sorted(rep.sets.members) for rep in reps},
        interval_edges={str(rep.seed): [float(e) for e in next(iter(rep.tcav.values())).attrs["interval_edges"]]
                        for rep in reps},
        cells={v: {c: {str(r.interval): TcavCell(**r.cell.model_dump(), significant_seeds=r.significant_seeds)
                       for r in g.itertuples()}
                   for c, g in cells[cells["variant"] == v].groupby("concept", sort=False)}
               for v in cells["variant"].unique()},
    )


# ------------------------------------------------------------------ the summary
def build_summary(city: str, data: TileData, n_tiles: int, n_uninhabited: int, reps: list[Repetition],
                  cfg: ConceptsEvalParams, choice: NRandomChoice | None, truth: IntervalTruth | None) -> Summary:
    """Everything the paper reads, from the repetitions; the city's comparisons Holm-corrected as one family."""
    variants, comparison = metrics_over_seeds(reps)
    agreement, agreement_comparison = (agreement_over_seeds(reps, cfg.tcav.statistic)
                                       if reps[0].agreement is not None else (None, None))
    interval = (interval_truth_over_seeds(reps, truth, cfg.tcav.n_intervals)
                if truth is not None and reps[0].interval_truth is not None else None)
    # One family: every RNC - L1 comparison of the city, in a fixed order.
    family = {("comparison", m): c for m, c in comparison.items() if c is not None}
    if agreement_comparison is not None:
        family["ground_truth", "spearman"] = agreement_comparison
    if interval is not None:
        family |= {("interval_truth", k): c for k, c in interval.comparison.items() if c is not None}
    corrected = dict(zip(family, holm(list(family.values())), strict=True))
    comparison = {m: corrected.get(("comparison", m)) for m in comparison}  # a missing comparison stays null
    agreement_comparison = corrected.get(("ground_truth", "spearman"))
    if interval is not None:
        interval = interval.model_copy(update={"comparison": {k: corrected.get(("interval_truth", k))
                                                              for k in interval.comparison}})
    return Summary(
        city=city, outcome=data.outcome_name, units=data.units, seeds=[rep.seed for rep in reps],
        tiles=Tiles(total=n_tiles, uninhabited_excluded=n_uninhabited, inhabited=len(data), fit=len(reps[0].split.fit),
                    validation=len(reps[0].split.val), test=len(reps[0].split.test)),
        variants=variants,
        comparison=comparison,
        holm_family=len(family),
        # epochs counted from 1: the epoch whose weights were kept, of how many trained
        best_epoch={v: [int(rep.metrics.loc[v, "best_epoch"]) + 1 for rep in reps] for v in VARIANTS},
        epochs={v: [int(rep.metrics.loc[v, "epochs"]) for rep in reps] for v in VARIANTS},
        tcav=_tcav(reps, cfg, choice) if reps[0].tcav else None,
        ground_truth_agreement=agreement,
        ground_truth_comparison=agreement_comparison,
        interval_truth=interval,
    )


# ------------------------------------------------------------------ words
def _supported(c: ComparisonCell | None, direction: int | None = None) -> bool:
    return c is not None and c.supported and (direction is None or c.direction == direction)


def _verdict(c: ComparisonCell | None, metric: str) -> str:
    """RNC vs L1 on one metric, from the Holm-corrected paired comparison: better, worse, or not told apart."""
    if not _supported(c):
        return "not told apart"
    better = (c.direction > 0) == HIGHER_IS_BETTER[metric]
    return "RNC better" if better else "L1 better"


def conclusion(summary: Summary) -> str:
    """Sentences on what the numbers show, from the Holm-corrected paired comparisons (a difference only where
    supported)."""
    comp, n = summary.comparison, len(summary.seeds)
    ordering = [comp["latent_spearman"], comp["knn_r2"]]
    if all(_supported(c, 1) for c in ordering):
        verdict = "orders the latent space better than"
    elif any(_supported(c, -1) for c in ordering):
        verdict = "orders the latent space worse, by at least one measure, than"
    elif any(_supported(c) for c in ordering):
        verdict = "orders the latent space better by one measure, and not distinguishably by the other, than"
    else:
        verdict = "cannot be told apart, over these seeds, in the ordering of the latent space from"
    v = summary.variants

    def pair(m: str) -> str:
        return " vs ".join("n/a" if v[x][m] is None else v[x][m].format() for x in ("rnc", "baseline"))

    lines = [f"RNC pretraining {verdict} end-to-end L1 training ({n} seeds, paired, Holm-corrected over "
             f"{summary.holm_family} comparisons): distance Spearman {pair('latent_spearman')}, kNN R^2 "
             f"{pair('knn_r2')}; test R^2 {pair('r2')} ({_verdict(comp['r2'], 'r2')})."]
    if summary.ground_truth_agreement is not None:
        g = summary.ground_truth_agreement
        if all(g[x].spearman is not None for x in g):
            lines.append("Against the generator's land-cover weights the concepts' mean TCAV statistic ranks with Spearman "
                         + " and ".join(f"{g[x].spearman.format(digits=2)} for {VARIANT_LABELS[x]}" for x in g)
                         + f" ({min(g[x].n_concepts for x in g)} concepts or more).")
        else:
            lines.append("Too few concepts had enough example tiles for a rank agreement with the truth.")
    truth = summary.interval_truth
    if truth is not None:
        t = truth.variants
        lines.append(f"Per outcome interval, the TCAV statistic of {truth.concept} follows its true effect with Spearman "
                     + " and ".join("undefined" if t[x].spearman is None else t[x].spearman.format(digits=2) for x in t)
                     + " (RNC, L1).")
    return " ".join(lines)


def headlines(results: Path) -> list[tuple[str, str, str]]:
    """The front page's rows (what, value, meaning) from every city's ``results/concepts/<city>/summary.json``:
    the ordering of the latent space and test R^2 of both encoders, and RNC - L1 on the ordering."""
    rows = []
    for path in sorted((results / "concepts").glob("*/summary.json")):
        s = Summary.model_validate_json(path.read_text(encoding="utf-8"))
        for metric, words in (("latent_spearman", "Spearman of embedding and outcome distances (latent ordering)"),
                              ("r2", f"test R^2 of the predicted {s.outcome.replace('_', ' ')}")):
            for v in VARIANTS:
                cell = s.variants[v][metric]
                rows.append((f"{s.city} / {VARIANT_LABELS[v]}: {metric}", "n/a" if cell is None else cell.format(), words))
        c = s.comparison["latent_spearman"]
        if c is not None:
            verdict = "supported" if c.supported else "not supported"
            rows.append((f"{s.city}: RNC - L1, latent_spearman", c.format(),
                         f"does RNC order the latent space better? paired by seed: {verdict} (Holm over {s.holm_family})"))
    return rows
