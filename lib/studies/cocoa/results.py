"""The COCOA study's metrics.json and tables."""

from __future__ import annotations

import os
from itertools import product
from pathlib import Path

import pandas as pd

from lib.io import write_json, write_text
from lib.studies.cocoa.benchmark import METRICS, SETTINGS, auc_table, cocoa_advantage, summarise
from lib.studies.cocoa.localisation import LOCALISATION_SCORES
from lib.studies.cocoa.params import CocoaEvalParams

#: The setting and metric of the plotted curves and the headline AUCs.
PLOTTED = ("same_class", "contrastive_corpus_similarity")


def save_results(
    out_dir: str | os.PathLike,
    cfg: CocoaEvalParams,
    aucs: pd.DataFrame,
    curves: pd.DataFrame,
    localisation: pd.DataFrame,
    augmentation: pd.DataFrame,
    extra: dict[str, float],
) -> None:
    """The study's results under ``out_dir``:

    * ``metrics.json`` - the headline numbers a reader compares between runs (:func:`headline`);
    * ``summary.json`` - nested means and 95% half-widths of every table, plus ``extra`` numbers (the paper reads it);
    * ``plots/`` - the mean insertion and deletion curves per method, one column per target, for ``dvc plots``;
    * ``tables/`` - the full tables as CSV.
    """
    out_dir = Path(out_dir)
    summary = summarise(aucs)
    benchmark: dict = {}
    for row in summary.itertuples():
        cell = benchmark.setdefault(row.setting, {}).setdefault(row.metric, {}).setdefault(row.target, {})
        cell.setdefault(row.method, {})[row.curve] = {"mean": row.mean, "ci95": row.ci95}
    local: dict = {}
    for row in localisation.itertuples():
        local.setdefault(row.scenes, {}).setdefault(row.method, {})[row.target] = {
            score: {"mean": getattr(row, score), "ci95": getattr(row, f"{score}_ci95")} for score in LOCALISATION_SCORES
        }
    write_json(out_dir / "metrics.json", headline(summary, localisation, extra))
    write_json(out_dir / "summary.json", {
        "benchmark": benchmark,
        "localisation": local,
        "augmentation_similarity": augmentation.groupby("augmentation", sort=False).similarity.mean().to_dict(),
        "n_seeds": cfg.benchmark.n_seeds,
        "n_explicands": cfg.benchmark.n_explicands,
        "n_scenes": cfg.localisation.n_scenes,
        **extra,
    })
    tables = out_dir / "tables"
    write_text(tables / "benchmark_auc.csv", aucs.to_csv(index=False, float_format="%.5f"))
    write_text(tables / "benchmark_summary.csv", summary.to_csv(index=False, float_format="%.5f"))
    write_text(tables / "cocoa_advantage.csv", cocoa_advantage(aucs).to_csv(index=False, float_format="%.5f"))
    for setting, metric in product(SETTINGS, METRICS):
        write_text(tables / f"table_{setting}_{metric}.csv", auc_table(summary, setting, metric).to_csv())
    write_text(tables / "localisation.csv", localisation.to_csv(index=False, float_format="%.4f"))
    write_text(tables / "augmentation_similarity.csv", augmentation.to_csv(index=False, float_format="%.4f"))
    # One file per method and curve, one column per target; the random ranking (its own "method") in every file.
    plotted = curves[(curves.setting == PLOTTED[0]) & (curves.metric == PLOTTED[1])]
    mean_curves = plotted.groupby(["method", "curve", "fraction", "target"], sort=False).score.mean().unstack("target")
    for (method, curve), rows in mean_curves.groupby(level=["method", "curve"], sort=False):
        if method == "random":
            continue
        wide = rows.droplevel(["method", "curve"]).dropna(axis=1, how="all")
        if ("random", curve) in mean_curves.index.droplevel("fraction"):
            wide["random"] = mean_curves.loc[("random", curve), "random"]
        write_text(out_dir / "plots" / f"{curve}_{method}.csv", wide.reset_index().to_csv(index=False, float_format="%.5f"))


def headline(summary: pd.DataFrame, localisation: pd.DataFrame, extra: dict) -> dict:
    """The dozen numbers a reader compares between runs.

    Per setting and curve, for the contrastive corpus similarity: COCOA's AUC and the
    best other target's (random included), each averaged over the attribution methods
    (insertion: higher is better, deletion: lower); the probe's test accuracy, the
    caption-matching accuracy, and the pointing game of COCOA and of the corpus-only
    target on crowded scenes with Integrated Gradients.
    """
    rows = summary[summary.metric == PLOTTED[1]]
    by_target = rows.groupby(["setting", "curve", "target"], sort=False)["mean"].mean()
    out: dict = {}
    for (setting, curve), values in by_target.groupby(level=["setting", "curve"], sort=False):
        values = values.droplevel(["setting", "curve"])
        others = values.drop("cocoa")
        best = others.max() if curve == "insertion" else others.min()
        out[f"{setting}_{curve}"] = {"cocoa": round(float(values["cocoa"]), 4), "best_other": round(float(best), 4)}
    crowded = localisation[(localisation.scenes == "crowded") & (localisation.method == "integrated_gradients")]
    pointing = crowded.set_index("target")["pointing_game"]
    out["probe_test_accuracy"] = round(float(extra["probe_test_accuracy"]), 4)
    out["caption_accuracy"] = round(float(extra["zero_shot_accuracy"]), 4)
    out["crowded_pointing_game"] = {t: round(float(pointing[t]), 4) for t in ("cocoa", "corpus") if t in pointing}
    return out
