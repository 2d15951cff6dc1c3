"""The COCOA study's metrics.json, summary.json and tables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

from lib.io import write_json, write_text
from lib.studies.cocoa.augmentations import summarise_augmentation
from lib.studies.cocoa.benchmark import METRICS, SETTINGS, auc_table, cocoa_advantage, summarise, verdicts
from lib.studies.cocoa.localisation import compare_localisation, summarise_localisation
from lib.studies.cocoa.params import CocoaEvalParams
from lib.studies.cocoa.sanity import summarise_sanity
from lib.studies.cocoa.stats import cell, values_cell

#: The setting and metric of the plotted curves and the headline AUCs.
PLOTTED = ("same_class", "contrastive_corpus_similarity")


@dataclass(frozen=True)
class StudyResults:
    """Everything ``cocoa_eval`` measured, tidy, every row with its ``seed``.

    aucs, curves: the benchmark (:func:`lib.studies.cocoa.benchmark.run_benchmark`);
    localisation: per-scene scores (:func:`lib.studies.cocoa.localisation.localise`);
    augmentation: per-view similarities; sanity: per-map rank correlations;
    accuracies: one row per seed with ``probe_test_accuracy`` and ``caption_matching_accuracy``;
    box_share: per scene set, the named digit's box's mean share of the canvas (chance for the mass in box).
    """

    aucs: pd.DataFrame
    curves: pd.DataFrame
    localisation: pd.DataFrame
    augmentation: pd.DataFrame
    sanity: pd.DataFrame
    accuracies: pd.DataFrame
    box_share: dict[str, float]


def _nan_to_none(x):
    return None if isinstance(x, float) and np.isnan(x) else x


def _comparison(row) -> dict:
    """A row of a comparison frame as summary.json's paired-comparison cell."""
    difference = row.advantage if hasattr(row, "advantage") else row.difference
    supported = bool(row.supported)
    return {"difference": float(difference), "ci95": _nan_to_none(float(row.ci95)),
            "p_value": _nan_to_none(float(row.p_value)), "n_seeds": int(row.n_seeds), "supported": supported,
            "direction": int(np.sign(difference)) if supported else 0}


def _constant_share(sanity: pd.DataFrame) -> dict:
    """Per target and method, the share of randomised-encoder maps that were constant (no ranking at all)."""
    if "constant_map" not in sanity.columns:
        return {}
    share: dict = {}
    for (target, method), rows in sanity.groupby(["target", "method"], sort=False):
        share.setdefault(target, {})[method] = float(rows.constant_map.mean())
    return share


def summary_json(cfg: CocoaEvalParams, results: StudyResults) -> dict:
    """The nested summary the paper reads: every table as mean, 95 % half-width (null for one seed) and
    per-seed values; every comparison of COCOA with another target as a paired comparison by seed."""
    summary = summarise(results.aucs)
    benchmark: dict = {}
    for row in summary.itertuples():
        node = benchmark.setdefault(row.setting, {}).setdefault(row.metric, {}).setdefault(row.target, {})
        node.setdefault(row.method, {})[row.curve] = cell(row)
    advantage = cocoa_advantage(results.aucs)
    comparisons: dict = {}
    for row in advantage.itertuples():
        node = comparisons.setdefault(row.setting, {}).setdefault(row.metric, {}).setdefault(row.method, {})
        node.setdefault(row.curve, {})[row.other] = _comparison(row)
    verdict: dict = {}
    for row in verdicts(advantage).itertuples():
        verdict.setdefault(row.setting, {})[row.metric] = {
            k: int(getattr(row, k)) for k in ("n_columns", "best_on_average", "supported_best", "supported_worse")}
    local: dict = {}
    for row in summarise_localisation(results.localisation).itertuples():
        local.setdefault(row.scenes, {}).setdefault(row.method, {}).setdefault(row.target, {})[row.score] = cell(row)
    local_comparisons: dict = {}
    for row in compare_localisation(results.localisation).itertuples():
        node = local_comparisons.setdefault(row.scenes, {}).setdefault(row.method, {}).setdefault(row.other, {})
        node[row.score] = _comparison(row)
    sanity_rows = summarise_sanity(results.sanity, cfg.sanity.max_rank_correlation)
    correlations: dict = {}
    passes: dict = {}
    for row in sanity_rows.itertuples():
        node = correlations.setdefault(row.target, {}).setdefault(row.method, {})
        node[row.correlation] = cell(row) | {"upper": float(row.upper), "passes": bool(row.passes)}
        passes.setdefault(row.target, {})[row.method] = bool(row.method_passes)
    majority = results.aucs.drop_duplicates(["seed", "setting", "corpus_class"])
    agreement = (majority.majority_class == majority.corpus_class).groupby(majority.seed).mean()
    acc = results.accuracies.sort_values("seed")
    return {
        "seeds": [int(s) for s in acc.seed],
        "n_seeds": len(acc),
        "n_classes": int(results.aucs.corpus_class.nunique()),
        "n_explicands": cfg.benchmark.n_explicands,
        "corpus_size": cfg.benchmark.corpus_size,
        "foil_size": cfg.benchmark.foil_size,
        "n_scenes": cfg.localisation.n_scenes,
        "benchmark": benchmark,
        "comparisons": comparisons,
        "verdicts": verdict,
        "corpus_majority_is_corpus_class": values_cell(agreement.to_numpy(), agreement.index),
        "localisation": local,
        "localisation_comparisons": local_comparisons,
        "box_share": {k: float(v) for k, v in results.box_share.items()},
        "sanity": {
            "n_explicands": cfg.sanity.n_explicands,
            "max_rank_correlation": cfg.sanity.max_rank_correlation,
            "correlations": correlations,
            "passes": passes,
            "constant_map_share": _constant_share(results.sanity),
        },
        "augmentation_similarity": {row.augmentation: cell(row) for row in summarise_augmentation(results.augmentation).itertuples()},
        "probe_test_accuracy": values_cell(acc.probe_test_accuracy.to_numpy(), acc.seed),
        "caption_matching_accuracy": values_cell(acc.caption_matching_accuracy.to_numpy(), acc.seed),
    }


def save_results(out_dir: str | os.PathLike, cfg: CocoaEvalParams, results: StudyResults) -> dict:
    """The study's results under ``out_dir``, and the summary:

    * ``metrics.json`` - the headline numbers a reader compares between runs, means over seeds (:func:`headline`);
    * ``summary.json`` - :func:`summary_json` (the paper reads it);
    * ``plots/`` - the mean insertion and deletion curves per method, one column per target, for ``dvc plots``;
    * ``tables/`` - the full tables as CSV, per-seed rows included.
    """
    out_dir = Path(out_dir)
    summary = summary_json(cfg, results)
    write_json(out_dir / "metrics.json", headline(summary))
    write_json(out_dir / "summary.json", summary)
    tables = out_dir / "tables"
    csv = dict(index=False, float_format="%.5f")
    auc_summary = summarise(results.aucs)
    write_text(tables / "benchmark_auc.csv", results.aucs.to_csv(**csv))
    write_text(tables / "benchmark_summary.csv", auc_summary.to_csv(**csv))
    write_text(tables / "cocoa_advantage.csv", cocoa_advantage(results.aucs).to_csv(**csv))
    for setting, metric in product(SETTINGS, METRICS):
        write_text(tables / f"table_{setting}_{metric}.csv", auc_table(auc_summary, setting, metric).to_csv())
    write_text(tables / "localisation_scores.csv", results.localisation.to_csv(**csv))
    write_text(tables / "localisation.csv", summarise_localisation(results.localisation).to_csv(**csv))
    write_text(tables / "localisation_comparisons.csv", compare_localisation(results.localisation).to_csv(**csv))
    write_text(tables / "sanity_rank_correlations.csv", results.sanity.to_csv(**csv))
    write_text(tables / "sanity_summary.csv",
               summarise_sanity(results.sanity, cfg.sanity.max_rank_correlation).to_csv(**csv))
    write_text(tables / "augmentation_similarity.csv", results.augmentation.to_csv(**csv))
    write_text(tables / "accuracies.csv", results.accuracies.to_csv(**csv))
    _save_plot_data(out_dir / "plots", results.curves)
    return summary


def _save_plot_data(plots: Path, curves: pd.DataFrame) -> None:
    """One file per method and curve, one column per target, means over seeds, classes and explicands;
    the random ranking (its own "method") in every file."""
    plotted = curves[(curves.setting == PLOTTED[0]) & (curves.metric == PLOTTED[1])]
    mean_curves = plotted.groupby(["method", "curve", "fraction", "target"], sort=False).score.mean().unstack("target")
    for (method, curve), rows in mean_curves.groupby(level=["method", "curve"], sort=False):
        if method == "random":
            continue
        wide = rows.droplevel(["method", "curve"]).dropna(axis=1, how="all")
        if ("random", curve) in mean_curves.index.droplevel("fraction"):
            wide["random"] = mean_curves.loc[("random", curve), "random"]
        write_text(plots / f"{curve}_{method}.csv", wide.reset_index().to_csv(index=False, float_format="%.5f"))


def headline(summary: dict) -> dict:
    """The dozen numbers a reader compares between runs, each a mean over seeds rounded to 4 decimals.

    Per setting and curve, for the contrastive corpus similarity: COCOA's AUC and the
    best other target's (random included), each averaged over the attribution methods
    (insertion: higher is better, deletion: lower); the probe's test accuracy, the
    caption-matching accuracy, the pointing game of COCOA and of the corpus-only
    target on crowded scenes with Integrated Gradients, and COCOA's rank correlation
    between trained and randomised-encoder maps per method (the sanity check).
    """
    out: dict = {}
    for setting, by_metric in summary["benchmark"].items():
        by_target = by_metric[PLOTTED[1]]
        for curve in ("insertion", "deletion"):
            means = {target: float(np.mean([cells[curve]["mean"] for cells in by_method.values()]))
                     for target, by_method in by_target.items()}
            others = [v for t, v in means.items() if t != "cocoa"]
            best = max(others) if curve == "insertion" else min(others)
            out[f"{setting}_{curve}"] = {"cocoa": round(means["cocoa"], 4), "best_other": round(best, 4)}
    out["probe_test_accuracy"] = round(summary["probe_test_accuracy"]["mean"], 4)
    out["caption_matching_accuracy"] = round(summary["caption_matching_accuracy"]["mean"], 4)
    crowded = summary["localisation"].get("crowded", {}).get("integrated_gradients", {})
    out["crowded_pointing_game"] = {t: round(crowded[t]["pointing_game"]["mean"], 4) for t in ("cocoa", "corpus")
                                    if t in crowded}
    cocoa = summary["sanity"]["correlations"].get("cocoa", {})
    out["sanity_rank_correlation_cocoa"] = {m: round(c["rank_correlation"]["mean"], 4) for m, c in cocoa.items()}
    return out
