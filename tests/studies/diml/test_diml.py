"""Tests of the DIML study (lib/studies/diml): distances, losses, miner and learned beta, encoder,
per-seed evaluation, summaries over seeds, the depth sweep, and DDP training."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import ot
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from pytorch_metric_learning import miners

import lib.studies.diml.loss
from lib import params
from lib import stage as S
from lib.eval.intervals import comparison_cell, interval_cell
from lib.eval.metrics import retrieval_metrics
from lib.explain.structural import structural_similarity_matrix
from lib.models.backbone import diml_encoder
from lib.studies.diml.evaluate import (
    COMPARISONS,
    depth_metrics,
    draw_queries,
    evaluate_seed,
    raw_pixel_seed,
    save_results,
    training_records,
)
from lib.studies.diml.loss import (
    ClassifierLoss,
    DimlLoss,
    StructuralDistance,
    objective_spec,
)
from lib.studies.diml.params import DimlParams, DimlTrainParams, StructuralParams
from lib.studies.diml.summary import (
    FAMILIES,
    LADDER_COMPARISONS,
    Summary,
    build_summary,
    comparison_lines,
    ladder_lines,
    metric_cells,
    variant_comparisons,
)
from lib.studies.diml.train import load_model, optimiser

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


def structural_cfg(n_iters=2000, tol=1e-7, global_weight=0.5) -> StructuralParams:
    return StructuralParams(epsilon=0.05, global_weight=global_weight, n_iters=n_iters, tol=tol)


# ------------------------------------------------------------------ the mixed similarity, against POT
def pot_pair(x: np.ndarray, y: np.ndarray, marginals: str) -> tuple[float, float, float]:
    """(structural similarity, transport-weighted chord distance, global cosine) of one pair, by POT.

    Written from the paper: unit locations, S = x y^T, cost 1 - S, marginals
    ReLU(<x_i, mean y>) normalised (or uniform), entropic plan by ot.sinkhorn
    on the marginals' support (POT's kernel solver turns zero marginals into NaN).
    """
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    cosine = x @ y.T
    if marginals == "uniform":
        a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    else:
        a, b = np.maximum(x @ y.mean(0), 0), np.maximum(y @ x.mean(0), 0)
        a, b = a / a.sum(), b / b.sum()
    rows, cols = a > 0, b > 0
    plan = np.zeros_like(cosine)
    plan[np.ix_(rows, cols)] = ot.sinkhorn(a[rows], b[cols], 1 - cosine[np.ix_(rows, cols)], reg=0.05,
                                           stopThr=1e-10, numItermax=100_000)
    chord = np.sqrt(np.maximum(2 - 2 * cosine, 1e-8))
    gx, gy = x.mean(0), y.mean(0)
    return float((plan * cosine).sum()), float((plan * chord).sum()), float(gx @ gy / np.linalg.norm(gx) / np.linalg.norm(gy))


@pytest.mark.parametrize("marginals", ["cross_correlation", "uniform"])
@pytest.mark.parametrize("w", [0.0, 0.5])
def test_mixed_similarity_and_distance_equal_a_loop_of_pot_and_the_cosine_of_the_means(marginals, w):
    queries, gallery = random_maps(0, 4).double(), random_maps(1, 5).double()
    expected_s = np.zeros((4, 5))
    expected_d = np.zeros((4, 5))
    for q in range(4):
        for g in range(5):
            s, d, cos = pot_pair(queries[q].numpy(), gallery[g].numpy(), marginals)
            expected_s[q, g] = (1 - w) * s + w * cos
            expected_d[q, g] = (1 - w) * d + w * np.sqrt(2 - 2 * cos)
    cfg = structural_cfg()
    similarity = StructuralDistance(N_LOC, cfg, True, w, marginals)(queries.flatten(1), gallery.flatten(1))
    distance = StructuralDistance(N_LOC, cfg, False, w, marginals)(queries.flatten(1), gallery.flatten(1))
    np.testing.assert_allclose(similarity.numpy(), expected_s, atol=1e-6)
    np.testing.assert_allclose(distance.numpy(), expected_d, atol=1e-6)


@pytest.mark.parametrize("marginals", ["cross_correlation", "uniform"])
def test_pure_structural_similarity_is_the_explainer_s_similarity(marginals):
    cfg = structural_cfg(n_iters=200, tol=1e-6)
    queries, gallery = random_maps(0, 5), random_maps(1, 7)
    expected = structural_similarity_matrix(queries, gallery, epsilon=0.05, marginals=marginals, n_iters=200, tol=1e-6)
    distance = StructuralDistance(N_LOC, cfg, as_similarity=True, marginals=marginals)
    assert distance.is_inverted
    torch.testing.assert_close(distance(queries.flatten(1), gallery.flatten(1)), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("as_similarity", [True, False])
def test_pairwise_distance_is_the_diagonal_of_the_matrix(as_similarity):
    cfg = structural_cfg(n_iters=500, tol=1e-7)
    queries, gallery = random_maps(2, 5), random_maps(3, 5)
    distance = StructuralDistance(N_LOC, cfg, as_similarity, 0.5)
    matrix = distance(queries.flatten(1), gallery.flatten(1))
    torch.testing.assert_close(distance.pairwise_distance(queries.flatten(1), gallery.flatten(1)), matrix.diagonal(),
                               rtol=0, atol=1e-5)


def test_structural_distance_normalises_the_locations_and_checks_the_shape():
    cfg = structural_cfg(n_iters=100, tol=1e-4)
    maps = random_maps(2, 4)
    scale = torch.linspace(0.5, 3.0, N_LOC)[None, :, None]
    distance = StructuralDistance(N_LOC, cfg, as_similarity=True, global_weight=0.5)
    torch.testing.assert_close(distance((maps * scale).flatten(1)), distance(maps.flatten(1)), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"flattened maps \(B, 16 \* D\)"):
        distance(torch.randn(3, 17))
    with pytest.raises(ValueError, match="global_weight must lie in"):
        StructuralDistance(N_LOC, cfg, True, global_weight=1.5)


@pytest.mark.parametrize("as_similarity", [True, False])
@pytest.mark.parametrize("w", [0.0, 0.5])
def test_structural_distance_has_finite_nonzero_gradients(as_similarity, w):
    cfg = structural_cfg(n_iters=50, tol=1e-4)
    queries = random_maps(3, 4).flatten(1).requires_grad_()
    gallery = random_maps(4, 6).flatten(1).requires_grad_()
    weights = torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    (StructuralDistance(N_LOC, cfg, as_similarity, w)(queries, gallery) * weights).sum().backward()
    for grad in (queries.grad, gallery.grad):
        assert torch.isfinite(grad).all()
        assert grad.abs().max() > 1e-4


def test_structural_distance_of_a_batch_with_itself_equals_the_matrix():
    cfg = structural_cfg()
    maps = random_maps(7, 6)
    distance = StructuralDistance(N_LOC, cfg, as_similarity=True, global_weight=0.5)
    expected = distance(maps.flatten(1), maps.flatten(1).clone())  # a different tensor: all pairs solved
    similarity = distance(maps.flatten(1))
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


# ------------------------------------------------------------------ objectives
def test_objectives_name_their_similarity(smoke):
    cfg = smoke.structural
    assert objective_spec("global", cfg).structural is False
    reference = objective_spec("structural", cfg)
    assert reference.structural and reference.global_weight == cfg.global_weight == 0.5
    assert reference.marginals == "cross_correlation"
    assert objective_spec("structural_pure", cfg).global_weight == 0.0
    assert objective_spec("structural_uniform", cfg).marginals == "uniform"
    assert objective_spec("structural_uniform", cfg).global_weight == cfg.global_weight
    with pytest.raises(ValueError, match="unknown objective 'mixed'"):
        objective_spec("mixed", cfg)
    loss = DimlLoss("multi_similarity", "structural_uniform", N_LOC, cfg)
    assert loss.distance.ot["marginals"] == "uniform" and loss.distance.global_weight == 0.5


# ------------------------------------------------------------------ margin loss: miner and learned beta
def test_margin_loss_mines_valid_triplets_on_the_global_embedding(monkeypatch, smoke):
    seen = []
    mine = miners.DistanceWeightedMiner.mine

    def recording(self, embeddings, labels, ref_emb, ref_labels):
        triplets = mine(self, embeddings, labels, ref_emb, ref_labels)
        seen.append((embeddings.shape, embeddings.dtype, triplets))
        return triplets

    monkeypatch.setattr(miners.DistanceWeightedMiner, "mine", recording)
    local, labels = clustered_maps(3, n_classes=4, per_class=5)
    for objective in ("global", "structural"):
        value = DimlLoss("margin", objective, N_LOC, smoke.structural)(local.requires_grad_(), labels)
        assert torch.isfinite(value) and value > 0
    for shape, dtype, (a, p, n) in seen:
        assert tuple(shape) == (20, DIM) and dtype == torch.float64  # the unit global embedding, not N * D wide
        assert len(a) == 20 * 5 and (torch.bincount(a) == 5).all()  # every anchor, as many triplets as its class size
        assert (labels[a] == labels[p]).all() and (a != p).all()
        assert (labels[a] != labels[n]).all()


def test_distance_weighted_mining_in_float64_keeps_every_anchor():
    """The miner subtracts one maximum over the batch; wide embeddings underflow float32 (DimlLoss mines in float64)."""
    generator = torch.Generator().manual_seed(0)
    dim = 512
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator)).Q
    close = F.normalize(basis[0] + 0.25 * basis[1], dim=0)  # a negative at distance ~0.25 of basis[0]
    # Class 0: basis[0] (anchor, with a close negative), basis[2]; class 1: close, basis[3];
    # class 2: basis[4], basis[5], orthogonal to everything (all their negatives at sqrt 2).
    emb = torch.stack([basis[0], basis[2], close, basis[3], basis[4], basis[5]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    miner = miners.DistanceWeightedMiner(**lib.studies.diml.loss.MINER_CUTOFFS)
    torch.manual_seed(0)
    anchors32 = set(miner(emb.float(), labels)[0].tolist())
    torch.manual_seed(0)
    anchors64 = set(miner(emb.double(), labels)[0].tolist())
    assert anchors64 == set(range(6))
    assert {4, 5}.isdisjoint(anchors32)  # in float32 their weights underflow to zero and they lose their triplets


def test_learned_beta_is_in_the_optimiser_and_moves_after_a_step(smoke):
    cfg = smoke.model_copy(update={"train": smoke.train.model_copy(update={"beta_lr": 0.01})})
    model = diml_encoder(in_chans=1, width=8, embedding_dim=DIM, grid=GRID)
    loss_fn = DimlLoss("margin", "structural", GRID**2, cfg.structural, n_classes=5)
    beta = loss_fn.beta
    assert beta.requires_grad and beta.shape == (5,) and torch.equal(beta.detach(), torch.full((5,), 1.2))
    opt = optimiser(model, loss_fn, cfg.train)
    groups = [g for g in opt.param_groups if any(p is beta for p in g["params"])]
    assert len(groups) == 1 and groups[0]["lr"] == 0.01 and groups[0]["weight_decay"] == 0.0
    torch.manual_seed(0)
    images, labels = torch.randn(20, 1, 28, 28), torch.arange(5).repeat_interleave(4)
    before = beta.detach().clone()
    loss_fn(model(images), labels).backward()
    assert beta.grad is not None and beta.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(beta.detach(), before)
    assert DimlLoss("multi_similarity", "global", N_LOC, cfg.structural).beta is None
    assert len(optimiser(model, DimlLoss("multi_similarity", "global", N_LOC, cfg.structural), cfg.train).param_groups) == 1


@pytest.mark.parametrize("objective", ["global", "structural", "structural_pure", "structural_uniform"])
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


# ------------------------------------------------------------------ parameters and dvc.yaml
def test_parameters_name_the_trained_models_and_check_the_depths(smoke):
    assert smoke.trained()[: len(smoke.losses) * len(smoke.objectives)] == [
        (loss, o) for loss in smoke.losses for o in smoke.objectives
    ]
    assert set(smoke.trained()) >= {(loss, o) for loss in smoke.ablation.losses for o in smoke.ablation.objectives}
    assert len(set(smoke.trained())) == len(smoke.trained())
    values = smoke.model_dump()
    values["eval"]["rerank_depths"] = [0, 50, 10]
    with pytest.raises(params.ParameterError, match="rerank_depths must be distinct non-negative"):
        params.validate("diml", values)


def test_the_ablation_stage_runs_the_training_notebook_with_its_parameters_and_deps():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    train, ablation = stages["diml_train"], stages["diml_ablation"]
    assert ablation["cmd"] == train["cmd"]
    assert ablation["params"] == train["params"] == S.get_stage("diml_train").param_keys()
    assert ablation["deps"] == train["deps"]
    assert ablation["outs"] == train["outs"]
    assert ablation["matrix"] == {"loss": "${diml.ablation.losses}", "objective": "${diml.ablation.objectives}"}


# ------------------------------------------------------------------ evaluation of one seed
def metrics_of_ranking(ranking: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    return retrieval_metrics(labels[ranking], labels[queries], np.bincount(labels)[labels[queries]] - 1)


def reference_rankings(local: torch.Tensor, queries: np.ndarray, k: int, weight: float, s: StructuralParams,
                       marginals: str = "cross_correlation"):
    """Global ranking by argsort, and its head of k re-scored by structural + w * global, for the queries."""
    glob = F.normalize(local.mean(dim=1), dim=-1)
    similarity = (glob @ glob.T).numpy()
    np.fill_diagonal(similarity, -np.inf)
    ranking = np.argsort(-similarity, axis=1, kind="stable")[queries, :-1]
    structural = structural_similarity_matrix(local, local, s.epsilon, marginals, s.n_iters, s.tol).numpy()
    reranked = ranking.copy()
    for row, q in enumerate(queries):
        head = ranking[row, :k]
        score = structural[q, head] + weight * similarity[q, head]
        reranked[row, :k] = head[np.argsort(-score, kind="stable")]
    return ranking, reranked


@pytest.fixture(scope="module")
def one_seed(smoke):
    cfg = smoke.model_copy(update={"eval": smoke.eval.model_copy(update={"rerank_k": 5, "n_queries": 20,
                                                                          "rerank_depths": [0, 2, 5, 8]})})
    margin_maps, labels = clustered_maps(7, n_classes=5, per_class=6)
    structural_maps, _ = clustered_maps(8, n_classes=5, per_class=6, noise=1.2)
    uniform_maps, _ = clustered_maps(9, n_classes=5, per_class=6, noise=1.1)
    local = {
        ("margin", "global"): margin_maps,
        ("margin", "structural"): structural_maps,
        ("margin", "structural_uniform"): uniform_maps,
        ("multi_similarity", "global"): structural_maps,  # no structural model for this loss
    }
    table, sweep, per_query = evaluate_seed(local, labels, cfg, seed=3)
    return cfg, local, labels, table, sweep, per_query


def test_evaluate_seed_rows_and_values_against_a_reference_reranking(one_seed):
    cfg, local, labels, table, sweep, _ = one_seed
    assert list(zip(table["loss"], table["variant"])) == [
        ("margin", "baseline"), ("margin", "rerank"), ("margin", "structural_global"), ("margin", "structural"),
        ("margin", "structural_uniform"), ("multi_similarity", "baseline"), ("multi_similarity", "rerank"),
    ]
    metric_columns = ["recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "r_precision", "map_at_r", "nmi"]
    assert list(table.columns) == ["seed", "loss", "variant", *metric_columns] and (table["seed"] == 3).all()
    assert ((table[metric_columns] >= 0) & (table[metric_columns] <= 1)).all().all()

    queries = draw_queries(len(labels), 20, 3).numpy()
    assert len(queries) == 20 and np.array_equal(queries, draw_queries(len(labels), 20, 3).numpy())
    assert not np.array_equal(queries, draw_queries(len(labels), 20, 4).numpy())  # the seed draws them
    labels_np, rows = labels.numpy(), table.set_index(["loss", "variant"])
    s, k, w = cfg.structural, cfg.eval.rerank_k, cfg.eval.rerank_weight
    cases = [("baseline", "global", False, "cross_correlation"), ("rerank", "global", True, "cross_correlation"),
             ("structural_global", "structural", False, "cross_correlation"),
             ("structural", "structural", True, "cross_correlation"),
             ("structural_uniform", "structural_uniform", True, "uniform")]
    for variant, objective, is_reranked, marginals in cases:
        glob, reranked = reference_rankings(local["margin", objective], queries, k, w, s, marginals)
        expected = metrics_of_ranking(reranked if is_reranked else glob, labels_np, queries)
        for key, value in expected.items():
            assert rows.loc[("margin", variant), key] == pytest.approx(value, abs=1e-9), (variant, key)
    # the re-ranking changed something, and the metrics see it (a no-op re-ranking fails the loop above)
    assert rows.loc[("margin", "rerank"), "map_at_r"] != rows.loc[("margin", "baseline"), "map_at_r"]


def test_per_query_values_average_to_the_table_bit_for_bit(one_seed):
    cfg, _, labels, table, _, per_query = one_seed
    queries = draw_queries(len(labels), cfg.eval.n_queries, 3).numpy()
    rows = table.set_index(["loss", "variant"])
    for (loss, variant), part in per_query.groupby(["loss", "variant"], sort=False):
        assert part["query"].tolist() == queries.tolist() and (part["seed"] == 3).all()
        for metric in ("recall_at_1", "recall_at_8", "r_precision", "map_at_r"):
            assert float(part[metric].mean()) == rows.loc[(loss, variant), metric], (loss, variant, metric)
    assert len(per_query) == len(table) * len(queries)


def test_the_depth_sweep_agrees_with_the_table(one_seed):
    cfg, _, _, table, sweep, _ = one_seed
    assert set(sweep["depth"]) == {0, 2, 5, 8}
    assert set(zip(sweep["loss"], sweep["variant"])) == {("margin", "rerank"), ("margin", "structural"),
                                                       ("multi_similarity", "rerank")}
    rows = table.set_index(["loss", "variant"])
    at = sweep.set_index(["loss", "variant", "depth"])
    for metric in ("recall_at_1", "map_at_r", "r_precision"):
        assert at.loc[("margin", "rerank", 0), metric] == rows.loc[("margin", "baseline"), metric]
        assert at.loc[("margin", "rerank", 5), metric] == rows.loc[("margin", "rerank"), metric]
        assert at.loc[("margin", "structural", 0), metric] == rows.loc[("margin", "structural_global"), metric]
        assert at.loc[("margin", "structural", 5), metric] == rows.loc[("margin", "structural"), metric]


def test_reranking_moves_only_what_the_depth_allows(smoke):
    """Recall@k is fixed for k >= K, R-Precision for K <= R, and MAP@R moves by at most K / R."""
    local, labels = clustered_maps(12, n_classes=3, per_class=12, noise=1.3)  # R = 11
    out = depth_metrics(local, labels, smoke.structural, [0, 1, 2, 4, 11, 20], weight=1.0)
    base = out[0]
    for k in (1, 2, 4):
        for r in (1, 2, 4, 8):
            if r >= k:
                assert out[k][f"recall_at_{r}"] == base[f"recall_at_{r}"], (k, r)
    for k in (1, 2, 4, 11):
        assert out[k]["r_precision"] == pytest.approx(base["r_precision"], abs=1e-12)
        assert abs(out[k]["map_at_r"] - base["map_at_r"]) <= k / 11 + 1e-12
    assert any(out[k]["map_at_r"] != base["map_at_r"] for k in (1, 2, 4, 11))  # re-ranking does move something
    assert out[20]["r_precision"] != base["r_precision"]  # beyond R it can change R-Precision too


# ------------------------------------------------------------------ summaries over seeds
def seeded_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in (2, 0, 1):  # out of order on purpose
        for loss in ("margin", "multi_similarity"):
            for i, variant in enumerate(("baseline", "rerank", "structural_global", "structural")):
                values = {m: float(np.clip(0.5 + 0.05 * i + 0.02 * rng.standard_normal(), 0, 1))
                          for m in ("recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "r_precision", "map_at_r", "nmi")}
                rows.append({"seed": seed, "loss": loss, "variant": variant, **values})
    return pd.DataFrame(rows)


def seeded_queries(table: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """Per-query values whose means are the table's (a query set of 0/1 recalls would not average to any
    value; a shift of per-query noise with mean zero keeps each mean)."""
    rng = np.random.default_rng(1)
    frames = []
    for row in table.itertuples():
        noise = rng.uniform(-0.05, 0.05, size=n)
        values = {m: getattr(row, m) + noise - noise.mean() for m in ("recall_at_1", "map_at_r")}
        frames.append(pd.DataFrame({"seed": row.seed, "loss": row.loss, "variant": row.variant,
                                    "query": np.arange(n), **values}))
    return pd.concat(frames, ignore_index=True)


def test_summaries_and_comparisons_are_the_intervals_of_the_seeds():
    table = seeded_table()
    cells = metric_cells(table, ("loss", "variant"), ["map_at_r", "nmi"])
    margin = table[table.loss == "margin"].sort_values("seed")
    base = margin[margin.variant == "baseline"]["map_at_r"].to_numpy()
    assert cells["margin"]["baseline"]["map_at_r"] == interval_cell(base, bounds=(0.0, 1.0))
    assert cells["margin"]["baseline"]["map_at_r"].values == base.tolist()  # in seed order
    compared = variant_comparisons(table)
    assert set(compared["margin"]) == {"rerank_vs_baseline", "structural_global_vs_baseline",
                                       "structural_vs_structural_global", "structural_vs_rerank", "structural_vs_baseline"}
    rerank = margin[margin.variant == "rerank"]["map_at_r"].to_numpy()
    assert compared["margin"]["rerank_vs_baseline"]["map_at_r"] == comparison_cell(rerank, base, a="rerank", b="baseline",
                                                                                  bounds=(0.0, 1.0))
    assert set(COMPARISONS) >= set(compared["margin"])
    # with per-query values, the per-query metrics get the nested bootstrap, NMI the bootstrap over seeds
    nested = metric_cells(table, ("loss", "variant"), ["map_at_r", "nmi"], seeded_queries(table))
    assert nested["margin"]["baseline"]["map_at_r"].method == "bootstrap_items"
    assert nested["margin"]["baseline"]["map_at_r"].mean == cells["margin"]["baseline"]["map_at_r"].mean
    assert nested["margin"]["baseline"]["nmi"] == cells["margin"]["baseline"]["nmi"]


def synthetic_inputs(smoke):
    table = seeded_table()
    sweep = pd.DataFrame([{"seed": s, "loss": "margin", "variant": v, "depth": k, "recall_at_1": 0.5 + k / 1000 + s / 100,
                           "r_precision": 0.3, "map_at_r": 0.2 + k / 10000}
                          for s in (0, 1, 2) for v in ("rerank", "structural") for k in (0, 10, 100)])
    history = pd.concat([
        pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5 + s], "val_score": [0.3, 0.6 - s / 4]}).assign(
            model=f"{loss} / {objective}", seed=s)
        for loss in ("margin", "multi_similarity") for objective in ("global", "structural") for s in (0, 1, 2)
    ])
    labels = torch.tensor([5] * 4 + [6] * 6)
    return table, sweep, history, labels


def test_the_summary_is_built_from_the_tables_and_validates_against_its_model(smoke):
    table, sweep, history, labels = synthetic_inputs(smoke)
    summary = build_summary(table, sweep, history, labels, smoke, {"margin_global": [[1.1, 1.2]]}, seeded_queries(table))
    again = Summary.model_validate_json(summary.model_dump_json())
    assert again == summary and summary.seeds == [0, 1, 2]
    cell = summary.retrieval["margin"]["structural_global"]["nmi"]
    assert cell.mean == pytest.approx(table[(table.loss == "margin") & (table.variant == "structural_global")]["nmi"].mean())
    assert 0.0 <= cell.low <= cell.mean <= cell.high <= 1.0 and cell.method == "bootstrap"
    assert summary.retrieval["margin"]["rerank"]["recall_at_1"].method == "bootstrap_items"
    # every comparison Holm-corrected within its family, `supported` taken from the corrected p
    # ladders: MNIST-5k only (no scenes table), no raw-pixel rows: structural and rerank against the baseline
    sizes = {"variants": 2 * 5 * 2, "variants_other_metrics": 2 * 5 * 5, "depth_sweep": 2 * 2 * 2, "ladders": 2 * 2}
    assert summary.holm_families == sizes and set(sizes) == set(FAMILIES)
    for named in summary.comparisons.values():
        for cells in named.values():
            for c in cells.values():
                assert c.p_holm >= c.p_value and c.supported == (c.p_holm < 0.05)
    # depth K = 100 adds 0.1 to every seed's Recall@1 (the seeds differ among themselves, not in the gain)
    gain = summary.depth_sweep.vs_unranked["margin"]["rerank"]["100"]["recall_at_1"]
    assert gain.difference == pytest.approx(0.1) and gain.p_value == 0.0 and gain.supported and gain.direction == 1
    assert summary.depth_sweep.metrics["margin"]["rerank"]["100"]["recall_at_1"].mean == pytest.approx(0.61)
    assert summary.best_epochs["margin / global"] == [1, 1, 0] and summary.epochs == 2
    assert (summary.r_min, summary.r_max) == (3, 5)
    assert summary.rerank_k == smoke.eval.rerank_k and summary.beta == {"margin_global": [[1.1, 1.2]]}
    assert comparison_lines(summary).count("\n") == 2 * 5 - 1 and "margin: rerank - baseline: recall_at_1 " in comparison_lines(summary)


def test_save_results_writes_headline_metrics_summary_and_plot_data(tmp_path, smoke):
    table, sweep, history, labels = synthetic_inputs(smoke)
    summary = build_summary(table, sweep, history, labels, smoke)
    save_results(summary, table, sweep, history, tmp_path)
    headline = json.loads((tmp_path / "metrics.json").read_text())
    assert set(headline["margin"]) == {"baseline", "rerank", "structural"}
    assert sum(len(v) for variants in headline.values() for v in variants.values()) == 12  # a dozen numbers
    margin = table[(table.loss == "margin") & (table.variant == "rerank")]
    assert headline["margin"]["rerank"]["map_at_r"] == round(margin["map_at_r"].mean(), 4)
    written = Summary.model_validate_json((tmp_path / "summary.json").read_text())
    assert written == summary
    assert written.retrieval["margin"]["rerank"]["map_at_r"].values == margin.sort_values("seed")["map_at_r"].tolist()
    curves = pd.read_csv(tmp_path / "plots" / "validation_map_at_r.csv")
    assert list(curves.columns) == ["epoch", "margin_global", "margin_structural", "multi_similarity_global",
                                    "multi_similarity_structural"]
    assert curves["epoch"].tolist() == [1, 2] and curves["margin_global"].tolist() == pytest.approx([0.3, 0.35])
    assert pd.read_csv(tmp_path / "plots" / "retrieval.csv")["model"].tolist()[:2] == ["margin baseline", "margin rerank"]


def test_the_figures_draw_the_summary_cells(smoke):
    import matplotlib.pyplot as plt

    from lib.studies.diml import figures

    table, sweep, history, labels = synthetic_inputs(smoke)
    summary = build_summary(table, sweep, history, labels, smoke)
    fig = figures.metric_bars(table, summary.retrieval, ["recall_at_1", "map_at_r"])
    low, high = fig.axes[0].get_ylim()
    assert 0.0 <= low and high <= 1.0
    plt.close(fig)
    fig = figures.rerank_depth(summary.depth_sweep.metrics)
    assert len(fig.axes) == 3
    plt.close(fig)


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
         "-m", "lib.studies.diml.train", "--config", str(config), "--loss", "margin", "--objective", "structural",
         "--seed", "1", "--out", str(out), "--data-dir", str(data_dir)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    model, meta = load_model(out)
    assert meta["world_size"] == 2 and meta["seed"] == 1
    assert meta["loss"] == "margin" and meta["objective"] == "structural"
    assert meta["params"] == values
    assert [r["epoch"] for r in meta["history"]] == [0] and meta["best_epoch"] == 0
    assert 0 <= meta["history"][0]["val_score"] <= 1
    assert len(meta["beta"]) == max(smoke.data.train_classes) + 1
    with torch.no_grad():
        local = model(torch.randn(2, 1, 28, 28))
    assert local.shape == (2, smoke.model.grid**2, smoke.model.embedding_dim)


# ---------------------------------------------------------------- issue 24: ladders, plateau records, bound, control
def ladder_inputs(smoke):
    """Synthetic tables of both sets with raw-pixel and bound rows; per seed, pixels < baseline < rerank <
    structural < bound, with seed noise shared by every row (so the differences are nearly constant)."""
    _, sweep, history, labels = synthetic_inputs(smoke)
    level = {"raw_pixels": 0.1, "baseline": 0.3, "rerank": 0.4, "structural_global": 0.35, "structural": 0.5, "bound": 0.7}
    loss = {"raw_pixels": "pixels", "bound": "cross_entropy"}
    rows = [{"seed": s, "loss": loss.get(v, "margin"), "variant": v,
             **{m: min(1.0, x + s / 100 + 0.001 * (s * s % 3) * (v == "structural")) for m in METRICS_}}
            for s in (0, 1, 2) for v, x in level.items()]
    return pd.DataFrame(rows), sweep, history, labels


METRICS_ = ("recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "r_precision", "map_at_r", "nmi")


def test_ladders_rank_their_rows_compare_the_method_with_the_trivial_rung_and_the_baseline(smoke):
    table, sweep, history, labels = ladder_inputs(smoke)
    control = pd.DataFrame([{"seed": s, "pair": p, "share": 0.6 + p / 100 + s / 50, "uniform": 0.2, "independent": 0.4}
                            for s in (0, 1, 2) for p in range(5)])
    trainings = pd.DataFrame([{"set": "mnist5k", "model": "margin_global", "seed": s, "selected_epoch": 2,
                               "last_epoch": 4, "max_epochs": 12 - 7 * (s == 2), "stopped_at_plateau": s != 2}
                              for s in (0, 1, 2)])
    summary = build_summary(table, sweep, history, labels, smoke, per_query=None, scenes_table=table.copy(),
                            trainings=trainings, control=control)
    assert Summary.model_validate_json(summary.model_dump_json()) == summary
    titles = [ladder.title for ladder in summary.ladders]
    assert titles == ["MNIST-5k: recall_at_1", "MNIST-5k: map_at_r", "embedded scenes: recall_at_1", "embedded scenes: map_at_r"]
    easy, scenes = summary.ladders[0], summary.ladders[2]
    assert [r.rung for r in easy.rows] == ["trivial", "method", "variant", "variant", "variant", "bound"]
    assert [r.rung for r in scenes.rows][-1] == "ceiling"  # the easy set's method on the clean digits
    assert scenes.rows[-1].cell == summary.retrieval["margin"]["structural"]["recall_at_1"]
    assert [(c.a, c.b) for c in easy.comparisons] == list(LADDER_COMPARISONS)
    method_vs_pixels = easy.comparisons[0]
    assert method_vs_pixels.difference == pytest.approx(0.4, abs=0.01) and method_vs_pixels.p_holm >= method_vs_pixels.p_value
    # one Holm family: 4 ladders x 4 comparisons + the control's 2
    assert summary.holm_families["ladders"] == 4 * 4 + 2
    assert summary.control.share.mean == pytest.approx(0.62 + 0.02) and summary.control.uniform.mean == pytest.approx(0.2)
    assert [(c.a, c.b) for c in summary.control.comparisons] == [("share", "uniform"), ("share", "independent")]
    assert summary.n_at_plateau == 2 and len(summary.trainings) == 3
    # claims: verdicts derived from the ladders' comparisons, never typed
    claim = next(c for c in summary.claims if "structural training and re-ranking" in c.claim and "scenes" in c.claim)
    assert claim.evidence.a == "structural" and claim.evidence.b == "global baseline"
    assert claim.verdict == ("reproduced" if claim.evidence.supported else "not reproduced")
    assert "positive control" in ladder_lines(summary) and "2 of 3 trainings" in ladder_lines(summary)


def test_training_records_say_where_each_run_stopped():
    metas = [{"dataset": "scenes", "loss": "margin", "objective": "structural", "seed": 1, "best_epoch": 3,
              "last_epoch": 5, "stopped_at_plateau": True, "history": [{}] * 6, "params": {"train": {"epochs": 12}}},
             {"loss": "margin", "objective": "global", "seed": 0, "best_epoch": 11, "last_epoch": 11,
              "stopped_at_plateau": False, "history": [{}] * 12, "params": {"train": {"epochs": 12}}}]
    records = training_records(metas)
    assert records.to_dict("records") == [
        {"set": "scenes", "model": "margin_structural", "seed": 1, "selected_epoch": 3, "last_epoch": 5,
         "max_epochs": 12, "stopped_at_plateau": True},
        {"set": "mnist5k", "model": "margin_global", "seed": 0, "selected_epoch": 11, "last_epoch": 11,
         "max_epochs": 12, "stopped_at_plateau": False}]


def test_a_training_stops_at_its_plateau_and_records_it(tmp_path, smoke):
    """Two epochs of two steps with patience 1: the run records its last epoch and the plateau flag in the
    weights' metadata, as fit returned them."""
    from lib.studies.diml.train import train

    train_params = DimlTrainParams.model_validate(smoke.model_dump(include=set(DimlTrainParams.model_fields)))
    cfg = train_params.model_copy(update={"train": smoke.train.model_copy(update={"epochs": 3, "patience": 1,
                                                                                  "max_steps_per_epoch": 1})})
    run = train(cfg, "cross_entropy", "classifier", 0, tmp_path / "m.safetensors", progress=False)
    _, meta = load_model(tmp_path / "m.safetensors")
    assert meta["last_epoch"] == run["last_epoch"] == len(run["history"]) - 1
    assert meta["stopped_at_plateau"] == run["stopped_at_plateau"]
    assert run["stopped_at_plateau"] == (run["last_epoch"] < 2)
    assert run["best_epoch"] <= run["last_epoch"]
    with pytest.raises(ValueError, match="the bound is loss 'cross_entropy' with objective 'classifier'"):
        train(cfg, "margin", "classifier", 0, tmp_path / "x.safetensors", progress=False)


def test_the_classifier_bound_is_cross_entropy_of_a_cosine_classifier():
    torch.manual_seed(0)
    local = F.normalize(torch.randn(6, N_LOC, DIM), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    loss_fn = ClassifierLoss(DIM, 3)
    glob = F.normalize(local.mean(dim=1), dim=-1)
    logits = 16.0 * glob @ F.normalize(loss_fn.weight, dim=-1).T
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(6), labels].mean()
    torch.testing.assert_close(loss_fn(local, labels), expected)
    assert loss_fn.beta is None and not loss_fn.spec.structural


def test_raw_pixel_rows_rank_by_the_pixels_cosine(smoke):
    images = torch.rand(20, 1, 6, 6)
    labels = torch.tensor([5, 6] * 10)
    row, per_query = raw_pixel_seed(images, labels, smoke, seed=0)
    assert row[["loss", "variant"]].iloc[0].tolist() == ["pixels", "raw_pixels"]
    assert row["map_at_r"].iloc[0] == pytest.approx(per_query["map_at_r"].mean())
    flat = F.normalize(images.flatten(1), dim=1)
    similarity = flat @ flat.T
    similarity.fill_diagonal_(-2)
    nearest = similarity.argmax(dim=1)
    queries = per_query["query"].to_numpy()
    np.testing.assert_array_equal(per_query["recall_at_1"].to_numpy(),
                                  (labels[nearest] == labels).float().numpy()[queries])
