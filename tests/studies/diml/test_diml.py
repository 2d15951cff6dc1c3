"""Tests of the DIML study (lib/studies/diml): distance, losses, encoder, result tables and DDP training."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import lib.studies.diml.loss
from lib import params
from lib.studies.diml.evaluate import rerank_summary, results_table
from lib.studies.diml.loss import DimlLoss, StructuralDistance
from lib.studies.diml.params import DimlParams, DimlTrainParams, StructuralParams
from lib.studies.diml.train import load_model
from lib.explain.structural import structural_similarity_matrix
from lib.eval.metrics import retrieval_metrics
from lib.models.backbone import diml_encoder

ROOT = Path(__file__).resolve().parents[3]
GRID, N_LOC, DIM = 4, 16, 8


def random_maps(seed: int, n: int, n_locations: int = N_LOC, dim: int = DIM) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, n_locations, dim, generator=generator), dim=-1)


def clustered_maps(seed: int, n_classes: int, per_class: int, noise: float = 0.9):
    """Local embeddings (n, N, D) scattered around one random map per class, and their labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, N_LOC, DIM, generator=generator)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    maps = centres[labels] + noise * torch.randn(len(labels), N_LOC, DIM, generator=generator)
    return F.normalize(maps, dim=-1), labels


@pytest.fixture(scope="module")
def smoke() -> DimlParams:
    return params.profile("diml", "smoke", root=ROOT)


# ------------------------------------------------------------------ StructuralDistance
@pytest.mark.parametrize("marginals", ["cross_correlation", "uniform"])
def test_structural_distance_matrix_equals_the_structural_similarity(marginals):
    cfg = StructuralParams(epsilon=0.05, marginals=marginals, n_iters=200, tol=1e-6)
    queries, gallery = random_maps(0, 5), random_maps(1, 7)
    expected = structural_similarity_matrix(queries, gallery, epsilon=0.05, marginals=marginals, n_iters=200, tol=1e-6)

    as_similarity = StructuralDistance(N_LOC, cfg, as_similarity=True)
    similarity = as_similarity(queries.flatten(1), gallery.flatten(1))
    assert as_similarity.is_inverted
    torch.testing.assert_close(similarity, expected, rtol=0, atol=1e-5)

    as_distance = StructuralDistance(N_LOC, cfg, as_similarity=False)
    distance = as_distance(queries.flatten(1), gallery.flatten(1))
    assert not as_distance.is_inverted
    torch.testing.assert_close(distance, torch.sqrt(2 - 2 * expected), rtol=0, atol=1e-5)

    # pairwise_distance (used by some miners) is the diagonal of the matrix for paired rows.
    paired = as_distance.pairwise_distance(queries.flatten(1), gallery[:5].flatten(1))
    torch.testing.assert_close(paired, distance[:, :5].diagonal(), rtol=0, atol=1e-5)


def test_structural_distance_normalises_the_locations():
    cfg = StructuralParams(epsilon=0.05, marginals="cross_correlation", n_iters=100, tol=1e-4)
    maps = random_maps(2, 4)
    scale = torch.linspace(0.5, 3.0, N_LOC)[None, :, None]
    distance = StructuralDistance(N_LOC, cfg, as_similarity=True)
    torch.testing.assert_close(distance((maps * scale).flatten(1)), distance(maps.flatten(1)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("as_similarity", [True, False])
def test_structural_distance_has_finite_nonzero_gradients(as_similarity):
    cfg = StructuralParams(epsilon=0.05, marginals="cross_correlation", n_iters=50, tol=1e-4)
    queries = random_maps(3, 4).flatten(1).requires_grad_()
    gallery = random_maps(4, 6).flatten(1).requires_grad_()
    weights = torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    (StructuralDistance(N_LOC, cfg, as_similarity)(queries, gallery) * weights).sum().backward()
    for grad in (queries.grad, gallery.grad):
        assert torch.isfinite(grad).all()
        assert grad.abs().max() > 1e-4


def test_structural_distance_of_a_batch_with_itself_equals_the_matrix():
    cfg = StructuralParams(epsilon=0.05, marginals="cross_correlation", n_iters=2000, tol=1e-7)
    maps = random_maps(7, 6)
    expected = structural_similarity_matrix(maps, maps, epsilon=0.05, n_iters=2000, tol=1e-7)
    similarity = StructuralDistance(N_LOC, cfg, as_similarity=True)(maps.flatten(1))
    torch.testing.assert_close(similarity, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(similarity, similarity.T, rtol=0, atol=1e-6)


def test_multi_similarity_miner_and_loss_share_one_solve(monkeypatch, smoke):
    calls = []
    solve = lib.studies.diml.loss.structural_plan_matrix

    def counting(*args, **kwargs):
        calls.append(1)
        return solve(*args, **kwargs)

    monkeypatch.setattr(lib.studies.diml.loss, "structural_plan_matrix", counting)
    local = random_maps(8, 20).requires_grad_()
    labels = torch.arange(4).repeat_interleave(5)
    loss = DimlLoss("multi_similarity", "structural", N_LOC, smoke.structural)
    shared = loss(local, labels)
    assert len(calls) == 1  # the miner's solve is reused by the loss
    # ... with the same value as two separate solves.
    separate = loss.loss(local.flatten(1), labels, loss.miner(local.flatten(1), labels))
    assert len(calls) == 3
    torch.testing.assert_close(shared, separate, rtol=0, atol=1e-6)
    assert loss.distance._shared is None  # nothing is kept after the step


# ------------------------------------------------------------------ DimlLoss
@pytest.mark.parametrize("objective", ["global", "structural"])
@pytest.mark.parametrize("loss", ["margin", "multi_similarity"])
def test_diml_loss_is_a_finite_differentiable_scalar(loss, objective, smoke):
    local = random_maps(6, 20).requires_grad_()
    labels = torch.arange(4).repeat_interleave(5)
    value = DimlLoss(loss, objective, N_LOC, smoke.structural)(local, labels)
    assert value.ndim == 0 and torch.isfinite(value) and value > 0
    value.backward()
    assert torch.isfinite(local.grad).all()
    assert local.grad.abs().max() > 1e-6


def test_diml_loss_rejects_an_unknown_loss(smoke):
    with pytest.raises(ValueError, match="unknown loss 'triplet'"):
        DimlLoss("triplet", "global", N_LOC, smoke.structural)


# ------------------------------------------------------------------ encoder
def test_diml_encoder_gives_unit_local_embeddings():
    torch.manual_seed(0)
    model = diml_encoder(in_chans=1, width=8, embedding_dim=DIM, grid=GRID).eval()
    with torch.no_grad():
        local = model(torch.randn(3, 1, 28, 28))
    assert local.shape == (3, GRID * GRID, DIM)
    torch.testing.assert_close(local.norm(dim=-1), torch.ones(3, GRID * GRID))
    assert not torch.allclose(local[0], local[1])  # depends on the input


def test_diml_encoder_pools_to_a_coarser_grid():
    model = diml_encoder(in_chans=1, width=8, embedding_dim=DIM, grid=2).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 4, DIM)


# ------------------------------------------------------------------ result tables
def metrics_of_ranking(ranking: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return retrieval_metrics(labels[ranking], labels, np.bincount(labels)[labels] - 1)


def reference_rankings(local: torch.Tensor, cfg: DimlParams):
    """Global ranking by argsort, and its head of rerank_k re-scored by structural + w * global."""
    glob = F.normalize(local.mean(dim=1), dim=-1)
    similarity = (glob @ glob.T).numpy()
    np.fill_diagonal(similarity, -np.inf)
    ranking = np.argsort(-similarity, axis=1, kind="stable")[:, :-1]
    s = cfg.structural
    structural = structural_similarity_matrix(local, local, s.epsilon, s.marginals, s.n_iters, s.tol).numpy()
    k = cfg.eval.rerank_k
    reranked = ranking.copy()
    for q, row in enumerate(ranking):
        head = row[:k]
        score = structural[q, head] + cfg.eval.rerank_weight * similarity[q, head]
        reranked[q, :k] = head[np.argsort(-score, kind="stable")]
    return ranking, reranked


def test_results_table_rows_and_values(smoke):
    cfg = smoke.model_copy(update={"eval": smoke.eval.model_copy(update={"rerank_k": 5})})
    margin_maps, labels = clustered_maps(7, n_classes=5, per_class=6)
    structural_maps, _ = clustered_maps(8, n_classes=5, per_class=6, noise=1.2)
    local = {
        ("margin", "global"): margin_maps,
        ("margin", "structural"): structural_maps,
        ("multi_similarity", "global"): structural_maps,  # no structural model for this loss
    }
    table = results_table(local, labels, cfg)

    assert list(zip(table["loss"], table["variant"])) == [
        ("margin", "baseline"), ("margin", "rerank"), ("margin", "structural"),
        ("multi_similarity", "baseline"), ("multi_similarity", "rerank"),
    ]
    metric_columns = ["recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "r_precision", "map_at_r", "nmi"]
    assert list(table.columns) == ["loss", "variant", *metric_columns]
    assert ((table[metric_columns] >= 0) & (table[metric_columns] <= 1)).all().all()

    labels_np = labels.numpy()
    global_ranking, reranked = reference_rankings(margin_maps, cfg)
    assert not np.array_equal(global_ranking, reranked)  # the re-ranking changes something here ...
    rows = table.set_index(["loss", "variant"])
    for variant, ranking in [("baseline", global_ranking), ("rerank", reranked)]:
        expected = metrics_of_ranking(ranking, labels_np)
        for key, value in expected.items():
            assert rows.loc[("margin", variant), key] == pytest.approx(value, abs=1e-9), (variant, key)
    # ... and the metrics see it, so a re-ranking that did nothing would fail the loop above.
    assert rows.loc[("margin", "rerank"), "map_at_r"] != rows.loc[("margin", "baseline"), "map_at_r"]
    _, structural_reranked = reference_rankings(structural_maps, cfg)
    assert rows.loc[("margin", "structural"), "map_at_r"] == pytest.approx(
        metrics_of_ranking(structural_reranked, labels_np)["map_at_r"], abs=1e-9
    )

    summary = rerank_summary(table)
    assert summary.splitlines()[0].startswith("margin: rerank vs baseline changes Recall@1 by")
    assert len(summary.splitlines()) == 3


def test_rerank_summary_reports_the_differences_in_points():
    table = pd.DataFrame([
        {"loss": "margin", "variant": "baseline", "recall_at_1": 0.5, "map_at_r": 0.25},
        {"loss": "margin", "variant": "rerank", "recall_at_1": 0.625, "map_at_r": 0.2},
        {"loss": "multi_similarity", "variant": "structural", "recall_at_1": 0.9, "map_at_r": 0.9},
    ])
    assert rerank_summary(table) == (
        "margin: rerank vs baseline changes Recall@1 by +12.5 points (50.0 -> 62.5) and MAP@R by -5.0 points."
    )  # no baseline for multi_similarity: nothing to compare against


# ------------------------------------------------------------------ distributed training
@pytest.mark.slow
def test_torchrun_trains_on_two_processes(tmp_path, smoke):
    data_dir = ROOT / "data"
    if not (data_dir / "mnist" / "mnist_5k.csv.gz").is_file():
        pytest.skip("data/mnist/mnist_5k.csv.gz is absent; run the fetch step (make data) first")
    values = smoke.model_dump(include=set(DimlTrainParams.model_fields))
    values["device"] = "cpu"
    values["train"].update(epochs=1, max_steps_per_epoch=2, world_size=2)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(values))
    out = tmp_path / "model.safetensors"

    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "lib.studies.diml.train", "--config", str(config), "--loss", "margin", "--objective", "global",
         "--out", str(out), "--data-dir", str(data_dir)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    model, meta = load_model(out)
    assert meta["world_size"] == 2
    assert meta["loss"] == "margin" and meta["objective"] == "global"
    assert meta["params"] == values
    assert [r["epoch"] for r in meta["history"]] == [0] and meta["best_epoch"] == 0
    assert 0 <= meta["history"][0]["val_score"] <= 1
    with torch.no_grad():
        local = model(torch.randn(2, 1, 28, 28))
    assert local.shape == (2, smoke.model.grid**2, smoke.model.embedding_dim)


def test_save_results_writes_headline_metrics_summary_and_plot_data(tmp_path, smoke):
    rows = [{"loss": loss, "variant": v, "recall_at_1": 0.5 + i / 10, "recall_at_2": 0.7, "recall_at_4": 0.8,
             "recall_at_8": 0.9, "r_precision": 0.3, "map_at_r": 0.2 + i / 100, "nmi": 0.4}
            for loss in ("margin", "multi_similarity") for i, v in enumerate(("baseline", "rerank", "structural"))]
    history = pd.concat([
        pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5], "val_score": [0.3, 0.6]}).assign(model=f"{loss} / {objective}")
        for loss in ("margin", "multi_similarity") for objective in ("global", "structural")
    ])
    from lib.studies.diml.evaluate import save_results

    save_results(pd.DataFrame(rows), history, smoke, tmp_path)
    headline = json.loads((tmp_path / "metrics.json").read_text())
    assert headline["margin"]["rerank"] == {"recall_at_1": 0.6, "map_at_r": 0.21}
    assert sum(len(v) for variants in headline.values() for v in variants.values()) == 12  # a dozen numbers
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["retrieval"]["multi_similarity"]["structural"]["nmi"] == 0.4
    assert summary["best_epochs"]["margin / global"] == 1 and summary["rerank_k"] == smoke.eval.rerank_k
    curves = pd.read_csv(tmp_path / "plots" / "validation_map_at_r.csv")
    assert list(curves.columns) == ["epoch", "margin_global", "margin_structural", "multi_similarity_global",
                                    "multi_similarity_structural"]
    assert curves["epoch"].tolist() == [1, 2] and curves["margin_global"].tolist() == [0.3, 0.6]
    assert pd.read_csv(tmp_path / "plots" / "retrieval.csv")["model"].tolist()[:2] == ["margin baseline", "margin rerank"]
