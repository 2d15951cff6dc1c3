"""Evaluating the concepts study's variants: accuracy, latent ordering, TCAV per outcome interval, over seeds.

Each repetition ``s`` (one seed) has its own split, its own pair of trained
variants and its own evaluation draws. On its test split: R^2, MAE and
Kendall's tau of the predictions (:func:`lib.eval.metrics.regression_metrics`)
and the ordering of the latent space (:func:`lib.eval.ordering.latent_ordering`).
Concept sets are tiles dominated by one land-cover class; on a generated city
the generator's weights say how each class truly moves the outcome, so the
rank agreement of concept sensitivity with those weights checks the
explanation, and where the outcome has an interval-dependent effect
(:mod:`lib.data.city_outcomes`) the TCAV score of that concept per outcome
interval is checked against the true effect in each interval.

The repetitions are summarised over seeds, and RNC and L1 compared paired by
seed, in :mod:`lib.studies.concepts.summary`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy import stats

from lib.data.splits import Split
from lib.data.tiles import TileData
from lib.eval.metrics import regression_metrics
from lib.eval.ordering import latent_ordering
from lib.explain.tcav import compute_cavs, first_runs, make_concept, outcome_intervals, random_concepts, score_by_interval
from lib.io import write_json, write_text
from lib.runtime import runtime
from lib.studies.concepts.control import ControlRun, run_control
from lib.studies.concepts.data import IntervalTruth
from lib.studies.concepts.rungs import rung_scores
from lib.studies.concepts.model import VARIANTS, TrainedModel
from lib.studies.concepts.params import ConceptsEvalParams, ConceptsTcav

if TYPE_CHECKING:
    from lib.studies.concepts.summary import Summary

METRICS = ("r2", "mae", "kendall_tau", "latent_spearman", "knn_r2", "val_r2")
HIGHER_IS_BETTER = {"r2": True, "mae": False, "kendall_tau": True, "latent_spearman": True, "knn_r2": True,
                    "val_r2": True}


def evaluate(trained: TrainedModel, data: TileData, split: Split, cfg: ConceptsEvalParams, seed: int) -> dict[str, float]:
    """Test-split metrics of one variant: :func:`regression_metrics` (MAE in the outcome's
    units) and :func:`latent_ordering` of its embeddings (draws seeded ``seed``), plus its validation R^2."""
    rt = runtime(cfg.device)
    bs = cfg.inference_batch_size
    test_images = data.images[torch.from_numpy(split.test)]
    out = regression_metrics(data.outcome[split.test], trained.predict(test_images, rt, bs))
    out |= latent_ordering(
        trained.embed(data.images[torch.from_numpy(split.fit)], rt, bs), data.outcome[split.fit],
        trained.embed(test_images, rt, bs), data.outcome[split.test], k=cfg.eval.knn_k, seed=seed,
    )
    return out | {"val_r2": float(trained.meta["best_val_r2"]), "best_epoch": int(trained.meta["best_epoch"]),
                  "epochs": len(trained.meta["history"]), "max_epochs": int(trained.meta["max_epochs"]),
                  "stopped_at_plateau": int(trained.meta["stopped_at_plateau"])}


def metrics_table(trained: dict[str, TrainedModel], data: TileData, split: Split, cfg: ConceptsEvalParams,
                  seed: int) -> pd.DataFrame:
    """:func:`evaluate` of every variant, one row each, indexed by variant."""
    return pd.DataFrame({v: evaluate(t, data, split, cfg, seed) for v, t in trained.items()}).T.rename_axis("variant")


# ------------------------------------------------------------------ concepts
@dataclass(frozen=True)
class ConceptSets:
    """Tile indices of each usable concept and a table of every candidate concept."""

    members: dict[str, np.ndarray]
    table: pd.DataFrame


def concept_sets(concepts: pd.DataFrame, pool: np.ndarray, threshold: float, set_size: int,
                 min_size: int, seed: int) -> ConceptSets:
    """Concept image sets: tiles of ``pool`` whose fraction of the concept is >= ``threshold``.

    A concept with fewer than ``min_size`` such tiles is skipped; one with
    more than ``set_size`` keeps a seeded random ``set_size`` of them.
    """
    rng = np.random.default_rng(seed)
    members, rows = {}, []
    for name in concepts.columns:
        candidates = pool[concepts[name].to_numpy()[pool] >= threshold]
        used = len(candidates) >= min_size
        if used:
            members[name] = np.sort(rng.choice(candidates, min(set_size, len(candidates)), replace=False))
        rows.append({"concept": name, "qualifying_tiles": len(candidates),
                     "examples": len(members.get(name, ())), "used": used})
    return ConceptSets(members, pd.DataFrame(rows))


def concept_pool(split: Split) -> np.ndarray:
    """Tiles the concept and random sets are drawn from: fit and validation, never test."""
    return np.concatenate([split.fit, split.val])


@dataclass(frozen=True)
class ConceptCavs:
    """CAVs of one trained variant: ``max(tcav.n_random)`` runs per concept and of the null concept."""

    cavs: dict[tuple[str, int], torch.Tensor]
    null_concept: str


def concept_cavs(trained: TrainedModel, data: TileData, split: Split, sets: ConceptSets, cfg: ConceptsEvalParams,
                 seed: int) -> ConceptCavs:
    """One CAV per concept and random negative at ``tcav.layer`` (:func:`lib.explain.tcav.compute_cavs`).

    ``max(tcav.n_random) + 1`` random sets of ``set_size`` tiles are drawn
    (seeded ``seed``) from the fit and validation tiles, like the concept
    sets. Fewer random runs are the first runs of these
    (:func:`lib.explain.tcav.first_runs`), so every candidate ``n_random``
    reuses these CAVs.
    """
    rt = runtime(cfg.device)
    t = cfg.tcav
    model = rt.prepare(trained.model).eval()

    def on_device(idx: np.ndarray) -> torch.Tensor:
        return data.images[torch.from_numpy(idx)].to(rt.device)

    concepts = [make_concept(i, name, on_device(idx)) for i, (name, idx) in enumerate(sets.members.items())]
    pool = concept_pool(split)
    randoms = random_concepts(on_device(pool), n_runs=max(t.n_random), set_size=min(t.set_size, len(pool)), seed=seed)
    return ConceptCavs(compute_cavs(model, t.layer, concepts, randoms), randoms[0].name)


def interval_tcav(trained: TrainedModel, data: TileData, tiles: np.ndarray, cavs: ConceptCavs, n_random: int,
                  cfg: ConceptsEvalParams) -> pd.DataFrame:
    """TCAV of every concept in each outcome quantile interval of ``tiles``, with ``n_random`` runs.

    :func:`lib.explain.tcav.score_by_interval` on the first ``n_random`` runs
    of ``cavs``: the tidy table (concept, interval, run, score, magnitude,
    p_value, significant) with the interval edges in ``attrs``.
    """
    rt = runtime(cfg.device)
    model = rt.prepare(trained.model).eval()
    images = data.images[torch.from_numpy(tiles)].to(rt.device)
    return score_by_interval(model, cfg.tcav.layer, images, data.outcome[tiles], first_runs(cavs.cavs, n_random),
                             cavs.null_concept, n_intervals=cfg.tcav.n_intervals, alpha=cfg.tcav.alpha,
                             bonferroni=cfg.tcav.bonferroni, batch_size=cfg.inference_batch_size)


def significance_cells(table: pd.DataFrame) -> pd.Series:
    """The significance decision of each (concept, interval), the null concept left out."""
    rows = table[table["concept"] != table.attrs["null_concept"]]
    return rows.groupby(["concept", "interval"])["significant"].first().astype(bool)


@dataclass(frozen=True)
class NRandomChoice:
    """How ``tcav.n_random`` was chosen on the validation tiles.

    ``agreement[n]``: share of the (variant, seed, concept, interval) cells
    whose significance decision with ``n`` random runs equals the decision with
    the largest candidate; ``chosen``: the smallest candidate with
    ``agreement >= min_agreement`` (the largest has agreement 1).
    """

    candidates: list[int]
    agreement: dict[int, float]
    min_agreement: float
    chosen: int
    cells: int

    def to_json(self) -> dict:
        return {"candidates": self.candidates, "agreement": {str(n): a for n, a in self.agreement.items()},
                "min_agreement": self.min_agreement, "chosen": self.chosen, "cells": self.cells,
                "rule": "the smallest candidate whose significance decisions on the validation tiles agree with "
                        "the largest candidate's in at least min_agreement of the cells"}


def choose_n_random(validation: dict[int, list[pd.DataFrame]], tcav: ConceptsTcav) -> NRandomChoice:
    """Choose ``n_random`` from validation tables: ``validation[n]`` lists, for every candidate ``n``,
    the TCAV tables of the same (variant, seed) repetitions in the same order (:class:`NRandomChoice`)."""
    candidates = sorted(tcav.n_random)
    if sorted(validation) != candidates:
        raise ValueError(f"validation tables for {sorted(validation)}, candidates {candidates}")
    reference = [significance_cells(t) for t in validation[candidates[-1]]]
    cells = sum(len(r) for r in reference)
    agreement = {}
    for n in candidates:
        decisions = [significance_cells(t) for t in validation[n]]
        if len(decisions) != len(reference):
            raise ValueError(f"{len(decisions)} validation tables for n_random={n}, {len(reference)} for the largest")
        same = sum(int((d.reindex(r.index) == r).sum()) for d, r in zip(decisions, reference, strict=True))
        agreement[n] = same / cells if cells else 1.0
    chosen = next(n for n in candidates if agreement[n] >= tcav.n_random_agreement)
    return NRandomChoice(candidates, agreement, tcav.n_random_agreement, chosen, cells)


def sensitivity_matrix(table: pd.DataFrame, statistic: str, significant_only: bool = True) -> pd.DataFrame:
    """Concept x interval matrix of the mean ``statistic`` over runs; NaN where not significant."""
    rows = table[table["concept"] != table.attrs["null_concept"]]
    mean = rows.pivot_table(index="concept", columns="interval", values=statistic, aggfunc="mean", sort=False)
    if significant_only:
        significant = rows.pivot_table(index="concept", columns="interval", values="significant", aggfunc="first", sort=False)
        mean = mean.where(significant.astype(bool))
    return mean


def interval_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (concept, interval): mean TCAV score and magnitude over runs, p-value, significance."""
    rows = table[table["concept"] != table.attrs["null_concept"]]
    return (rows.groupby(["concept", "interval"], sort=False)
            .agg(score=("score", "mean"), magnitude=("magnitude", "mean"), p_value=("p_value", "first"),
                 significant=("significant", "first"))
            .reset_index())


def concept_sensitivity(table: pd.DataFrame, statistic: str) -> pd.Series:
    """Each concept's mean ``statistic`` over runs and intervals (the null concept left out)."""
    return sensitivity_matrix(table, statistic, significant_only=False).mean(axis=1).rename(statistic)


def ground_truth_agreement(sensitivity: pd.Series, true_effect: pd.Series) -> dict[str, float]:
    """Rank agreement of concept sensitivities with the concepts' true effects on the outcome.

    Over the concepts in both series: Spearman's rho and Kendall's tau_b with
    their two-sided p-values, and the number of concepts. Only the ranks of
    the true effects matter, so a generator's unidentifiable intercept
    (fractions sum to one) does not. Fewer than 3 concepts give NaN.
    """
    common = [c for c in sensitivity.index if c in true_effect.index and np.isfinite(sensitivity[c])]
    out = {"n_concepts": len(common)}
    if len(common) < 3:
        return out | {k: math.nan for k in ("spearman", "spearman_p", "kendall", "kendall_p")}
    s, e = sensitivity[common].to_numpy(float), true_effect[common].to_numpy(float)
    rho, tau = stats.spearmanr(s, e), stats.kendalltau(s, e)
    return out | {"spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
                  "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue)}


def agreement_table(tcav: dict[str, pd.DataFrame], true_effects: pd.Series) -> pd.DataFrame:
    """:func:`ground_truth_agreement` per variant and TCAV statistic, one row each."""
    rows = [{"variant": v, "statistic": s, **ground_truth_agreement(concept_sensitivity(table, s), true_effects)}
            for v, table in tcav.items() for s in ("score", "magnitude")]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the interval-dependent truth
def true_slope_by_interval(slope: np.ndarray, y: np.ndarray, n_intervals: int) -> np.ndarray:
    """Mean true effect ``g_u`` of the tiles in each outcome quantile interval of ``y`` (n_intervals,).

    The intervals are those TCAV scores in (:func:`lib.explain.tcav.outcome_intervals`
    of the same outcomes); an empty interval gets NaN.
    """
    slope = np.asarray(slope, np.float64)
    if slope.shape != np.shape(y):
        raise ValueError(f"slope {slope.shape} and outcomes {np.shape(y)} differ in shape")
    index, _ = outcome_intervals(y, n_intervals)
    return np.array([slope[index == i].mean() if (index == i).any() else math.nan for i in range(n_intervals)])


def interval_truth_agreement(sensitivity: np.ndarray, true_slope: np.ndarray, null: float = 0.5) -> dict[str, float]:
    """Does a concept's TCAV statistic per outcome interval follow its true effect per interval?

    ``sensitivity`` (k,): the concept's mean TCAV statistic over runs in each
    interval; ``true_slope`` (k,): the mean true effect of its fraction there
    (:func:`true_slope_by_interval`). Over the intervals where both are finite:

    * ``spearman``: Spearman's rho of the two (NaN with fewer than 3 intervals
      or when either is constant): +1 when the explanation ranks the intervals
      like the truth;
    * ``sign_agreement``: share, over intervals whose true effect is not 0, of
      those where the statistic lies on the truth's side of ``null`` (0.5 for
      the TCAV score and magnitude: above when the concept raises the outcome);
      NaN when the true effect is 0 everywhere;
    * ``contrast``: the statistic's mean in the intervals of the largest true
      effect minus its mean in those of the smallest (NaN when the truth is
      constant): > 0 when the explanation is stronger where the effect is.
    """
    s, g = np.asarray(sensitivity, np.float64), np.asarray(true_slope, np.float64)
    if s.shape != g.shape or s.ndim != 1:
        raise ValueError(f"sensitivity {s.shape} and true_slope {g.shape} must be (k,) of one length")
    finite = np.isfinite(s) & np.isfinite(g)
    s, g = s[finite], g[finite]
    constant = len(g) == 0 or np.ptp(g) == 0
    rho = math.nan if len(s) < 3 or constant or np.ptp(s) == 0 else float(stats.spearmanr(s, g).statistic)
    effect = g != 0
    sign = float(np.mean(np.sign(s[effect] - null) == np.sign(g[effect]))) if effect.any() else math.nan
    contrast = math.nan if constant else float(s[g == g.max()].mean() - s[g == g.min()].mean())
    return {"n_intervals": int(len(s)), "spearman": rho, "sign_agreement": sign, "contrast": contrast}


def interval_truth_table(tcav: dict[str, pd.DataFrame], truth: IntervalTruth, data: TileData, tiles: np.ndarray,
                         statistic: str, n_intervals: int) -> pd.DataFrame:
    """Per variant and interval: the truth concept's mean TCAV ``statistic``, its significance and the
    mean true slope of the ``tiles`` in that interval (the intervals TCAV scored them in)."""
    true_slope = true_slope_by_interval(truth.slope[tiles], data.outcome[tiles], n_intervals)
    rows = []
    for variant, table in tcav.items():
        summary = interval_summary(table)
        mine = summary[summary["concept"] == truth.concept].set_index("interval")
        for i in range(n_intervals):
            present = i in mine.index
            rows.append({"variant": variant, "interval": i, "true_slope": true_slope[i],
                         "tcav": float(mine.loc[i, statistic]) if present else math.nan,
                         "significant": bool(mine.loc[i, "significant"]) if present else False})
    return pd.DataFrame(rows)


def interval_truth_scores(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`interval_truth_agreement` per variant of an :func:`interval_truth_table`."""
    rows = []
    for variant, rows_v in table.groupby("variant", sort=False):
        rows_v = rows_v.sort_values("interval")
        rows.append({"variant": variant, **interval_truth_agreement(rows_v["tcav"].to_numpy(), rows_v["true_slope"].to_numpy())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ one repetition
@dataclass
class Repetition:
    """What one seed's evaluation produced (``tcav`` and the truth tables are filled once ``n_random`` is chosen)."""

    seed: int
    split: Split
    metrics: pd.DataFrame
    sets: ConceptSets | None = None
    cavs: dict[str, ConceptCavs] = field(default_factory=dict)
    validation: dict[int, dict[str, pd.DataFrame]] = field(default_factory=dict)
    tcav: dict[str, pd.DataFrame] = field(default_factory=dict)
    agreement: pd.DataFrame | None = None
    interval_truth: pd.DataFrame | None = None
    rungs: dict[str, float] | None = None
    control: ControlRun | None = None


def score_rungs(rep: Repetition, data: TileData, cfg: ConceptsEvalParams) -> None:
    """The encoder-free rungs of ``rep``'s ladder (:func:`lib.studies.concepts.rungs.rung_scores`)."""
    rep.rungs = rung_scores(data, rep.split, cfg.probe.ridge_alphas)


def positive_control(rep: Repetition, data: TileData, cfg: ConceptsEvalParams, n_random: int) -> None:
    """TCAV's positive control of ``rep`` (:func:`lib.studies.concepts.control.run_control`) with its concept sets."""
    rep.control = run_control(data, rep.split, rep.sets.members, cfg, n_random, rep.seed)


def prepare_concepts(rep: Repetition, trained: dict[str, TrainedModel], data: TileData, cfg: ConceptsEvalParams) -> None:
    """Concept sets, CAVs of every variant and the validation TCAV of every ``n_random`` candidate of ``rep``."""
    t = cfg.tcav
    rep.sets = concept_sets(data.concepts, concept_pool(rep.split), t.threshold, t.set_size, t.min_concept_size, rep.seed)
    rep.cavs = {v: concept_cavs(m, data, rep.split, rep.sets, cfg, rep.seed) for v, m in trained.items()}
    rep.validation = {n: {v: interval_tcav(m, data, rep.split.val, rep.cavs[v], n, cfg) for v, m in trained.items()}
                      for n in sorted(t.n_random)}


def explain_test_tiles(rep: Repetition, trained: dict[str, TrainedModel], data: TileData, cfg: ConceptsEvalParams,
                  n_random: int, truth: IntervalTruth | None) -> None:
    """TCAV of ``rep`` on its test tiles with ``n_random`` runs, the ground-truth agreement and the interval truth."""
    rep.tcav = {v: interval_tcav(m, data, rep.split.test, rep.cavs[v], n_random, cfg) for v, m in trained.items()}
    if data.true_effects is not None:
        rep.agreement = agreement_table(rep.tcav, data.true_effects)
    if truth is not None:
        rep.interval_truth = interval_truth_table(rep.tcav, truth, data, rep.split.test, cfg.tcav.statistic,
                                                  cfg.tcav.n_intervals)


def validation_tables(reps: list[Repetition]) -> dict[int, list[pd.DataFrame]]:
    """Every repetition's validation tables per candidate, in (seed, variant) order, for :func:`choose_n_random`."""
    candidates = sorted(reps[0].validation)
    return {n: [rep.validation[n][v] for rep in reps for v in rep.validation[n]] for n in candidates}


# ------------------------------------------------------------------ results
def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """A copy without ``attrs`` (pandas cannot compare attrs holding arrays when concatenating)."""
    out = table.copy()
    out.attrs = {}
    return out


def save_results(out_dir: str | os.PathLike, summary: Summary, reps: list[Repetition], history: pd.DataFrame) -> None:
    """The city's results under ``out_dir`` (e.g. ``results/concepts/<city>``):

    * ``metrics.json`` - the headline numbers a reader compares between runs
      (:meth:`~lib.studies.concepts.summary.Summary.headline`);
    * ``summary.json`` - the :class:`~lib.studies.concepts.summary.Summary` (the paper reads it);
    * ``plots/validation_r2.csv`` - the validation R^2 per epoch of both variants (mean over seeds), for ``dvc plots``;
    * ``tables/`` - the per-seed tables as CSV.
    """
    out_dir = Path(out_dir)
    tables = out_dir / "tables"
    metrics = pd.concat([rep.metrics.assign(seed=rep.seed) for rep in reps]).reset_index()
    write_text(tables / "metrics.csv", metrics.to_csv(index=False, float_format="%.4f"))
    write_text(tables / "training_history.csv", history.to_csv(index=False, float_format="%.5f"))
    if reps[0].sets is not None:
        sets = pd.concat([rep.sets.table.assign(seed=rep.seed) for rep in reps], ignore_index=True)
        write_text(tables / "concept_sets.csv", sets.to_csv(index=False))
    if reps[0].tcav:
        runs = pd.concat([_plain(t).assign(variant=v, seed=rep.seed) for rep in reps for v, t in rep.tcav.items()],
                         ignore_index=True)
        write_text(tables / "tcav_runs.csv", runs.to_csv(index=False, float_format="%.5g"))
        intervals = pd.concat([interval_summary(t).assign(variant=v, seed=rep.seed)
                               for rep in reps for v, t in rep.tcav.items()], ignore_index=True)
        write_text(tables / "tcav_intervals.csv", intervals.to_csv(index=False, float_format="%.5g"))
        validation = pd.concat([interval_summary(t).assign(variant=v, seed=rep.seed, n_random=n)
                                for rep in reps for n, by_v in rep.validation.items() for v, t in by_v.items()],
                               ignore_index=True)
        write_text(tables / "tcav_validation.csv", validation.to_csv(index=False, float_format="%.5g"))
    if reps[0].agreement is not None:
        agreement = pd.concat([rep.agreement.assign(seed=rep.seed) for rep in reps], ignore_index=True)
        write_text(tables / "ground_truth_agreement.csv", agreement.to_csv(index=False, float_format="%.4f"))
    if reps[0].control is not None:
        control = pd.concat([rep.control.table.assign(seed=rep.seed, fraction_r2=rep.control.fraction_r2)
                             for rep in reps], ignore_index=True)
        write_text(tables / "positive_control.csv", control.to_csv(index=False, float_format="%.5g"))
    if reps[0].interval_truth is not None:
        truth = pd.concat([rep.interval_truth.assign(seed=rep.seed) for rep in reps], ignore_index=True)
        write_text(tables / "interval_truth.csv", truth.to_csv(index=False, float_format="%.5g"))
    write_json(out_dir / "summary.json", summary.model_dump(mode="json"))
    write_json(out_dir / "metrics.json", summary.headline())
    curves = (history.assign(epoch=history["epoch"] + 1)
              .pivot_table(index="epoch", columns="variant", values="val_score", aggfunc="mean"))
    curves = curves[[v for v in VARIANTS if v in curves.columns]]
    write_text(out_dir / "plots" / "validation_r2.csv", curves.reset_index().to_csv(index=False, float_format="%.5f"))
