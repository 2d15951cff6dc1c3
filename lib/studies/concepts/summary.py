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
metric, RNC and L1 against the band statistics, the ground-truth agreement, the three
interval-truth scores and the TCAV claim) are one Holm family: ``supported`` is the
Holm-adjusted p below 0.05. The test R^2 table is a :class:`~lib.eval.claims.Ladder`
(:func:`r2_ladder`), and the papers' claims are :class:`~lib.eval.claims.Claim` objects
with verdicts from :func:`~lib.eval.claims.verdict_of`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from lib.data.tiles import TileData
from lib.eval.claims import Claim, Ladder, LadderRow, verdict_of
from lib.eval.intervals import ComparisonCell, IntervalCell, comparison_cell, holm, interval_cell
from lib.studies.concepts.control import LAYER as CONTROL_LAYER
from lib.studies.concepts.data import IntervalTruth
from lib.studies.concepts.evaluate import (
    HIGHER_IS_BETTER,
    METRICS,
    NRandomChoice,
    Repetition,
    interval_summary,
    interval_truth_agreement,
    interval_truth_scores,
)
from lib.studies.concepts.model import VARIANT_LABELS, VARIANTS
from lib.studies.concepts.rungs import RUNGS
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
    block_m: float | None = None  # side of the spatial blocks the split deals whole


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


class ControlSummary(BaseModel):
    """TCAV's positive control over seeds (:mod:`lib.studies.concepts.control`), per outcome interval of the
    control's output: the model's true response to more of ``concept`` (finite difference), TCAV's statistic,
    in how many seeds TCAV was significant, had a planted effect there, and recovered it; overall ``recovery``
    (per seed, the share of intervals recovered), TCAV against the finite differences scored like the interval
    truth, the fraction encoder's test R^2 and its training to the plateau."""

    model_config = ConfigDict(extra="forbid")

    concept: str
    layer: str
    threshold_quantile: float
    effect: float
    finite_difference: list[IntervalCell | None]
    tcav: list[IntervalCell | None]
    significant_seeds: list[int]
    planted_seeds: list[int]
    recovered_seeds: list[int]
    recovery: IntervalCell | None
    spearman: IntervalCell | None
    sign_agreement: IntervalCell | None
    contrast: IntervalCell | None
    fraction_r2: IntervalCell | None
    best_epoch: list[int]
    epochs: list[int]
    max_epochs: int
    stopped_at_plateau: list[bool]


class Summary(BaseModel):
    """``results/concepts/<city>/summary.json``, read by ``paper/sections/concepts.typ``.

    ``variants[variant][metric]``: the test metrics over seeds; ``comparison[metric]``:
    RNC - L1 paired by seed; ``holm_family``: how many comparisons the city's Holm
    family holds; ``best_epoch`` (from 1), ``epochs`` (trained), ``max_epochs`` and
    ``stopped_at_plateau`` per variant and seed; ``rungs``: the encoder-free rungs'
    test R^2 (:mod:`lib.studies.concepts.rungs`); ``ladders``: the test R^2 ladder;
    ``claims``: the papers' claims tested here; ``control``: TCAV's positive control.
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
    max_epochs: dict[str, int]
    stopped_at_plateau: dict[str, list[bool]]
    rungs: dict[str, IntervalCell | None]
    aerial_oracle_in_sample: float | None = None
    ladders: list[Ladder] = []
    claims: list[Claim] = []
    control: ControlSummary | None = None
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
def control_over_seeds(reps: list[Repetition], cfg: ConceptsEvalParams) -> ControlSummary:
    """The positive control over seeds (:class:`ControlSummary`)."""
    k = cfg.tcav.n_intervals
    tables = [rep.control.table.set_index("interval") for rep in reps]
    scores = [interval_truth_agreement(t["tcav"].to_numpy(), t["finite_difference"].to_numpy()) for t in tables]
    training = [rep.control.training for rep in reps]
    return ControlSummary(
        concept=cfg.control.concept, layer=CONTROL_LAYER, threshold_quantile=cfg.control.threshold_quantile,
        effect=cfg.control.effect,
        finite_difference=[seed_cell([t.loc[i, "finite_difference"] for t in tables], None) for i in range(k)],
        tcav=[seed_cell([t.loc[i, "tcav"] for t in tables], STATISTIC_BOUNDS) for i in range(k)],
        significant_seeds=[int(sum(t.loc[i, "significant"] for t in tables)) for i in range(k)],
        planted_seeds=[int(sum(t.loc[i, "planted"] for t in tables)) for i in range(k)],
        recovered_seeds=[int(sum(t.loc[i, "recovered"] for t in tables)) for i in range(k)],
        recovery=seed_cell([float(t["recovered"].mean()) for t in tables], (0.0, 1.0)),
        **{name: seed_cell([sc[name] for sc in scores], TRUTH_BOUNDS[name]) for name in TRUTH_SCORES},
        fraction_r2=seed_cell([rep.control.fraction_r2 for rep in reps], METRIC_BOUNDS["r2"]),
        best_epoch=[int(t["best_epoch"]) + 1 for t in training], epochs=[int(t["last_epoch"]) + 1 for t in training],
        max_epochs=int(training[0]["max_epochs"]), stopped_at_plateau=[bool(t["stopped_at_plateau"]) for t in training],
    )


#: Row names of the test R^2 ladder, bottom to top, and their rungs.
LADDER_ROWS = {"band_statistics": (RUNGS["band_statistics"], "trivial"),
               "rnc": (VARIANT_LABELS["rnc"], "method"),
               "baseline": (f"{VARIANT_LABELS['baseline']} (same network, supervised)", "bound"),
               "fractions": (RUNGS["fractions"], "ceiling"),
               "aerial_oracle": (RUNGS["aerial_oracle"], "ceiling")}


def _named(c: ComparisonCell | None, a: str, b: str) -> ComparisonCell | None:
    return None if c is None else c.model_copy(update={"a": LADDER_ROWS[a][0], "b": LADDER_ROWS[b][0]})


def r2_ladder(city: str, variants: dict, rungs: dict, comparisons: dict, in_sample: float | None) -> Ladder:
    """The test R^2 ladder of a city: band statistics -> RNC -> L1 -> fractions -> aerial oracle, with the
    (Holm-corrected) ``comparisons`` keyed by (row, row) pairs, those absent left out."""
    cells = {"band_statistics": rungs["band_statistics"], "rnc": variants["rnc"]["r2"],
             "baseline": variants["baseline"]["r2"], "fractions": rungs["fractions"],
             "aerial_oracle": rungs["aerial_oracle"]}
    oracle_note = "fitted on the fit and validation tiles, scored on the test tiles (tile-level, out of sample)"
    if in_sample is not None:
        oracle_note += f"; the generator's in-sample value on every inhabited tile: {in_sample:.3f}"
    notes = {"fractions": "what the concepts explain", "aerial_oracle": oracle_note}
    rows = [LadderRow(name=LADDER_ROWS[k][0], rung=LADDER_ROWS[k][1], cell=cells[k],
                      note=notes.get(k, "") if cells[k] is not None else "not available on these tiles")
            for k in LADDER_ROWS]
    pairs = [("rnc", "band_statistics"), ("rnc", "baseline"), ("baseline", "band_statistics")]
    return Ladder(title=f"test R^2 ({city.replace('_', ' ')}, spatial blocks)", metric="R^2",
                  rows=rows, comparisons=[_named(comparisons[p], *p) for p in pairs if comparisons.get(p) is not None])


def _claims(comparison: dict, tcav_claim: ComparisonCell | None, control: ControlSummary | None) -> list[Claim]:
    """The two papers' claims tested on this city, their verdicts from the Holm-corrected comparisons."""
    out = []
    for metric, words in (("latent_spearman", "orders the embedding by the outcome (distance Spearman)"),
                          ("r2", "predicts the outcome (test R^2)")):
        c = comparison[metric]
        verdict = verdict_of(c, +1)
        reason = "" if verdict == "reproduced" else (
            "one seed: no paired test" if verdict == "not testable here" else
            f"RNC - L1 {c.format()} paired by seed, Holm-adjusted p {c.p_holm:.3g}: not supported")
        out.append(Claim(study="concepts", claim=f"Rank-N-Contrast pretraining with a linear probe {words} better "
                         "than the same encoder trained with an L1 loss",
                         original="Zha et al. 2023: RNC + linear probe below L1 in regression error on AgeDB, "
                                  "IMDB-WIKI, TUAB and MPIIFaceGaze; Obadic et al. 2024 use it for socioeconomic "
                                  "outcomes",
                         evidence=c, verdict=verdict, reason=reason, where="tab:concepts"))
    verdict = verdict_of(tcav_claim, +1)
    control_words = ("" if control is None or control.recovery is None else
                     f" (the positive control recovered {control.recovery.mean:.0%} of its planted interval cells)")
    reason = "" if verdict == "reproduced" else (
        "no interval-dependent truth or fewer than two seeds" if verdict == "not testable here" else
        f"TCAV's green-space score per interval against the true effect: Spearman {tcav_claim.difference:.2f}, "
        f"Holm-adjusted p {tcav_claim.p_holm:.3g}" + control_words)
    out.append(Claim(study="concepts", claim="TCAV per outcome interval shows in which intervals a concept "
                     "drives the outcome (on the RNC encoder)",
                     original="Obadic et al. 2024: concept sensitivities differ between outcome intervals",
                     evidence=tcav_claim, verdict=verdict, reason=reason, where="tab:concepts-truth"))
    return out


def build_summary(city: str, data: TileData, n_tiles: int, n_uninhabited: int, reps: list[Repetition],
                  cfg: ConceptsEvalParams, choice: NRandomChoice | None, truth: IntervalTruth | None,
                  oracle_in_sample: float | None = None) -> Summary:
    """Everything the paper reads, from the repetitions; the city's comparisons Holm-corrected as one family.

    The family: every RNC - L1 comparison, RNC and L1 each against the band statistics (test R^2), the
    ground-truth agreement, the interval-truth scores and the TCAV claim (RNC's interval-truth Spearman
    against 0, the one-sample t-test as a pairing with zeros).
    """
    variants, comparison = metrics_over_seeds(reps)
    rungs = {k: seed_cell([rep.rungs[k] for rep in reps], METRIC_BOUNDS["r2"]) for k in RUNGS}
    per_seed = {k: [rep.rungs[k] for rep in reps] for k in RUNGS} | {
        v: [float(rep.metrics.loc[v, "r2"]) for rep in reps] for v in VARIANTS}
    ladder_pairs = {p: paired(per_seed[p[0]], per_seed[p[1]], METRIC_BOUNDS["r2"])
                    for p in (("rnc", "band_statistics"), ("baseline", "band_statistics"))}
    agreement, agreement_comparison = (agreement_over_seeds(reps, cfg.tcav.statistic)
                                       if reps[0].agreement is not None else (None, None))
    interval = (interval_truth_over_seeds(reps, truth, cfg.tcav.n_intervals)
                if truth is not None and reps[0].interval_truth is not None else None)
    tcav_claim = None
    if interval is not None and interval.variants["rnc"].spearman is not None:
        rho = np.array(interval.variants["rnc"].spearman.values)
        tcav_claim = comparison_cell(rho, np.zeros_like(rho), a="TCAV-truth Spearman (RNC)", b="no agreement (0)",
                                     bounds=CORRELATION_BOUNDS)
    # One family: every comparison of the city, in a fixed order.
    family = {("comparison", m): c for m, c in comparison.items() if c is not None}
    family |= {("ladder", p): c for p, c in ladder_pairs.items() if c is not None}
    if agreement_comparison is not None:
        family["ground_truth", "spearman"] = agreement_comparison
    if interval is not None:
        family |= {("interval_truth", k): c for k, c in interval.comparison.items() if c is not None}
    if tcav_claim is not None:
        family["claim", "tcav"] = tcav_claim
    corrected = dict(zip(family, holm(list(family.values())), strict=True))
    comparison = {m: corrected.get(("comparison", m)) for m in comparison}  # a missing comparison stays null
    ladder_pairs = {p: corrected.get(("ladder", p)) for p in ladder_pairs}
    agreement_comparison = corrected.get(("ground_truth", "spearman"))
    tcav_claim = corrected.get(("claim", "tcav"))
    if interval is not None:
        interval = interval.model_copy(update={"comparison": {k: corrected.get(("interval_truth", k))
                                                              for k in interval.comparison}})
    control = control_over_seeds(reps, cfg) if reps[0].control is not None else None
    ladder = r2_ladder(city, variants, rungs, ladder_pairs | {("rnc", "baseline"): comparison["r2"]},
                       oracle_in_sample)
    return Summary(
        city=city, outcome=data.outcome_name, units=data.units, seeds=[rep.seed for rep in reps],
        tiles=Tiles(total=n_tiles, uninhabited_excluded=n_uninhabited, inhabited=len(data), fit=len(reps[0].split.fit),
                    validation=len(reps[0].split.val), test=len(reps[0].split.test), block_m=cfg.split.block_m),
        variants=variants,
        comparison=comparison,
        holm_family=len(family),
        # epochs counted from 1: the epoch whose weights were kept, of how many trained
        best_epoch={v: [int(rep.metrics.loc[v, "best_epoch"]) + 1 for rep in reps] for v in VARIANTS},
        epochs={v: [int(rep.metrics.loc[v, "epochs"]) for rep in reps] for v in VARIANTS},
        max_epochs={v: int(reps[0].metrics.loc[v, "max_epochs"]) for v in VARIANTS},
        stopped_at_plateau={v: [bool(rep.metrics.loc[v, "stopped_at_plateau"]) for rep in reps] for v in VARIANTS},
        rungs=rungs,
        aerial_oracle_in_sample=oracle_in_sample,
        ladders=[ladder],
        claims=_claims(comparison, tcav_claim, control),
        control=control,
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
    if summary.ladders:
        rows = summary.ladders[0].rows
        trivial = next((c for c in summary.ladders[0].comparisons if c.b == rows[0].name and c.a == rows[1].name), None)
        beats = _supported(trivial, 1)
        lines.append(f"Against the trivial rung ({rows[0].name}, test R^2 "
                     f"{'n/a' if rows[0].cell is None else rows[0].cell.format()}) RNC "
                     + ("is better" if beats else "is not shown to be better")
                     + ("" if trivial is None else f" (paired {trivial.format()})") + "; the stopped-at-plateau counts: "
                     + ", ".join(f"{VARIANT_LABELS[v]} {sum(summary.stopped_at_plateau[v])} of {len(summary.seeds)}"
                                 for v in VARIANTS) + ".")
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
