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

from lib.eval.claims import Claim, Ladder, LadderRow, verdict_of
from lib.eval.claims import TrainingRecord as SharedTrainingRecord
from lib.eval.intervals import (
    ComparisonCell,
    IntervalCell,
    comparison_cell,
    holm,
    interval_cell,
)
from lib.studies.diml.evaluate import (
    COMPARISONS,
    HEADLINE,
    METRICS,
    RAW_PIXELS,
    class_sizes,
)
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
    "ladders": "the ladders' comparisons (method and re-ranking against raw pixels and against the global baseline, "
               "both sets, Recall@1 and MAP@R) and the positive control against its two chance levels",
}
#: The ladders' rows: name -> (rung, (loss or None for the set's first loss, variant)).
LADDER_ROWS: dict[str, tuple[str, tuple[str | None, str]]] = {
    "raw pixels": ("trivial", RAW_PIXELS),
    "structural": ("method", (None, "structural")),
    "global baseline": ("variant", (None, "baseline")),
    "re-ranked baseline": ("variant", (None, "rerank")),
    "structural, global retrieval": ("variant", (None, "structural_global")),
    "classifier (bound)": ("bound", ("cross_entropy", "bound")),
}
#: The paired comparisons of every ladder, (a, b) as row names.
LADDER_COMPARISONS = (("structural", "raw pixels"), ("structural", "global baseline"),
                      ("re-ranked baseline", "raw pixels"), ("re-ranked baseline", "global baseline"))
SETS = {"mnist5k": "MNIST-5k", "scenes": "embedded scenes"}
CEILING = "clean, centred digits"


class TrainingRecord(SharedTrainingRecord):
    """One training: the set it trained on, its model (``<loss>_<objective>``), seed, the epoch validation
    selected, the last epoch trained (from 0), the maximum number of epochs, and whether it stopped at the
    validation plateau (fit's patience) before that maximum."""

    set: str


class PositiveControl(BaseModel):
    """The structural explanation's positive control (:func:`lib.studies.diml.evaluate.positive_control`):
    the share of transport mass on the true correspondences, the uniform plan's and the independent plan's
    shares (cells over seeds and pairs), the paired comparisons (Holm in the ``ladders`` family)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    n_pairs: int
    share: IntervalCell
    uniform: IntervalCell
    independent: IntervalCell
    comparisons: list[ComparisonCell]


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
    scenes_retrieval: dict[str, dict[str, dict[str, IntervalCell]]]
    scenes: dict[str, float | int | list[float]]
    trainings: list[TrainingRecord]
    n_at_plateau: int
    control: PositiveControl | None
    ladders: list[Ladder]
    claims: list[Claim]


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


def _seed_values(table: pd.DataFrame, loss: str, variant: str, metric: str) -> pd.Series:
    rows = _by_seed(table[(table["loss"] == loss) & (table["variant"] == variant)])
    return rows.set_index("seed")[metric]


def ladders(tables: Mapping[str, pd.DataFrame], cells: Mapping[str, dict], losses: Mapping[str, str],
            metric_names: Sequence[str] = HEADLINE) -> tuple[list[Ladder], list[ComparisonCell]]:
    """One ladder per set and metric (rows :data:`LADDER_ROWS`, the scenes' ceiling the easy set's method on the
    same test digits, clean and centred) with the paired comparisons :data:`LADDER_COMPARISONS`, not yet
    Holm-corrected; and those comparisons in order (for :func:`holm`)."""
    out, compared = [], []
    for set_name, table in tables.items():
        for metric in metric_names:
            rows, values = [], {}
            for name, (rung, (loss, variant)) in LADDER_ROWS.items():
                loss = loss or losses[set_name]
                cell = cells[set_name].get(loss, {}).get(variant, {}).get(metric)
                if cell is not None:
                    rows.append(LadderRow(name=name, rung=rung, cell=cell))
                    values[name] = _seed_values(table, loss, variant, metric)
            if set_name == "scenes" and "mnist5k" in cells:
                ceiling = cells["mnist5k"].get(losses["mnist5k"], {}).get("structural", {}).get(metric)
                if ceiling is not None:
                    rows.append(LadderRow(name=CEILING, rung="ceiling", cell=ceiling,
                                          note="the easy set's method on the same test digits, clean and centred: "
                                               "what a perfect localiser would give it"))
            pairs = []
            for a, b in LADDER_COMPARISONS:
                if a in values and b in values:
                    if list(values[a].index) != list(values[b].index):
                        raise ValueError(f"{set_name}: {a} and {b} were evaluated on different seeds")
                    pairs.append(comparison_cell(values[a].to_numpy(), values[b].to_numpy(), a=a, b=b, bounds=BOUNDS))
            compared.extend(pairs)
            out.append(Ladder(title=f"{SETS[set_name]}: {metric}", metric=metric, rows=rows, comparisons=pairs))
    return out, compared


def control_summary(control: pd.DataFrame, model: str) -> PositiveControl:
    """The positive control's cells over seeds and pairs, and share - uniform, share - independent paired by seed
    (each seed's mean over its pairs)."""
    by_seed = {seed: rows.sort_values("pair") for seed, rows in control.groupby("seed", sort=True)}
    cells = {c: interval_cell([rows[c].mean() for rows in by_seed.values()], bounds=BOUNDS,
                              items=[rows[c].to_numpy(np.float64) for rows in by_seed.values()])
             for c in ("share", "uniform", "independent")}
    comparisons = [comparison_cell(cells["share"].values, cells[c].values, a="share", b=c, bounds=BOUNDS)
                   for c in ("uniform", "independent")]
    return PositiveControl(model=model, n_pairs=int(control["pair"].nunique()), comparisons=comparisons, **cells)


def _ladder_comparison(ladder_list: Sequence[Ladder], title: str, a: str, b: str) -> ComparisonCell | None:
    for ladder in ladder_list:
        if ladder.title == title:
            return next((c for c in ladder.comparisons if (c.a, c.b) == (a, b)), None)
    return None


def diml_claims(ladder_list: Sequence[Ladder], comparisons: Mapping, loss: str) -> list[Claim]:
    """DIML's claims against the evidence here: structural matching (training and re-ranking) and re-ranking
    alone beat the global baseline (on the embedded set, where one pooled vector is expected to fail, and on
    MNIST-5k), and cross-correlation marginals beat uniform ones."""
    original = "DIML's Table 1: gains over the global baseline for every loss (CUB-200-2011, Cars196, SOP)"
    printed = {"recall_at_1": "Recall@1", "map_at_r": "MAP@R"}
    out = []
    for set_name in ("scenes", "mnist5k"):
        for metric in HEADLINE:
            title = f"{SETS[set_name]}: {metric}"
            for a, words in (("structural", "structural training and re-ranking"), ("re-ranked baseline", "structural re-ranking alone")):
                c = _ladder_comparison(ladder_list, title, a, "global baseline")
                if c is None:
                    continue
                verdict = verdict_of(c, +1)
                reason = "" if verdict == "reproduced" else (
                    "not supported by the paired comparison after Holm's correction" if not c.supported
                    else "supported in the other direction")
                out.append(Claim(study="diml", claim=f"{words} beats the global baseline in {printed.get(metric, metric)} "
                                                             f"({SETS[set_name]})",
                                 original=original, evidence=c, verdict=verdict, reason=reason,
                                 where="the ladders of the DIML section"))
    uniform = comparisons.get(loss, {}).get("structural_vs_structural_uniform", {}).get("recall_at_1")
    verdict = verdict_of(uniform, +1)
    out.append(Claim(
        study="diml", claim="cross-correlation marginals beat uniform ones in Recall@1 (MNIST-5k)",
        original="DIML's ablation reports lower Recall@1 with uniform marginals than with its cross-correlation "
                 "marginals (CUB-200-2011)",
        evidence=uniform, verdict=verdict,
        reason="" if verdict == "reproduced" else ("the ablation was not trained (budget)" if uniform is None else
                                                    "not supported by the paired comparison after Holm's correction"
                                                    if not uniform.supported else "supported in the other direction"),
        where="the table of paired comparisons"))
    return out


def build_summary(table: pd.DataFrame, sweep: pd.DataFrame, history: pd.DataFrame, labels: torch.Tensor,
                  cfg: DimlEvalParams, betas: Mapping[str, list] | None = None,
                  per_query: pd.DataFrame | None = None, scenes_table: pd.DataFrame | None = None,
                  scenes_per_query: pd.DataFrame | None = None, trainings: pd.DataFrame | None = None,
                  control: pd.DataFrame | None = None) -> Summary:
    """The study's summary from :func:`lib.studies.diml.evaluate.evaluate_seed`'s tables of every seed
    (``table``, ``sweep`` and, for the nested bootstrap, ``per_query``; the raw-pixel and bound rows
    included), the training ``history`` (:func:`lib.studies.diml.evaluate.history_frame`), the test labels,
    the learned betas; the embedded set's table and per-query values, the training records
    (:func:`lib.studies.diml.evaluate.training_records`) and the positive control's rows (with a seed column)."""
    comparisons = variant_comparisons(table)
    vs_unranked = depth_comparisons(sweep) if len(sweep) else {}
    retrieval = metric_cells(table, ("loss", "variant"), METRICS, per_query)
    scenes_retrieval = ({} if scenes_table is None else
                        metric_cells(scenes_table, ("loss", "variant"), METRICS, scenes_per_query))
    tables = {"mnist5k": table} | ({} if scenes_table is None else {"scenes": scenes_table})
    losses = {"mnist5k": cfg.losses[0], "scenes": cfg.scenes.losses[0]}
    ladder_list, ladder_cells = ladders(tables, {"mnist5k": retrieval, "scenes": scenes_retrieval}, losses)
    control_cell = None if control is None or control.empty else control_summary(
        control, f"{cfg.scenes.losses[0]}_structural trained on the embedded scenes")
    family = ladder_cells + ([] if control_cell is None else control_cell.comparisons)
    corrected = iter(holm(family))
    ladder_list = [ladder.model_copy(update={"comparisons": [next(corrected) for _ in ladder.comparisons]})
                   for ladder in ladder_list]
    if control_cell is not None:
        control_cell = control_cell.model_copy(update={"comparisons": [next(corrected) for _ in control_cell.comparisons]})
    families = {
        "variants": _holm_in_place(comparisons, 3, lambda path: path[-1] in HEADLINE),
        "variants_other_metrics": _holm_in_place(comparisons, 3, lambda path: path[-1] not in HEADLINE),
        "depth_sweep": _holm_in_place(vs_unranked, 4, lambda path: True),
        "ladders": len(family),
    }
    records = [] if trainings is None else [TrainingRecord(**r) for r in trainings.to_dict("records")]
    history = history.reset_index(drop=True)
    best = (history.loc[history.groupby(["model", "seed"]).val_score.idxmax()]
            .sort_values(["model", "seed"]).groupby("model", sort=False)["epoch"].apply(list))
    return Summary(
        seeds=sorted(int(s) for s in table["seed"].unique()),
        retrieval=retrieval,
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
        scenes_retrieval=scenes_retrieval,
        scenes={"size": cfg.scenes.size, "scale": list(cfg.scenes.scale), "degrees": cfg.scenes.degrees,
                "n_strokes": cfg.scenes.n_strokes, "grid": cfg.model.grid},
        trainings=records,
        n_at_plateau=sum(r.stopped_at_plateau for r in records),
        control=control_cell,
        ladders=ladder_list,
        claims=diml_claims(ladder_list, comparisons, cfg.losses[0]),
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


def ladder_lines(summary: Summary) -> str:
    """The ladders as text: per ladder its rows (rung, name, cell in percent) and its comparisons in points; then
    the positive control and the plateau count."""
    lines = []
    for ladder in summary.ladders:
        lines.append(ladder.title)
        lines += [f"  {row.rung:8s} {row.name:30s} {row.cell.format(1, 100) if row.cell else row.note}" for row in ladder.rows]
        lines += [f"  {c.a} - {c.b}: {c.format(1, 100)} ({'supported' if c.supported else 'not supported'})"
                  for c in ladder.comparisons]
    if summary.control is not None:
        c = summary.control
        lines.append(f"positive control ({c.n_pairs} pairs per seed): share {c.share.format(3)}, uniform plan "
                     f"{c.uniform.format(3)}, independent plan {c.independent.format(3)}")
        lines += [f"  {d.a} - {d.b}: {d.format(3)} ({'supported' if d.supported else 'not supported'})" for d in c.comparisons]
    lines.append(f"{summary.n_at_plateau} of {len(summary.trainings)} trainings stopped at their validation plateau")
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
