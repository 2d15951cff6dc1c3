"""DIML's evaluation: retrieval of unseen classes, with and without structural re-ranking, over seeds.

Re-ranking (Zhao et al., Sec. 3.4) re-orders each query's global top K by
structural + w * global similarity (:func:`lib.eval.retrieval.rerank`); the
metrics are those of Musgrave et al. (:mod:`lib.eval.metrics`).

The variants of each loss (rows of the tables; a model per seed each):

==================== ======================= =====================================
variant              model (objective)       retrieval
==================== ======================= =====================================
baseline             global                  global similarity
rerank               global                  global top K re-ranked
structural_global    structural (the mix)    global similarity
structural           structural (the mix)    global top K re-ranked
structural_pure      structural_pure         global top K re-ranked
structural_uniform   structural_uniform      global top K re-ranked, uniform marginals
bound                classifier (loss        global similarity
                     cross_entropy)
raw_pixels           none (loss ``pixels``)  cosine of the raw pixels
==================== ======================= =====================================

so that ``structural_global - baseline`` is the effect of structural
training alone, ``rerank - baseline`` that of re-ranking alone. Each
variant's metrics are summarised over seeds and queries, and variants are
compared paired by seed, in :mod:`lib.studies.diml.summary`.

What re-ranking the top K can move: it permutes the first K items of each
ranking and leaves the rest in place, so

* Recall@k changes only for k <= K (the set of the first k items is the
  same for k >= K);
* R-Precision, the share of relevant items among the first R_q, cannot
  change while K <= R_q (that set is unchanged);
* MAP@R = (1 / R_q) sum_{i <= R_q} P(i) rel(i) changes only through its terms
  i <= K (for i > K, P(i) counts the same set), so by at most K / R_q.

The depth sweep (``eval.rerank_depths``) re-ranks each query's own global
top K for every K from one structural solve at the largest depth: the head
of depth K is the first K items of the head at the largest depth. (The
reference's sweep instead keeps the first K items of the top-K_max list
re-ranked, which may draw items from beyond the global top K.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib.data.digit_scenes import EmbeddedScenes, part_correspondence
from lib.data.mnist import MnistDataset
from lib.eval import metrics, retrieval
from lib.eval.encode import encode
from lib.explain.structural import (
    Marginals,
    StructuralMatch,
    correspondence_share,
    structural_match,
    structural_similarity_to,
)
from lib.io import write_json, write_text
from lib.models.backbone import SpatialEmbedding
from lib.runtime import Runtime, seed_everything
from lib.studies.diml.params import DimlEvalParams, Reranking, StructuralParams

if TYPE_CHECKING:
    from lib.studies.diml.summary import Summary

#: variant -> (objective of its model, re-ranked?); the module table.
VARIANTS: dict[str, tuple[str, bool]] = {
    "baseline": ("global", False),
    "rerank": ("global", True),
    "structural_global": ("structural", False),
    "structural": ("structural", True),
    "structural_pure": ("structural_pure", True),
    "structural_uniform": ("structural_uniform", True),
    "bound": ("classifier", False),
}
#: The trivial rung's (loss, variant) in the tables: retrieval by the cosine of the raw pixels.
RAW_PIXELS = ("pixels", "raw_pixels")
#: Marginals each objective's model is re-ranked with (its training marginals; global models: DIML's).
RERANK_MARGINALS: dict[str, Marginals] = {"structural_uniform": "uniform"}
#: The variants whose re-ranking depth is swept (the global model and the reference's structural model).
SWEPT = ("rerank", "structural")
#: Paired comparisons, name -> (a, b): the difference a - b per seed.
COMPARISONS: dict[str, tuple[str, str]] = {
    "rerank_vs_baseline": ("rerank", "baseline"),
    "structural_global_vs_baseline": ("structural_global", "baseline"),
    "structural_vs_structural_global": ("structural", "structural_global"),
    "structural_vs_rerank": ("structural", "rerank"),
    "structural_vs_baseline": ("structural", "baseline"),
    "structural_vs_structural_pure": ("structural", "structural_pure"),
    "structural_vs_structural_uniform": ("structural", "structural_uniform"),
}
METRICS = ("recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "r_precision", "map_at_r", "nmi")
HEADLINE = ("recall_at_1", "map_at_r")  # per loss and variant in metrics.json
HEADLINE_VARIANTS = ("baseline", "rerank", "structural")
#: Pairs per batched Sinkhorn when re-ranking: a few large blocks run faster on a shared CPU
#: than many small ones (each tensor operation synchronises the threads); about 0.3 GB.
CHUNK_SIZE = 32768


def embed(model: nn.Module, dataset: MnistDataset, rt: Runtime, batch_size: int = 256) -> torch.Tensor:
    """Local embeddings (N, L, D) of a dataset, in order, on the CPU, float32."""
    return encode(model.eval(), dataset.images, batch_size, rt)


def ot_settings(s: StructuralParams, marginals: Marginals = "cross_correlation") -> dict:
    """The Sinkhorn settings of :mod:`lib.explain.structural`'s functions."""
    return dict(epsilon=s.epsilon, marginals=marginals, n_iters=s.n_iters, tol=s.tol)


def global_ranking(local: torch.Tensor, queries: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ranking (Q, N - 1) of all other items by global cosine, the (Q, N) cosines), one row per query."""
    glob = SpatialEmbedding.global_embedding(local)
    if queries is None:
        queries = torch.arange(len(local))
    similarity = glob[queries] @ glob.T
    return retrieval.rank(similarity, depth=len(local) - 1, query_index=queries), similarity


def head_similarity(local: torch.Tensor, ranking: torch.Tensor, depth: int, structural: StructuralParams,
                    marginals: Marginals = "cross_correlation", queries: torch.Tensor | None = None) -> torch.Tensor:
    """(Q, depth) structural similarities of each query with the first ``depth`` items of its ranking."""
    queries = torch.arange(len(local)) if queries is None else queries
    head = ranking[:, : min(depth, ranking.shape[1])]
    return structural_similarity_to(local[queries], local, head, **ot_settings(structural, marginals),
                                    chunk_size=CHUNK_SIZE)


def reranked(ranking: torch.Tensor, similarity: torch.Tensor, head: torch.Tensor, k: int, weight: float) -> torch.Tensor:
    """``ranking`` with its first k items re-ordered by ``head[:, :k]`` + weight * global similarity (k = 0: as is)."""
    if k == 0:
        return ranking
    return retrieval.rerank(ranking, similarity, lambda h: head[:, : h.shape[1]], k=k, weight=weight)


def retrieve(local: torch.Tensor, structural: StructuralParams, reranking: Reranking | None,
             queries: torch.Tensor | None = None, marginals: Marginals = "cross_correlation") -> torch.Tensor:
    """Rankings of all other items (query excluded), re-ranked structurally unless ``reranking`` is None.

    One row per item, or per item of ``queries`` (indices) when given.
    """
    ranking, similarity = global_ranking(local, queries)
    if reranking is None:
        return ranking
    head = head_similarity(local, ranking, reranking.rerank_k, structural, marginals, queries)
    return reranked(ranking, similarity, head, reranking.rerank_k, reranking.rerank_weight)


def draw_queries(n_items: int, n_queries: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``min(n_queries, n_items)`` distinct queries drawn with ``seed`` (all items if fewer)."""
    if n_queries >= n_items:
        return torch.arange(n_items)
    return torch.randperm(n_items, generator=torch.Generator().manual_seed(seed))[:n_queries].sort().values


def query_metrics(ranking: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Recall@1/2/4/8, R-Precision and MAP@R of each query (Q,), from rankings of all other items, one row per
    query (every item, or the items ``queries``); R_q = the size of the query's class in ``labels`` - 1."""
    labels_np = labels.numpy()
    query_labels = labels_np if queries is None else labels_np[queries.numpy()]
    counts = np.bincount(labels_np)
    return metrics.retrieval_metrics_per_query(labels_np[ranking.numpy()], query_labels, counts[query_labels] - 1)


def _means(per_query: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The means over queries: :func:`lib.eval.metrics.retrieval_metrics`'s numbers, bit for bit."""
    return {name: float(values.mean()) for name, values in per_query.items()}


def ranking_metrics(ranking: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor | None = None) -> dict[str, float]:
    """The means over queries of :func:`query_metrics`."""
    return _means(query_metrics(ranking, labels, queries))


def evaluate(local: torch.Tensor, labels: torch.Tensor, structural: StructuralParams, reranking: Reranking | None,
             nmi_seed: int | None = None, marginals: Marginals = "cross_correlation") -> dict[str, float]:
    """Recall@1/2/4/8, R-Precision, MAP@R (query excluded from its gallery) and, with ``nmi_seed``, NMI."""
    out = ranking_metrics(retrieve(local, structural, reranking, marginals=marginals), labels)
    if nmi_seed is not None:
        out["nmi"] = metrics.nmi(SpatialEmbedding.global_embedding(local).numpy(), labels.numpy(), seed=nmi_seed)
    return out


def depth_query_metrics(local: torch.Tensor, labels: torch.Tensor, structural: StructuralParams,
                        depths: Iterable[int], weight: float, marginals: Marginals = "cross_correlation",
                        queries: torch.Tensor | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Per-query metrics (:func:`query_metrics`) of the global top K re-ranked, for every K of ``depths``
    (0 = the global ranking).

    Every item is a query, or the items ``queries``; the gallery is every other
    item. One structural solve at the largest depth serves every K (module docstring).
    """
    depths = sorted(set(depths))
    ranking, similarity = global_ranking(local, queries)
    head = head_similarity(local, ranking, max(depths), structural, marginals, queries) if max(depths) > 0 else None
    return {k: query_metrics(reranked(ranking, similarity, head, k, weight), labels, queries) for k in depths}


def depth_metrics(local: torch.Tensor, labels: torch.Tensor, structural: StructuralParams, depths: Iterable[int],
                  weight: float, marginals: Marginals = "cross_correlation",
                  queries: torch.Tensor | None = None) -> dict[int, dict[str, float]]:
    """The means over queries of :func:`depth_query_metrics` (same arguments)."""
    return {k: _means(per_query) for k, per_query in
            depth_query_metrics(local, labels, structural, depths, weight, marginals, queries).items()}


def evaluate_seed(local: Mapping[tuple[str, str], torch.Tensor], labels: torch.Tensor, cfg: DimlEvalParams,
                  seed: int, sweep_depths: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One repetition: the metrics of every loss x variant, the depth sweep, and the per-query values behind the
    first, from seed ``seed``'s models.

    ``local`` maps (loss, objective) to the test embeddings of that seed's
    model; variants whose model is absent are left out. The queries are
    ``eval.n_queries`` test images drawn with ``seed`` (the same for every
    variant, so that variants pair up), the gallery every other test image;
    NMI (all test images) has its k-means seeded with ``seed``. Returns (rows
    of seed, loss, variant and :data:`METRICS`; rows of seed, loss, variant,
    depth and the ranking metrics; rows of seed, loss, variant, query (its test
    index) and the ranking metrics of that query, whose means are the first table's). Without
    ``sweep_depths`` the depth sweep is skipped (an empty second table).
    """
    seed_everything(seed)
    rows, sweep, per_query = [], [], []
    queries = draw_queries(len(labels), cfg.eval.n_queries, seed)
    for loss in dict.fromkeys(loss for loss, _ in local):
        by_objective: dict[str, dict[int, dict[str, float]]] = {}
        by_query: dict[str, dict[int, dict[str, np.ndarray]]] = {}
        nmi = {}
        for objective in dict.fromkeys(o for o, _ in VARIANTS.values()):
            maps = local.get((loss, objective))
            if maps is None:
                continue
            depths = {0, cfg.eval.rerank_k}
            if sweep_depths and any(VARIANTS[v][0] == objective for v in SWEPT):
                depths |= set(cfg.eval.rerank_depths)
            marginals = RERANK_MARGINALS.get(objective, "cross_correlation")
            by_query[objective] = depth_query_metrics(maps, labels, cfg.structural, depths, cfg.eval.rerank_weight,
                                                      marginals, queries)
            by_objective[objective] = {k: _means(values) for k, values in by_query[objective].items()}
            nmi[objective] = metrics.nmi(SpatialEmbedding.global_embedding(maps).numpy(), labels.numpy(), seed=seed)
        for variant, (objective, is_reranked) in VARIANTS.items():
            if objective not in by_objective:
                continue
            k = cfg.eval.rerank_k if is_reranked else 0
            rows.append({"seed": seed, "loss": loss, "variant": variant, **by_objective[objective][k],
                         "nmi": nmi[objective]})
            per_query.append(pd.DataFrame({"seed": seed, "loss": loss, "variant": variant, "query": queries.numpy(),
                                           **by_query[objective][k]}))
        for variant in SWEPT:
            objective = VARIANTS[variant][0]
            if sweep_depths and objective in by_objective:
                for k in cfg.eval.rerank_depths:
                    sweep.append({"seed": seed, "loss": loss, "variant": variant, "depth": k, **by_objective[objective][k]})
    return pd.DataFrame(rows), pd.DataFrame(sweep), pd.concat(per_query, ignore_index=True) if per_query else pd.DataFrame()


def raw_pixel_seed(images: torch.Tensor, labels: torch.Tensor, cfg: DimlEvalParams, seed: int
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trivial rung of one repetition: the queries of :func:`evaluate_seed` (drawn with ``seed``) ranked by
    the cosine of their raw pixels ``images`` (N, 1, H, W) in [0, 1] (:func:`lib.eval.retrieval.raw_cosine_ranking`). Returns (one row of
    :data:`METRICS` as loss, variant :data:`RAW_PIXELS`; its per-query values), the shapes of
    :func:`evaluate_seed`'s first and third tables."""
    queries = draw_queries(len(labels), cfg.eval.n_queries, seed)
    per_query = query_metrics(retrieval.raw_cosine_ranking(images, queries), labels, queries)
    flat = images.reshape(len(images), -1).numpy()
    nmi = metrics.nmi(flat / np.linalg.norm(flat, axis=1, keepdims=True), labels.numpy(), seed=seed)
    loss, variant = RAW_PIXELS
    row = pd.DataFrame([{"seed": seed, "loss": loss, "variant": variant, **_means(per_query), "nmi": nmi}])
    return row, pd.DataFrame({"seed": seed, "loss": loss, "variant": variant, "query": queries.numpy(), **per_query})


def positive_control(local_first: torch.Tensor, local_second: torch.Tensor, digits: np.ndarray,
                     first: EmbeddedScenes, second: EmbeddedScenes, cfg: DimlEvalParams,
                     marginals: Marginals = "cross_correlation") -> pd.DataFrame:
    """The structural explanation's positive control: pairs of scenes of the same digit in two poses, whose
    corresponding cells are known (:func:`lib.data.digit_scenes.part_correspondence`).

    Per pair, the share of the structural plan's mass on the true correspondences
    (:func:`lib.explain.structural.correspondence_share`), and two chance levels: the
    uniform plan's share, and that of the independent plan a b^T with the plan's
    own marginals (the mass on the digit's cells, matched without regard to which
    part is where). Rows: pair, share, uniform, independent.
    """
    match = structural_match(local_first, local_second, **ot_settings(cfg.structural, marginals))
    truth = part_correspondence(digits, first, second, cfg.model.grid)
    independent = match.plan.sum(dim=2, keepdim=True) * match.plan.sum(dim=1, keepdim=True)
    return pd.DataFrame({
        "pair": np.arange(len(truth)),
        "share": correspondence_share(match.plan, truth).numpy(),
        "uniform": correspondence_share(torch.ones_like(match.plan), truth).numpy(),
        "independent": correspondence_share(independent, truth).numpy(),
    })


def run_positive_control(cfg: DimlEvalParams, seed: int, rt: Runtime, data_dir: str | os.PathLike = "data",
                         models: str | os.PathLike = "models/diml") -> pd.DataFrame:
    """:func:`positive_control` for seed ``seed``: ``scenes.n_control`` test digits drawn with the seed, each
    placed twice (the scenes' control streams of the seed), matched by seed ``seed``'s structural model of the
    embedded set (the first loss of ``scenes.losses``); rows with a seed column."""
    from lib.data.mnist import load_mnist5k, unseen_class_split
    from lib.studies.diml.train import (
        embedded_scenes,
        load_model,
        model_dir,
        model_path,
        scene_dataset,
    )

    images, labels = load_mnist5k(data_dir)
    _, test_idx = unseen_class_split(labels, cfg.data.train_classes, cfg.data.test_classes)
    chosen = test_idx[draw_queries(len(test_idx), cfg.scenes.n_control, seed).numpy()]
    digits = np.asarray(images[chosen], np.float32) / 255.0
    first = embedded_scenes(digits, labels[chosen], cfg.scenes, seed, "control")
    second = embedded_scenes(digits, labels[chosen], cfg.scenes, seed, "control_second")
    model, _ = load_model(model_path(model_dir(cfg.scenes.losses[0], "structural", "scenes", models), seed))
    model = rt.prepare(model)
    local = [embed(model, scene_dataset(s.images, labels[chosen]), rt, cfg.inference_batch_size) for s in (first, second)]
    return positive_control(*local, digits, first, second, cfg).assign(seed=seed)


def class_sizes(labels: torch.Tensor) -> dict[str, int]:
    """R_q = class size - 1 over the test classes: smallest and largest."""
    counts = np.bincount(labels.numpy())
    r = counts[counts > 0] - 1
    return {"r_min": int(r.min()), "r_max": int(r.max())}


def history_frame(meta: dict) -> pd.DataFrame:
    """The training history stored in a model's metadata, one row per epoch (``set``: the data it trained on)."""
    on = meta.get("dataset", "mnist5k")
    name = f"{meta['loss']} / {meta['objective']}"
    return pd.DataFrame(meta["history"]).assign(
        model=name if on == "mnist5k" else f"{on}: {name}", loss_name=meta["loss"], objective=meta["objective"],
        seed=meta.get("seed", 0), set=on,
    )


def training_records(metas: Iterable[Mapping]) -> pd.DataFrame:
    """One row per training: set, model, seed, the epoch validation selected, the last epoch trained, the
    maximum allowed, and whether it stopped at its validation plateau (before the maximum)."""
    return pd.DataFrame([{
        "set": m.get("dataset", "mnist5k"), "model": f"{m['loss']}_{m['objective']}", "seed": m.get("seed", 0),
        "selected_epoch": m["best_epoch"], "last_epoch": m.get("last_epoch", len(m["history"]) - 1),
        "max_epochs": m["params"]["train"]["epochs"], "stopped_at_plateau": bool(m.get("stopped_at_plateau", False)),
    } for m in metas])


def learned_betas(metas: Iterable[Mapping]) -> dict[str, list[list[float]]]:
    """{"<loss>_<objective>": per seed, the margin loss's learned per-class beta} from the models' metadata."""
    out: dict[str, list[list[float]]] = {}
    for meta in sorted(metas, key=lambda m: m.get("seed", 0)):
        if meta.get("beta"):
            out.setdefault(f"{meta['loss']}_{meta['objective']}", []).append(meta["beta"])
    return out


def save_results(summary: Summary, table: pd.DataFrame, sweep: pd.DataFrame, history: pd.DataFrame,
                 out_dir: str | os.PathLike) -> None:
    """The study's results under ``out_dir``:

    * ``metrics.json`` - the headline numbers a reader compares between runs
      (means over seeds of Recall@1 and MAP@R per loss for baseline, rerank and
      structural), for ``dvc metrics``;
    * ``summary.json`` - the :class:`~lib.studies.diml.summary.Summary` (the paper reads it);
    * ``plots/`` - training curves (means over seeds) and the retrieval means as CSV, for ``dvc plots``;
    * ``tables/`` - the per-seed tables as CSV.
    """
    history = history.reset_index(drop=True)
    means = {loss: {v: {m: cell.mean for m, cell in cells.items()} for v, cells in variants.items()}
             for loss, variants in summary.retrieval.items()}
    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", {
        loss: {v: {m: round(means[loss][v][m], 4) for m in HEADLINE} for v in HEADLINE_VARIANTS if v in means[loss]}
        for loss in means
    })
    write_json(out_dir / "summary.json", summary.model_dump(mode="json"))
    write_text(out_dir / "tables" / "retrieval.csv", table.to_csv(index=False, float_format="%.4f"))
    write_text(out_dir / "tables" / "rerank_depth.csv", sweep.to_csv(index=False, float_format="%.4f"))
    write_text(out_dir / "tables" / "training_history.csv", history.to_csv(index=False, float_format="%.5f"))
    # One column per model, one row per epoch (counted from 1), the mean over seeds: dvc plots draws a line per column.
    by_epoch = history.assign(epoch=history["epoch"] + 1,
                              model=history["model"].str.replace(" / ", "_").str.replace(": ", "_"))
    for value, name in (("val_score", "validation_map_at_r"), ("loss", "training_loss")):
        wide = by_epoch.pivot_table(index="epoch", columns="model", values=value, aggfunc="mean", sort=False).reset_index()
        write_text(out_dir / "plots" / f"{name}.csv", wide.to_csv(index=False, float_format="%.5f"))
    bars = pd.DataFrame([{"model": f"{loss} {v}", **{m: means[loss][v][m] for m in HEADLINE}}
                         for loss in means for v in means[loss]])
    write_text(out_dir / "plots" / "retrieval.csv", bars.to_csv(index=False, float_format="%.4f"))


def explain_matches(local: torch.Tensor, cfg: DimlEvalParams, n: int, seed: int,
                    marginals: Marginals = "cross_correlation") -> tuple[torch.Tensor, torch.Tensor, StructuralMatch]:
    """For ``n`` random queries, their best re-ranked match and the structural matching between them.

    Returns (query indices (n,), match indices (n,), the :class:`StructuralMatch` of the n pairs),
    whose per-location contributions T * S explain each similarity.
    """
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randperm(len(local), generator=generator)[:n]
    matches = retrieve(local, cfg.structural, cfg.eval, queries=queries, marginals=marginals)[:, 0]
    return queries, matches, structural_match(local[queries], local[matches], **ot_settings(cfg.structural, marginals))
