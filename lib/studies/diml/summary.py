"""DIML's ``summary.json``: its schema (:class:`Summary`) and the function that builds it from the per-seed tables.

Every retrieval metric lies in [0, 1]. Recall@k, R-Precision and MAP@R are
means over the queries, so their interval is the nested bootstrap over seeds
and queries (:func:`lib.eval.intervals.interval_cell` with ``items``, the
per-query values of :func:`lib.studies.diml.evaluate.evaluate_seed`); NMI, one
number per seed, and the depth sweep's cells get the percentile bootstrap over
seeds. Variants are compared paired by seed (the paired t-test, and the
bootstrap interval of the mean difference, which stays within +-1), and the
comparisons form three Holm families (:data:`FAMILIES`), each corrected as a
whole: ``supported`` is the Holm-adjusted p below 0.05.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict

from lib.eval.intervals import ComparisonCell, IntervalCell, comparison_cell, holm, interval_cell
from lib.studies.diml.evaluate import COMPARISONS, HEADLINE, METRICS, class_sizes
from lib.studies.diml.params import DimlEvalParams

#: Every metric is a rate in [0, 1].
BOUNDS = (0.0, 1.0)
#: The metrics of the depth sweep's paired comparisons (each depth K against K = 0).
SWEEP_COMPARED = ("recall_at_1", "map_at_r")
#: The Holm families: the paper's claims about the variants (their headline metrics), the same comparisons on
#: the other metrics, and the depth sweep against the unranked retrieval.
FAMILIES = {
    "variants": "every named comparison of variants on Recall@1 and MAP@R, every loss",
    "variants_other_metrics": "the same comparisons on Recall@2/4/8, R-Precision and NMI",
    "depth_sweep": "every re-ranking depth K > 0 against K = 0, Recall@1 and MAP@R, every loss and swept variant",
}


class DepthSweep(BaseModel):
    """The re-ranking depth sweep: metric cells per loss, variant, depth K and metric; each K > 0 against K = 0."""

    model_config = ConfigDict(extra="forbid")

    depths: list[int]
    metrics: dict[str, dict[str, dict[str, dict[str, IntervalCell]]]]
    vs_unranked: dict[str, dict[str, dict[str, dict[str, ComparisonCell]]]]


class Summary(BaseModel):
    """``results/diml/summary.json``, read by ``paper/sections/diml.typ`` and validated by the pipeline test.

    ``retrieval[loss][variant][metric]``: the metric over seeds;
    ``comparisons[loss][name][metric]``: the paired comparison ``name`` of
    :data:`lib.studies.diml.evaluate.COMPARISONS`; ``holm_families``: the size
    of each Holm family (:data:`FAMILIES`); ``best_epochs[model]``: the epoch
    (from 0) validation kept, per seed; ``beta``: the margin loss's learned
    per-class boundaries per model and seed.
    """

    model_config = ConfigDict(extra="forbid")

    seeds: list[int]
    retrieval: dict[str, dict[str, dict[str, IntervalCell]]]
    comparisons: dict[str, dict[str, dict[str, ComparisonCell]]]
    holm_families: dict[str, int]
    depth_sweep: DepthSweep
    r_min: int
    r_max: int
    n_test: int
    n_queries: int
    rerank_k: int
    rerank_weight: float
    epsilon: float
    global_weight: float
    test_classes: list[int]
    objectives: list[str]
    ablation: dict[str, list[str]]
    epochs: int
    best_epochs: dict[str, list[int]]
    beta: dict[str, list[list[float]]]


def _by_seed(rows: pd.DataFrame) -> pd.DataFrame:
    if rows["seed"].duplicated().any():
        raise ValueError(f"several rows of one seed in {rows.iloc[0].to_dict()}")
    return rows.sort_values("seed", kind="stable")


def metric_cells(table: pd.DataFrame, by: Sequence[str], columns: Sequence[str],
                 per_query: pd.DataFrame | None = None) -> dict:
    """Nested ``{by[0]: ... {by[-1]: {metric: IntervalCell}}}`` over the seeds of ``table``, in seed order;
    a metric with per-query values in ``per_query`` (same ``by`` keys, a ``seed`` column) gets the nested
    bootstrap over seeds and queries."""
    queries = {} if per_query is None else dict(list(per_query.groupby([*by, "seed"], sort=False)))
    out: dict = {}
    for keys, rows in table.groupby(list(by), sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows = _by_seed(rows)
        node = out
        for key in keys[:-1]:
            node = node.setdefault(str(key), {})
        cells = {}
        for c in (c for c in columns if c in rows):
            items = None
            if per_query is not None and c in per_query:
                items = [queries[(*keys, seed)][c].to_numpy(np.float64) for seed in rows["seed"]]
            cells[c] = interval_cell(rows[c].to_numpy(), bounds=BOUNDS, items=items)
        node[str(keys[-1])] = cells
    return out


def variant_comparisons(table: pd.DataFrame, columns: Sequence[str] = METRICS) -> dict:
    """``{loss: {name: {metric: ComparisonCell}}}`` for every :data:`COMPARISONS` pair present, paired by seed
    (not yet Holm-corrected)."""
    out: dict = {}
    for loss, rows in table.groupby("loss", sort=False):
        wide = {v: _by_seed(r) for v, r in rows.groupby("variant")}
        for name, (a, b) in COMPARISONS.items():
            if a in wide and b in wide:
                if wide[a]["seed"].tolist() != wide[b]["seed"].tolist():
                    raise ValueError(f"{loss}: {a} and {b} were evaluated on different seeds")
                out.setdefault(loss, {})[name] = {
                    c: comparison_cell(wide[a][c].to_numpy(), wide[b][c].to_numpy(), a=a, b=b, bounds=BOUNDS)
                    for c in columns
                }
    return out


def depth_comparisons(sweep: pd.DataFrame, columns: Sequence[str] = SWEEP_COMPARED) -> dict:
    """``{loss: {variant: {K: {metric: ComparisonCell}}}}``: depth K against K = 0, paired by seed (K > 0)."""
    out: dict = {}
    for (loss, variant), rows in sweep.groupby(["loss", "variant"], sort=False):
        unranked = _by_seed(rows[rows.depth == 0])
        if unranked.empty:
            continue
        for k, at_k in rows[rows.depth > 0].groupby("depth"):
            at_k = _by_seed(at_k)
            out.setdefault(loss, {}).setdefault(variant, {})[str(k)] = {
                c: comparison_cell(at_k[c].to_numpy(), unranked[c].to_numpy(), a=f"K={k}", b="K=0", bounds=BOUNDS)
                for c in columns
            }
    return out


def _leaves(tree: dict, depth: int, prefix: tuple = ()) -> list[tuple[tuple, ComparisonCell]]:
    if depth == 0:
        return [(prefix, tree)]
    return [leaf for key, sub in tree.items() for leaf in _leaves(sub, depth - 1, (*prefix, key))]


def _holm_in_place(tree: dict, depth: int, keep) -> int:
    """Holm-correct the leaves (at ``depth``) of ``tree`` whose path ``keep`` accepts, as one family; their size."""
    leaves = [(path, cell) for path, cell in _leaves(tree, depth) if keep(path)]
    for (path, _), corrected in zip(leaves, holm([cell for _, cell in leaves]), strict=True):
        node = tree
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = corrected
    return len(leaves)


def build_summary(table: pd.DataFrame, sweep: pd.DataFrame, history: pd.DataFrame, labels: torch.Tensor,
                  cfg: DimlEvalParams, betas: Mapping[str, list] | None = None,
                  per_query: pd.DataFrame | None = None) -> Summary:
    """The study's summary from :func:`lib.studies.diml.evaluate.evaluate_seed`'s tables of every seed
    (``table``, ``sweep`` and, for the nested bootstrap, ``per_query``), the training ``history``
    (:func:`lib.studies.diml.evaluate.history_frame`), the test labels and the learned betas."""
    comparisons = variant_comparisons(table)
    vs_unranked = depth_comparisons(sweep) if len(sweep) else {}
    families = {
        "variants": _holm_in_place(comparisons, 3, lambda path: path[-1] in HEADLINE),
        "variants_other_metrics": _holm_in_place(comparisons, 3, lambda path: path[-1] not in HEADLINE),
        "depth_sweep": _holm_in_place(vs_unranked, 4, lambda path: True),
    }
    history = history.reset_index(drop=True)
    best = (history.loc[history.groupby(["model", "seed"]).val_score.idxmax()]
            .sort_values(["model", "seed"]).groupby("model", sort=False)["epoch"].apply(list))
    return Summary(
        seeds=sorted(int(s) for s in table["seed"].unique()),
        retrieval=metric_cells(table, ("loss", "variant"), METRICS, per_query),
        comparisons=comparisons,
        holm_families=families,
        depth_sweep=DepthSweep(
            depths=list(cfg.eval.rerank_depths),
            metrics=metric_cells(sweep, ("loss", "variant", "depth"), [c for c in METRICS if c in sweep]) if len(sweep) else {},
            vs_unranked=vs_unranked,
        ),
        **class_sizes(labels),
        n_test=len(labels),
        n_queries=min(cfg.eval.n_queries, len(labels)),
        rerank_k=cfg.eval.rerank_k,
        rerank_weight=cfg.eval.rerank_weight,
        epsilon=cfg.structural.epsilon,
        global_weight=cfg.structural.global_weight,
        test_classes=cfg.data.test_classes,
        objectives=list(cfg.objectives),
        ablation=cfg.ablation.model_dump(),
        epochs=int(history["epoch"].max()) + 1,
        best_epochs={model: [int(e) for e in epochs] for model, epochs in best.items()},
        beta=dict(betas or {}),
    )


def comparison_lines(summary: Summary, metric_names: Sequence[str] = HEADLINE) -> str:
    """One line per loss and comparison: the paired difference in points, its 95 % interval, and whether it is
    supported after Holm's correction."""
    lines = []
    for loss, named in summary.comparisons.items():
        for cells in named.values():
            first = next(iter(cells.values()))
            parts = [f"{m} {cells[m].format(digits=1, scale=100)} "
                     f"({'supported' if cells[m].supported else 'not supported'})" for m in metric_names]
            lines.append(f"{loss}: {first.a} - {first.b}: " + ", ".join(parts))
    return "\n".join(lines)


def headlines(results: Path) -> list[tuple[str, str, str]]:
    """The front page's rows (what, value, meaning) from ``results/diml/summary.json``: per loss, Recall@1 of
    the baseline, the re-ranked global model and the structural model, and the whole method against the baseline."""
    summary = Summary.model_validate_json((results / "diml" / "summary.json").read_text(encoding="utf-8"))
    rows = []
    meaning = {"baseline": "global model, global retrieval", "rerank": "global model, top-K re-ranked structurally",
               "structural": "structurally trained model, re-ranked (the method)"}
    for loss, variants in summary.retrieval.items():
        for variant, words in meaning.items():
            if variant in variants:
                rows.append((f"{loss} / {variant}: Recall@1 (%)", variants[variant]["recall_at_1"].format(1, 100),
                             f"unseen digits, {words}"))
        c = summary.comparisons.get(loss, {}).get("structural_vs_baseline", {}).get("recall_at_1")
        if c is not None:
            verdict = ("supported" if c.supported else "not supported") + f" (Holm over {summary.holm_families['variants']})"
            rows.append((f"{loss}: structural - baseline, Recall@1 (points)", c.format(1, 100),
                         f"the whole method against the baseline, paired by seed: {verdict}"))
    return rows
