"""Evaluating the concepts study's variants: accuracy, latent ordering, TCAV per outcome interval.

On the test split: R^2, MAE and Kendall's tau of the predictions
(:func:`lib.eval.metrics.regression_metrics`) and the ordering of the latent
space (:func:`lib.eval.ordering.latent_ordering`). Concept sets are tiles
dominated by one land-cover class; on a generated city the generator's weights
say how each class truly moves the outcome, so the rank agreement of concept
sensitivity with those weights checks the explanation.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from lib.data.splits import Split
from lib.data.tiles import TileData
from lib.eval.metrics import regression_metrics
from lib.eval.ordering import latent_ordering
from lib.explain.tcav import make_concept, random_concepts, tcav_by_interval
from lib.io import write_json, write_text
from lib.runtime import runtime
from lib.studies.concepts.model import VARIANT_LABELS, TrainedModel
from lib.studies.concepts.params import ConceptsEvalParams


def evaluate(trained: TrainedModel, data: TileData, split: Split, cfg: ConceptsEvalParams) -> dict[str, float]:
    """Test-split metrics of one variant: :func:`regression_metrics` (MAE in the outcome's
    units) and :func:`latent_ordering` of its embeddings, plus its validation R^2."""
    rt = runtime(cfg.device)
    bs = cfg.inference_batch_size
    test_images = data.images[torch.from_numpy(split.test)]
    out = regression_metrics(data.outcome[split.test], trained.predict(test_images, rt, bs))
    out |= latent_ordering(
        trained.embed(data.images[torch.from_numpy(split.fit)], rt, bs), data.outcome[split.fit],
        trained.embed(test_images, rt, bs), data.outcome[split.test], k=cfg.eval.knn_k, seed=cfg.seed,
    )
    return out | {"val_r2": float(trained.meta["best_val_r2"]), "best_epoch": int(trained.meta["best_epoch"])}


def metrics_table(trained: dict[str, TrainedModel], data: TileData, split: Split, cfg: ConceptsEvalParams) -> pd.DataFrame:
    """:func:`evaluate` of every variant, one row each, indexed by variant."""
    return pd.DataFrame({v: evaluate(t, data, split, cfg) for v, t in trained.items()}).T.rename_axis("variant")


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


def concept_tcav(trained: TrainedModel, data: TileData, split: Split, sets: ConceptSets, cfg: ConceptsEvalParams) -> pd.DataFrame:
    """TCAV of every concept in each outcome interval of the test tiles (:func:`lib.explain.tcav.tcav_by_interval`).

    Concept and random sets come from the fit and validation tiles (the same
    sets, by seed, for every variant); the test tiles are split into
    ``n_intervals`` quantile intervals of the true outcome and scored there.
    Returns the tidy table (concept, interval, run, score, magnitude, p_value,
    significant) with the interval edges in ``attrs``.
    """
    rt = runtime(cfg.device)
    t = cfg.tcav
    model = rt.prepare(trained.model).eval()

    def on_device(idx: np.ndarray) -> torch.Tensor:
        return data.images[torch.from_numpy(idx)].to(rt.device)

    concepts = [make_concept(i, name, on_device(idx)) for i, (name, idx) in enumerate(sets.members.items())]
    pool = np.concatenate([split.fit, split.val])
    randoms = random_concepts(on_device(pool), n_runs=t.n_random, set_size=min(t.set_size, len(pool)), seed=cfg.seed)
    return tcav_by_interval(
        model, t.layer, on_device(split.test), data.outcome[split.test], concepts, randoms,
        n_intervals=t.n_intervals, alpha=t.alpha, bonferroni=t.bonferroni, batch_size=cfg.inference_batch_size,
    )


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


# ------------------------------------------------------------------ results
_COUNTS = ("best_epoch", "n_concepts")
HEADLINE = ("r2", "latent_spearman", "knn_r2")  # per variant in metrics.json, with the ground-truth agreement


def _finite(x: float) -> float | None:
    """JSON has no NaN: undefined numbers (e.g. a rank correlation of two concepts) become null."""
    return float(x) if np.isfinite(x) else None


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """A copy without ``attrs`` (pandas cannot compare attrs holding arrays when concatenating)."""
    out = table.copy()
    out.attrs = {}
    return out


def save_results(out_dir: str | os.PathLike, city: str, data: TileData, split: Split, metrics: pd.DataFrame,
                 history: pd.DataFrame, cfg: ConceptsEvalParams, sets: ConceptSets | None = None,
                 tcav: dict[str, pd.DataFrame] | None = None, agreement: pd.DataFrame | None = None) -> None:
    """The city's results under ``out_dir`` (e.g. ``results/concepts/<city>``):

    * ``metrics.json`` - the headline numbers a reader compares between runs: per variant the
      test R^2, the latent ordering (distance Spearman, kNN R^2) and the ground-truth agreement;
    * ``summary.json`` - every metric, the TCAV settings and significant cells (the paper reads it);
    * ``plots/validation_r2.csv`` - the validation R^2 per epoch of both variants, for ``dvc plots``;
    * ``tables/`` - the full tables as CSV.
    """
    out_dir = Path(out_dir)
    summary = {
        "city": city, "outcome": data.outcome_name, "units": data.units,
        "tiles": {"fit": len(split.fit), "validation": len(split.val), "test": len(split.test)},
        "variants": {v: {k: int(x) if k in _COUNTS else _finite(x) for k, x in row.items()}
                     for v, row in metrics.iterrows()},
    }
    write_text(out_dir / "tables" / "metrics.csv", metrics.to_csv(float_format="%.4f"))
    write_text(out_dir / "tables" / "training_history.csv", history.to_csv(index=False, float_format="%.5f"))
    if sets is not None:
        write_text(out_dir / "tables" / "concept_sets.csv", sets.table.to_csv(index=False))
    if tcav is not None:
        runs = pd.concat([_plain(table).assign(variant=v) for v, table in tcav.items()], ignore_index=True)
        write_text(out_dir / "tables" / "tcav_runs.csv", runs.to_csv(index=False, float_format="%.5g"))
        intervals = pd.concat([interval_summary(table).assign(variant=v) for v, table in tcav.items()], ignore_index=True)
        write_text(out_dir / "tables" / "tcav_intervals.csv", intervals.to_csv(index=False, float_format="%.5g"))
        summary["tcav"] = {
            "layer": cfg.tcav.layer, "statistic": cfg.tcav.statistic, "n_random": cfg.tcav.n_random,
            "interval_edges": [float(e) for e in next(iter(tcav.values())).attrs["interval_edges"]],
            "significant": {
                v: {c: {int(i): float(x) for i, x in row.dropna().items()}
                    for c, row in sensitivity_matrix(table, cfg.tcav.statistic).iterrows() if row.notna().any()}
                for v, table in tcav.items()
            },
        }
    if agreement is not None:
        write_text(out_dir / "tables" / "ground_truth_agreement.csv", agreement.to_csv(index=False, float_format="%.4f"))
        headline = agreement[agreement["statistic"] == cfg.tcav.statistic].set_index("variant")
        summary["ground_truth_agreement"] = {
            v: {k: int(x) if k in _COUNTS else _finite(x) for k, x in row.drop("statistic").items()}
            for v, row in headline.iterrows()
        }
    write_json(out_dir / "summary.json", summary)
    headline = {v: {k: _rounded(summary["variants"][v][k]) for k in HEADLINE} for v in summary["variants"]}
    for v, row in summary.get("ground_truth_agreement", {}).items():
        headline[v]["ground_truth_spearman"] = _rounded(row["spearman"])
    write_json(out_dir / "metrics.json", headline)
    curves = history.assign(epoch=history["epoch"] + 1).pivot(index="epoch", columns="variant", values="val_score")
    curves = curves[list(dict.fromkeys(history["variant"]))]  # the variants in their own order
    write_text(out_dir / "plots" / "validation_r2.csv", curves.reset_index().to_csv(index=False, float_format="%.5f"))


def conclusion(metrics: pd.DataFrame, agreement: pd.DataFrame | None, statistic: str) -> str:
    """Sentences on what the numbers show: ordering, accuracy and ground-truth agreement of RNC vs L1."""
    rnc, base = metrics.loc["rnc"], metrics.loc["baseline"]
    wins = [rnc[m] > base[m] for m in ("latent_spearman", "knn_r2")]
    verdict = ("orders the latent space better than" if all(wins) else
               "does not order the latent space better than" if not any(wins) else
               "orders the latent space by one measure better, by the other worse than")
    lines = [
        f"RNC pretraining {verdict} end-to-end L1 training here: "
        f"distance correlation {rnc['latent_spearman']:.3f} vs {base['latent_spearman']:.3f}, "
        f"kNN R^2 {rnc['knn_r2']:.3f} vs {base['knn_r2']:.3f}; "
        f"test R^2 of the predictions {rnc['r2']:.2f} (linear probe) vs {base['r2']:.2f} (L1)."
    ]
    if agreement is not None:
        rows = agreement[agreement["statistic"] == statistic].set_index("variant")
        n = int(rows["n_concepts"].min())
        if rows["spearman"].notna().all():
            lines.append(
                f"Against the generator's true land-cover effects, the concepts' mean TCAV {statistic}s rank with "
                + " and ".join(f"Spearman {rows.loc[v, 'spearman']:.2f} for {VARIANT_LABELS[v]}" for v in rows.index)
                + f" ({n} concepts)."
            )
        else:
            lines.append(f"Only {n} concepts had enough example tiles, too few for a rank agreement with the truth.")
    return " ".join(lines)
