"""The DIML study: deep metric learning with structural matching, end to end.

Zhao, Wang, Lu, Zhou, "Towards Interpretable Deep Metric Learning with
Structural Matching", ICCV 2021. Two images are compared location by location:
the structural similarity of their feature maps (:mod:`lib.explain.structural`)
is an optimal-transport matching whose per-location contributions explain it.

This module composes the pieces for the compendium's three variants of each
baseline loss (margin loss, multi-similarity loss, from pytorch-metric-learning):

* ``baseline``   - trained and retrieved with the global embedding;
* ``rerank``     - the same model, top-K re-ranked by structural + global similarity;
* ``structural`` - trained with the structural similarity inside the loss,
                   retrieved like ``rerank``.

``python -m lib.diml`` trains one model from a JSON config; ``torchrun`` runs
it data-parallel (:func:`launch` starts it from a notebook).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, samplers
from pytorch_metric_learning.utils import distributed as pml_dist
from torch import nn
from torch.utils.data import DataLoader

from lib import metrics, params, retrieval
from lib.augment import random_affine
from lib.data.mnist import MNIST_MEAN_STD, MnistDataset, load_mnist5k, unseen_class_split, validation_split
from lib.explain.structural import StructuralMatch, structural_match, structural_plan_matrix, structural_similarity_to
from lib.io import load_weights, save_weights, write_json, write_text
from lib.models.backbone import SpatialEmbedding, diml_encoder
from lib.runtime import Runtime, runtime, seed_everything
from lib.training import distributed, fit, unwrap, wrap_ddp

VARIANTS = ("baseline", "rerank", "structural")


# ------------------------------------------------------------------ data
@dataclass(frozen=True)
class Splits:
    """MNIST-5k in the unseen-class protocol: fit / validation on train classes, test on the rest."""

    fit: MnistDataset
    val: MnistDataset
    test: MnistDataset


def load_splits(cfg: params.DimlParams, data_dir: str | os.PathLike = "data") -> Splits:
    images, labels = load_mnist5k(data_dir)
    train_idx, test_idx = unseen_class_split(labels, cfg.data.train_classes, cfg.data.test_classes)
    fit_idx, val_idx = validation_split(labels, train_idx, cfg.data.val_fraction, seed=cfg.seed)
    return Splits(
        fit=MnistDataset(images[fit_idx], labels[fit_idx], MNIST_MEAN_STD),
        val=MnistDataset(images[val_idx], labels[val_idx], MNIST_MEAN_STD),
        test=MnistDataset(images[test_idx], labels[test_idx], MNIST_MEAN_STD),
    )


# ------------------------------------------------------------------ similarity as a PML distance
class StructuralDistance(distances.BaseDistance):
    """pytorch-metric-learning distance over flattened local embeddings (B, N*D).

    The matrix is DIML's structural similarity s = sum_ij T_ij S_ij
    (``as_similarity``) or, for losses written for Euclidean distances (margin
    loss), the equivalent chord distance sqrt(2 - 2 s), which equals ||a - b||
    for unit vectors whose cosine is s.

    In training the plan T and its marginals are solved without gradient and
    held fixed, so the gradient flows through the cosines S only (ds/dS = T).
    This is an approximation of the full gradient of s, which would
    back-propagate through the marginals and every Sinkhorn iteration at about
    ten times the encoder's own backward cost here; on random maps its cosine
    with the full gradient is about 0.96 with uniform marginals and about 0.6
    with cross-correlation marginals.

    A batch compared with itself solves only its pairs q <= g
    (:func:`~lib.explain.structural.structural_plan_matrix`), and inside
    :meth:`sharing_plans` the plans of one batch are solved once for the
    miner and the loss together.
    """

    def __init__(self, n_locations: int, cfg: params.StructuralParams, as_similarity: bool):
        super().__init__(normalize_embeddings=False, is_inverted=as_similarity)
        self.n_locations = n_locations
        self.ot = dict(epsilon=cfg.epsilon, marginals=cfg.marginals, n_iters=cfg.n_iters, tol=cfg.tol)
        self._shared: list | None = None

    @contextlib.contextmanager
    def sharing_plans(self):
        """Within the block, each (query, reference) pair of tensors has its plans solved once."""
        self._shared = []
        try:
            yield self
        finally:
            self._shared = None

    def _maps(self, flat: torch.Tensor) -> torch.Tensor:
        return F.normalize(flat.reshape(flat.shape[0], self.n_locations, -1), dim=-1)

    def _finish(self, s: torch.Tensor) -> torch.Tensor:
        return s if self.is_inverted else (2 - 2 * s).clamp_min(1e-8).sqrt()

    def _plans(self, query_emb: torch.Tensor, ref_emb: torch.Tensor, q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        # The tensors themselves are kept with their plans, so identity cannot be mistaken.
        for query, ref, plans in self._shared or ():
            if query is query_emb and ref is ref_emb:
                return plans
        with torch.no_grad():
            plans = structural_plan_matrix(q.detach(), None if ref_emb is query_emb else r.detach(), **self.ot)
        if self._shared is not None:
            self._shared.append((query_emb, ref_emb, plans))
        return plans

    def compute_mat(self, query_emb, ref_emb):
        q, r = self._maps(query_emb), self._maps(ref_emb)
        plans = self._plans(query_emb, ref_emb, q, r)
        cosine = torch.einsum("qnd,rmd->qrnm", q, r)
        return self._finish((plans * cosine).sum(dim=(-1, -2)))

    def pairwise_distance(self, query_emb, ref_emb):
        q, r = self._maps(query_emb), self._maps(ref_emb)
        with torch.no_grad():
            plan = structural_match(q, r, **self.ot).plan
        return self._finish((plan * torch.einsum("pnd,pmd->pnm", q, r)).sum(dim=(-1, -2)))


class DimlLoss(nn.Module):
    """A pytorch-metric-learning loss on global or structural similarity: forward(local (B,N,D), labels)."""

    def __init__(self, loss: str, objective: str, n_locations: int, cfg: params.StructuralParams):
        super().__init__()
        self.objective = objective
        if loss == "margin":
            distance = (
                distances.LpDistance(normalize_embeddings=True)
                if objective == "global"
                else StructuralDistance(n_locations, cfg, as_similarity=False)
            )
            self.loss, self.miner = losses.MarginLoss(margin=0.2, beta=1.2, distance=distance), None
        elif loss == "multi_similarity":
            distance = (
                distances.CosineSimilarity()
                if objective == "global"
                else StructuralDistance(n_locations, cfg, as_similarity=True)
            )
            self.loss = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5, distance=distance)
            self.miner = miners.MultiSimilarityMiner(epsilon=0.1, distance=distance)
        else:
            raise ValueError(f"unknown loss {loss!r}; expected 'margin' or 'multi_similarity'")
        self.distance = distance
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Gather every process's embeddings so pairs span the global batch.
            self.loss = pml_dist.DistributedLossWrapper(self.loss)
            self.miner = self.miner and pml_dist.DistributedMinerWrapper(self.miner)

    def forward(self, local: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        local = local.float()
        if self.objective == "global":
            emb, shared = SpatialEmbedding.global_embedding(local), contextlib.nullcontext()
        else:
            emb, shared = local.flatten(1), self.distance.sharing_plans()
        with shared:
            pairs = self.miner(emb, labels) if self.miner is not None else None
            return self.loss(emb, labels, pairs)


# ------------------------------------------------------------------ embedding and retrieval
@torch.no_grad()
def embed(model: nn.Module, dataset: MnistDataset, rt: Runtime, batch_size: int = 256) -> torch.Tensor:
    """Local embeddings (N, L, D) of a dataset, in order, on the CPU, float32."""
    model.eval()
    out = []
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        with rt.autocast():
            out.append(model(rt.batch(x)).float().cpu())
    return torch.cat(out)


def retrieve(local: torch.Tensor, cfg: params.DimlParams, rerank: bool, queries: torch.Tensor | None = None) -> torch.Tensor:
    """Rankings of all other items (query excluded), optionally re-ranked structurally.

    One row per item, or per item of ``queries`` (indices) when given.
    """
    glob = SpatialEmbedding.global_embedding(local)
    if queries is None:
        queries = torch.arange(len(local))
    similarity = glob[queries] @ glob.T
    ranking = retrieval.rank(similarity, depth=len(local) - 1, query_index=queries)
    if not rerank:
        return ranking

    def head_similarity(head: torch.Tensor) -> torch.Tensor:
        return structural_similarity_to(local[queries], local, head, **_ot(cfg))

    return retrieval.rerank(ranking, similarity, head_similarity, k=cfg.eval.rerank_k, weight=cfg.eval.rerank_weight)


def evaluate(
    local: torch.Tensor, labels: torch.Tensor, cfg: params.DimlParams, rerank: bool, with_nmi: bool = True
) -> dict[str, float]:
    """Recall@1/2/4/8, R-Precision, MAP@R (query excluded from its gallery) and NMI."""
    labels_np = labels.numpy()
    ranking = retrieve(local, cfg, rerank).numpy()
    counts = np.bincount(labels_np)
    out = metrics.retrieval_metrics(labels_np[ranking], labels_np, counts[labels_np] - 1)
    if with_nmi:
        out["nmi"] = metrics.nmi(SpatialEmbedding.global_embedding(local).numpy(), labels_np, seed=cfg.seed)
    return out


def results_table(local: dict[tuple[str, str], torch.Tensor], labels: torch.Tensor, cfg: params.DimlParams) -> pd.DataFrame:
    """Metrics of every loss x variant on the test classes (rows), from test embeddings per (loss, objective)."""
    rows = []
    for loss in cfg.losses:
        runs = {
            "baseline": (local.get((loss, "global")), False),
            "rerank": (local.get((loss, "global")), True),
            "structural": (local.get((loss, "structural")), True),
        }
        for variant, (maps, rerank) in runs.items():
            if maps is not None:
                rows.append({"loss": loss, "variant": variant, **evaluate(maps, labels, cfg, rerank)})
    return pd.DataFrame(rows)


def history_frame(meta: dict) -> pd.DataFrame:
    """The training history stored in a model's metadata, one row per epoch."""
    return pd.DataFrame(meta["history"]).assign(model=f"{meta['loss']} / {meta['objective']}")


def save_results(table: pd.DataFrame, history: pd.DataFrame, cfg: params.DimlParams, out_dir: str | os.PathLike) -> None:
    """metrics.json ({loss: {variant: metrics}} plus the settings that produced it) and CSV tables."""
    metrics_by_loss = {
        loss: {row.variant: {k: float(v) for k, v in row._asdict().items() if k not in ("Index", "loss", "variant")}
               for row in rows.itertuples()}
        for loss, rows in table.groupby("loss", sort=False)
    }
    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", {
        "retrieval": metrics_by_loss,
        "rerank_k": cfg.eval.rerank_k,
        "epsilon": cfg.structural.epsilon,
        "marginals": cfg.structural.marginals,
        "test_classes": cfg.data.test_classes,
        "best_epochs": {model: int(rows.loc[rows.val_score.idxmax(), "epoch"]) for model, rows in history.groupby("model")},
    })
    write_text(out_dir / "tables" / "retrieval.csv", table.to_csv(index=False, float_format="%.4f"))
    write_text(out_dir / "tables" / "training_history.csv", history.to_csv(index=False, float_format="%.5f"))


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


def explain_matches(local: torch.Tensor, cfg: params.DimlParams, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, StructuralMatch]:
    """For ``n`` random queries, their best re-ranked match and the structural matching between them.

    Returns (query indices (n,), match indices (n,), the :class:`StructuralMatch` of the n pairs),
    whose per-location contributions T * S explain each similarity.
    """
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randperm(len(local), generator=generator)[:n]
    matches = retrieve(local, cfg, rerank=True, queries=queries)[:, 0]
    return queries, matches, structural_match(local[queries], local[matches], **_ot(cfg))


def _ot(cfg: params.DimlParams) -> dict:
    s = cfg.structural
    return dict(epsilon=s.epsilon, marginals=s.marginals, n_iters=s.n_iters, tol=s.tol)


# ------------------------------------------------------------------ training
def build_model(cfg: params.DimlParams) -> SpatialEmbedding:
    return diml_encoder(in_chans=1, width=cfg.model.width, embedding_dim=cfg.model.embedding_dim, grid=cfg.model.grid)


def train(
    cfg: params.DimlParams,
    loss: str,
    objective: str,
    out_path: str | os.PathLike,
    data_dir: str | os.PathLike = "data",
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Train one (loss, objective) model; select the epoch by validation MAP@R; save safetensors.

    Runs in one process or under torchrun (each process then draws its own
    class-balanced batches; DDP averages gradients). Returns the training history.
    """
    rt = runtime(cfg.device)
    with distributed(rt) as (rank, world):
        seed_everything(cfg.seed + rank)
        splits = load_splits(cfg, data_dir)
        model = wrap_ddp(rt.prepare(build_model(cfg)), rt)
        loss_fn = DimlLoss(loss, objective, cfg.model.grid**2, cfg.structural).to(rt.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        sampler = samplers.MPerClassSampler(
            splits.fit.labels, m=cfg.train.samples_per_class, batch_size=cfg.train.batch_size,
            length_before_new_iter=len(splits.fit),
        )
        loader = DataLoader(splits.fit, batch_size=cfg.train.batch_size, sampler=sampler, drop_last=True)
        val_labels = splits.val.labels

        def validate(m: nn.Module) -> float:
            # Model selection on held-out images of the *training* classes only.
            local = embed(unwrap(m), splits.val, rt, cfg.eval.batch_size)
            return evaluate(local, val_labels, cfg, rerank=objective == "structural", with_nmi=False)["map_at_r"]

        result = fit(
            model, loss_fn, lambda epoch: loader, optimizer,
            epochs=cfg.train.epochs, runtime=rt, validate=validate, checkpoint=checkpoint,
            max_steps_per_epoch=cfg.train.max_steps_per_epoch, progress=progress,
            # Small rotations and shifts only: digits are not rotation- or flip-invariant (6 vs 9).
            augment=lambda x: random_affine(x, degrees=8.0, translate=0.08),
        )
        if rank == 0:
            save_weights(
                out_path, result.best_state,
                {"loss": loss, "objective": objective, "params": cfg.model_dump(), "history": result.history,
                 "best_epoch": result.best_epoch, "world_size": world},
            )
    return {"history": result.history, "best_epoch": result.best_epoch, "best_val_map_at_r": result.best_score}


def load_model(path: str | os.PathLike) -> tuple[SpatialEmbedding, dict]:
    """A trained model (eval mode) and its metadata from :func:`train`'s safetensors file."""
    state, meta = load_weights(path)
    cfg = params.validate("diml", meta["params"])
    model = build_model(cfg)
    model.load_state_dict(state)
    return model.eval(), meta


def launch(cfg: params.DimlParams, loss: str, objective: str, out_path: str | os.PathLike, data_dir="data") -> dict:
    """Train in this process, or under ``torchrun`` when ``train.world_size > 1``.

    DDP cannot start inside a Jupyter kernel, so the notebook launches torchrun
    as a subprocess that runs ``python -m lib.diml``; its history comes back
    through the saved weights' metadata.
    """
    if cfg.train.world_size == 1:
        return train(cfg, loss, objective, out_path, data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(cfg.model_dump()))
        subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             f"--nproc-per-node={cfg.train.world_size}", "-m", "lib.diml",
             "--config", str(config), "--loss", loss, "--objective", objective,
             "--out", str(out_path), "--data-dir", str(data_dir)],
            check=True,
        )
    _, meta = load_weights(out_path)
    return {"history": meta["history"], "best_epoch": meta["best_epoch"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.diml", description="Train one DIML model (torchrun-ready).")
    parser.add_argument("--config", required=True, help="JSON file of the 'diml' parameter section")
    parser.add_argument("--loss", required=True, choices=["margin", "multi_similarity"])
    parser.add_argument("--objective", required=True, choices=["global", "structural"])
    parser.add_argument("--out", required=True, help="safetensors file to write")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args(argv)
    cfg = params.validate("diml", json.loads(Path(args.config).read_text()))
    train(cfg, args.loss, args.objective, args.out, args.data_dir, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
