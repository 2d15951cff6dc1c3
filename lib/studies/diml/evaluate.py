"""DIML's evaluation: retrieval of unseen classes, with and without structural re-ranking.

Re-ranking (Zhao et al., Sec. 3.4) re-orders each query's global top K by
structural + w * global similarity (:func:`lib.eval.retrieval.rerank`); the
metrics are those of Musgrave et al. (:mod:`lib.eval.metrics`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib.data.mnist import MnistDataset
from lib.eval import metrics, retrieval
from lib.eval.encode import encode
from lib.explain.structural import StructuralMatch, structural_match, structural_similarity_to
from lib.io import write_json, write_text
from lib.models.backbone import SpatialEmbedding
from lib.runtime import Runtime
from lib.studies.diml.params import DimlEvalParams, Reranking, StructuralParams

VARIANTS = ("baseline", "rerank", "structural")
HEADLINE = ("recall_at_1", "map_at_r")  # per loss and variant in metrics.json


def embed(model: nn.Module, dataset: MnistDataset, rt: Runtime, batch_size: int = 256) -> torch.Tensor:
    """Local embeddings (N, L, D) of a dataset, in order, on the CPU, float32."""
    return encode(model.eval(), dataset.images, batch_size, rt)


def retrieve(local: torch.Tensor, structural: StructuralParams, reranking: Reranking | None,
             queries: torch.Tensor | None = None) -> torch.Tensor:
    """Rankings of all other items (query excluded), re-ranked structurally unless ``reranking`` is None.

    One row per item, or per item of ``queries`` (indices) when given.
    """
    glob = SpatialEmbedding.global_embedding(local)
    if queries is None:
        queries = torch.arange(len(local))
    similarity = glob[queries] @ glob.T
    ranking = retrieval.rank(similarity, depth=len(local) - 1, query_index=queries)
    if reranking is None:
        return ranking

    def head_similarity(head: torch.Tensor) -> torch.Tensor:
        return structural_similarity_to(local[queries], local, head, **ot_settings(structural))

    return retrieval.rerank(ranking, similarity, head_similarity, k=reranking.rerank_k, weight=reranking.rerank_weight)


def evaluate(local: torch.Tensor, labels: torch.Tensor, structural: StructuralParams, reranking: Reranking | None,
             nmi_seed: int | None = None) -> dict[str, float]:
    """Recall@1/2/4/8, R-Precision, MAP@R (query excluded from its gallery) and, with ``nmi_seed``, NMI."""
    labels_np = labels.numpy()
    ranking = retrieve(local, structural, reranking).numpy()
    counts = np.bincount(labels_np)
    out = metrics.retrieval_metrics(labels_np[ranking], labels_np, counts[labels_np] - 1)
    if nmi_seed is not None:
        out["nmi"] = metrics.nmi(SpatialEmbedding.global_embedding(local).numpy(), labels_np, seed=nmi_seed)
    return out


def results_table(local: dict[tuple[str, str], torch.Tensor], labels: torch.Tensor, cfg: DimlEvalParams) -> pd.DataFrame:
    """Metrics of every loss x variant on the test classes (rows), from test embeddings per (loss, objective)."""
    rows = []
    for loss in cfg.losses:
        runs = {
            "baseline": (local.get((loss, "global")), None),
            "rerank": (local.get((loss, "global")), cfg.eval),
            "structural": (local.get((loss, "structural")), cfg.eval),
        }
        for variant, (maps, reranking) in runs.items():
            if maps is not None:
                rows.append({"loss": loss, "variant": variant,
                             **evaluate(maps, labels, cfg.structural, reranking, nmi_seed=cfg.seed)})
    return pd.DataFrame(rows)


def history_frame(meta: dict) -> pd.DataFrame:
    """The training history stored in a model's metadata, one row per epoch."""
    return pd.DataFrame(meta["history"]).assign(model=f"{meta['loss']} / {meta['objective']}")


def save_results(table: pd.DataFrame, history: pd.DataFrame, cfg: DimlEvalParams, out_dir: str | os.PathLike) -> None:
    """The study's results under ``out_dir``:

    * ``metrics.json`` - the headline numbers a reader compares between runs
      (Recall@1 and MAP@R per loss and variant), for ``dvc metrics``;
    * ``summary.json`` - every metric of every variant and the settings that produced them (the paper reads it);
    * ``plots/`` - training curves and the retrieval table as CSV, for ``dvc plots``;
    * ``tables/`` - the full tables as CSV.
    """
    metrics_by_loss = {
        loss: {row.variant: {k: float(v) for k, v in row._asdict().items() if k not in ("Index", "loss", "variant")}
               for row in rows.itertuples()}
        for loss, rows in table.groupby("loss", sort=False)
    }
    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", {
        loss: {variant: {k: round(values[k], 4) for k in HEADLINE} for variant, values in variants.items()}
        for loss, variants in metrics_by_loss.items()
    })
    write_json(out_dir / "summary.json", {
        "retrieval": metrics_by_loss,
        "rerank_k": cfg.eval.rerank_k,
        "epsilon": cfg.structural.epsilon,
        "marginals": cfg.structural.marginals,
        "test_classes": cfg.data.test_classes,
        "best_epochs": {model: int(rows.loc[rows.val_score.idxmax(), "epoch"]) for model, rows in history.groupby("model")},
    })
    write_text(out_dir / "tables" / "retrieval.csv", table.to_csv(index=False, float_format="%.4f"))
    write_text(out_dir / "tables" / "training_history.csv", history.to_csv(index=False, float_format="%.5f"))
    # One column per model, one row per epoch (counted from 1): dvc plots draws a line per column.
    by_epoch = history.assign(epoch=history["epoch"] + 1, model=history["model"].str.replace(" / ", "_"))
    for value, name in (("val_score", "validation_map_at_r"), ("loss", "training_loss")):
        wide = by_epoch.pivot(index="epoch", columns="model", values=value).reset_index()
        write_text(out_dir / "plots" / f"{name}.csv", wide.to_csv(index=False, float_format="%.5f"))
    bars = table.assign(model=table["loss"] + " " + table["variant"])[["model", *HEADLINE]]
    write_text(out_dir / "plots" / "retrieval.csv", bars.to_csv(index=False, float_format="%.4f"))


def rerank_summary(table: pd.DataFrame) -> str:
    """One sentence per loss on what re-ranking and structural training did to Recall@1 and MAP@R."""
    lines = []
    for loss, rows in table.groupby("loss", sort=False):
        by = rows.set_index("variant")
        base = by.loc["baseline"] if "baseline" in by.index else None
        for variant in ("rerank", "structural"):
            if base is None or variant not in by.index:
                continue
            d1 = 100 * (by.loc[variant, "recall_at_1"] - base["recall_at_1"])
            dm = 100 * (by.loc[variant, "map_at_r"] - base["map_at_r"])
            lines.append(
                f"{loss}: {variant} vs baseline changes Recall@1 by {d1:+.1f} points "
                f"({100 * base['recall_at_1']:.1f} -> {100 * by.loc[variant, 'recall_at_1']:.1f}) and MAP@R by {dm:+.1f} points."
            )
    return "\n".join(lines)


def explain_matches(local: torch.Tensor, cfg: DimlEvalParams, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, StructuralMatch]:
    """For ``n`` random queries, their best re-ranked match and the structural matching between them.

    Returns (query indices (n,), match indices (n,), the :class:`StructuralMatch` of the n pairs),
    whose per-location contributions T * S explain each similarity.
    """
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randperm(len(local), generator=generator)[:n]
    matches = retrieve(local, cfg.structural, cfg.eval, queries=queries)[:, 0]
    return queries, matches, structural_match(local[queries], local[matches], **ot_settings(cfg.structural))


def ot_settings(s: StructuralParams) -> dict:
    """The Sinkhorn settings of :mod:`lib.explain.structural`'s functions."""
    return dict(epsilon=s.epsilon, marginals=s.marginals, n_iters=s.n_iters, tol=s.tol)
