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


def save_results(
    out_dir: str | os.PathLike,
    cfg: CocoaEvalParams,
    aucs: pd.DataFrame,
    localisation: pd.DataFrame,
    augmentation: pd.DataFrame,
    extra: dict[str, float],
) -> None:
    """metrics.json (nested means and 95% half-widths, plus ``extra`` numbers) and the tables as CSV."""
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
    write_json(out_dir / "metrics.json", {
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
