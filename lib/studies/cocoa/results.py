"""The COCOA study's metrics.json, summary.json and tables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import pandas as pd

from lib.io import write_json, write_text
from lib.studies.cocoa.benchmark import (
    METRICS,
    SETTINGS,
    auc_table,
    cocoa_advantage,
    summarise,
)
from lib.studies.cocoa.localisation import compare_localisation, summarise_localisation
from lib.studies.cocoa.params import CocoaEvalParams
from lib.studies.cocoa.sanity import summarise_cascade, summarise_sanity
from lib.studies.cocoa.summary import PLOTTED, Summary, build_summary


@dataclass(frozen=True)
class StudyResults:
    """Everything ``cocoa_eval`` measured, tidy, every row with its ``seed``.

    aucs, curves: the benchmark (:func:`lib.studies.cocoa.benchmark.run_benchmark`);
    localisation: per-scene scores (:func:`lib.studies.cocoa.localisation.localise`);
    augmentation: per-view similarities; sanity: per-map rank correlations;
    accuracies: one row per seed with ``probe_test_accuracy`` and ``caption_matching_accuracy``;
    box_share: per scene set, the named digit's box's mean share of the canvas (chance for the mass in box);
    correct: per seed, classification rung and test digit whether it was classified right
    (:func:`lib.studies.cocoa.ladder.classification_correct`); trainings: one row per seed and training
    (model, selected_epoch, last_epoch, max_epochs, stopped_at_plateau); sanity holds the full and the cascading
    randomisation (column ``randomised_blocks``, ``n_blocks`` for the full one).
    """

    aucs: pd.DataFrame
    curves: pd.DataFrame
    localisation: pd.DataFrame
    augmentation: pd.DataFrame
    sanity: pd.DataFrame
    accuracies: pd.DataFrame
    box_share: dict[str, float]
    correct: pd.DataFrame
    trainings: pd.DataFrame
    n_blocks: int

    def full_sanity(self) -> pd.DataFrame:
        """The sanity rows of the full randomisation."""
        return self.sanity[self.sanity.randomised_blocks == self.n_blocks]


def save_results(out_dir: str | os.PathLike, cfg: CocoaEvalParams, results: StudyResults) -> Summary:
    """The study's results under ``out_dir``, and its summary:

    * ``metrics.json`` - the headline numbers a reader compares between runs, means over seeds
      (:meth:`~lib.studies.cocoa.summary.Summary.headline`);
    * ``summary.json`` - the :class:`~lib.studies.cocoa.summary.Summary` (:func:`~lib.studies.cocoa.summary.build_summary`;
      the paper reads it);
    * ``plots/`` - the mean insertion and deletion curves per method, one column per target, for ``dvc plots``;
    * ``tables/`` - the full tables as CSV, per-seed rows included.
    """
    out_dir = Path(out_dir)
    summary = build_summary(cfg, results)
    write_json(out_dir / "metrics.json", summary.headline())
    write_json(out_dir / "summary.json", summary.model_dump(mode="json"))
    tables = out_dir / "tables"
    csv = dict(index=False, float_format="%.5f")
    auc_summary = summarise(results.aucs)

    def cells_csv(frame: pd.DataFrame) -> str:  # the cells' numbers are columns of their own
        return frame.drop(columns="cell").to_csv(**csv)

    write_text(tables / "benchmark_auc.csv", results.aucs.to_csv(**csv))
    write_text(tables / "benchmark_summary.csv", cells_csv(auc_summary))
    write_text(tables / "cocoa_advantage.csv", cells_csv(cocoa_advantage(results.aucs)))
    for setting, metric in product(SETTINGS, METRICS):
        write_text(tables / f"table_{setting}_{metric}.csv", auc_table(auc_summary, setting, metric).to_csv())
    write_text(tables / "localisation_scores.csv", results.localisation.to_csv(**csv))
    write_text(tables / "localisation.csv", cells_csv(summarise_localisation(results.localisation)))
    write_text(tables / "localisation_comparisons.csv", cells_csv(compare_localisation(results.localisation)))
    write_text(tables / "sanity_rank_correlations.csv", results.sanity.to_csv(**csv))
    write_text(tables / "sanity_summary.csv",
               cells_csv(summarise_sanity(results.full_sanity(), cfg.sanity.max_rank_correlation)))
    write_text(tables / "sanity_cascade.csv", cells_csv(summarise_cascade(results.sanity)))
    write_text(tables / "classification.csv", results.correct.to_csv(**csv))
    write_text(tables / "trainings.csv", results.trainings.to_csv(**csv))
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

