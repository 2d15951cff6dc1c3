"""Tests of the TCAV layer (Kim et al., ICML 2018) in lib.explain.tcav."""

import os
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch
from captum.concept import TCAV
from captum.concept._utils.common import concepts_to_str
from torch import nn
from torch.utils.data import TensorDataset

from lib.explain.tcav import (
    LogisticCAVClassifier,
    compute_cavs,
    concept_sensitivity,
    experimental_sets,
    first_runs,
    layer_gradients,
    make_concept,
    outcome_intervals,
    random_concepts,
    score_by_interval,
    score_runs,
    significance_table,
    significant_concepts,
    tcav_by_interval,
    tcav_magnitude,
    tcav_score,
)

DIM = 8
IMAGE_SHAPE = (2, 2, 2)  # "images" whose flattened pixels are DIM long


class LinearToy(nn.Module):
    """images -> flatten -> ``layer``: h = Q x (Q orthogonal) -> ``head``: y = u . h.

    The output grows along the known unit direction ``u`` of the layer's
    activation space, so the CAV of a concept lying along ``u`` is ``u``.
    """

    def __init__(self, q: torch.Tensor, u: torch.Tensor, relu: bool = False) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.layer = nn.Linear(DIM, DIM, bias=False)
        self.head = nn.Linear(DIM, 1, bias=False)
        self.relu = relu
        with torch.no_grad():
            self.layer.weight.copy_(q)
            self.head.weight.copy_(u[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.layer(self.flatten(x)))
        return torch.relu(out) if self.relu else out


class MLPToy(nn.Module):
    """A nonlinear head, so layer gradients differ between inputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.flatten = nn.Flatten()
        self.layer = nn.Linear(DIM, DIM)
        self.head = nn.Sequential(nn.Tanh(), nn.Linear(DIM, 4), nn.Tanh(), nn.Linear(4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.flatten(x)))


def make_world(seed: int = 0, n_concept: int = 150):
    """Orthogonal Q, unit u, concept images along +u / -u, an isotropic pool."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=gen, dtype=torch.float64))
    q = q.float()
    u = torch.randn(DIM, generator=gen)
    u = u / u.norm()

    def images_with_activations(h):  # layer(x) = Q x = h  <=>  x = Q^T h
        return (h @ q).reshape(-1, *IMAGE_SHAPE)

    def along(sign):
        scale = 3 + 2 * torch.rand(n_concept, 1, generator=gen)
        noise = 0.3 * torch.randn(n_concept, DIM, generator=gen)
        return images_with_activations(sign * scale * u + noise)

    pool = torch.randn(600, *IMAGE_SHAPE, generator=gen)
    inputs = torch.randn(300, *IMAGE_SHAPE, generator=gen)
    concepts = [make_concept(0, "along_u", along(1)), make_concept(1, "against_u", along(-1))]
    return q, u, concepts, pool, inputs


@pytest.fixture(scope="module")
def linear_world():
    q, u, concepts, pool, inputs = make_world()
    model = LinearToy(q, u).eval()
    randoms = random_concepts(pool, n_runs=5, set_size=150, seed=1)
    cavs = compute_cavs(model, "layer", concepts, randoms)
    return model, u, concepts, randoms, inputs, cavs


# --------------------------------------------------------------------------
# Pure score functions
# --------------------------------------------------------------------------


def test_sensitivity_and_scores_by_hand():
    gradients = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, -1.0]])
    cav = torch.tensor([2.0, 0.0])  # unit CAV is (1, 0)
    s = concept_sensitivity(gradients, cav)
    assert torch.equal(s, torch.tensor([1.0, 0.0, -3.0, 0.0]))
    assert tcav_score(s).item() == pytest.approx(0.25)  # zero is not positive
    assert tcav_magnitude(s).item() == pytest.approx(1.0 / 4.0)

    several = concept_sensitivity(gradients, torch.stack([cav, torch.tensor([0.0, -5.0])]))
    assert several.shape == (4, 2)
    assert torch.allclose(several[:, 1], torch.tensor([0.0, -2.0, 0.0, 1.0]))
    assert torch.allclose(tcav_score(several), torch.tensor([0.25, 0.25], dtype=torch.float64))
    assert torch.allclose(tcav_magnitude(several), torch.tensor([0.25, 1 / 3], dtype=torch.float64))


def test_sensitivity_shape_errors():
    with pytest.raises(ValueError, match=r"gradients \(n, F\)"):
        concept_sensitivity(torch.zeros(4, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"gradients \(n, F\)"):
        concept_sensitivity(torch.zeros(4), torch.zeros(4))


# --------------------------------------------------------------------------
# Concepts and experimental sets
# --------------------------------------------------------------------------


def test_concepts_from_tensors_and_datasets():
    images = torch.arange(5 * 8.0).reshape(5, *IMAGE_SHAPE)
    from_tensor = make_concept(3, "c", images, batch_size=2)
    from_dataset = make_concept(4, "d", TensorDataset(images, torch.zeros(5)), batch_size=2)
    for concept in (from_tensor, from_dataset):
        assert torch.equal(torch.cat(list(concept.data_iter)), images)
    with pytest.raises(ValueError, match="must be non-empty"):
        make_concept(5, "a/b", images)
    with pytest.raises(ValueError, match="no examples"):
        make_concept(5, "e", images[:0])


def test_random_concepts_seeded_and_distinct():
    pool = torch.randn(100, *IMAGE_SHAPE)
    first = random_concepts(pool, n_runs=3, set_size=10, seed=7)
    again = random_concepts(pool, n_runs=3, set_size=10, seed=7)
    assert [c.name for c in first] == ["random_0", "random_1", "random_2", "random_3"]
    assert len({c.id for c in first}) == 4
    batches = [torch.cat(list(c.data_iter)) for c in first]
    assert all(torch.equal(a, torch.cat(list(b.data_iter))) for a, b in zip(batches, again))
    assert not torch.equal(batches[0], batches[1])
    with pytest.raises(ValueError, match="n_runs >= 2"):
        random_concepts(pool, n_runs=1)
    with pytest.raises(ValueError, match="exceeds the pool"):
        random_concepts(pool, set_size=101)


def test_experimental_sets_layout():
    pool = torch.randn(20, *IMAGE_SHAPE)
    randoms = random_concepts(pool, n_runs=2, set_size=5)
    concept = make_concept(0, "c", pool[:5])
    sets = experimental_sets([concept], randoms)
    # Each null run has its own positive random set and shares its negative with the concept's run.
    assert [[c.name for c in s] for s in sets] == [
        ["c", "random_1"], ["c", "random_2"], ["random_0", "random_1"], ["random_1", "random_2"],
    ]
    with pytest.raises(ValueError, match="ids must be unique"):
        experimental_sets([make_concept(randoms[1].id, "x", pool[:5])], randoms)
    with pytest.raises(ValueError, match="at least 3 random"):
        experimental_sets([concept], randoms[:2])


# --------------------------------------------------------------------------
# CAVs and scores on toy models
# --------------------------------------------------------------------------


def test_cav_aligns_with_known_direction(linear_world):
    _, u, _, _, _, cavs = linear_world
    assert sorted({run for _, run in cavs}) == list(range(5))
    for (concept, _), cav in cavs.items():
        cosine = float(cav @ u / cav.norm())
        if concept == "along_u":
            assert cosine > 0.9
        elif concept == "against_u":
            assert cosine < -0.9


def test_scores_one_for_concept_zero_for_negation(linear_world):
    model, _, _, _, inputs, cavs = linear_world
    runs = score_runs(layer_gradients(model, "layer", inputs), cavs)
    assert list(runs.columns) == ["concept", "run", "score", "magnitude"]
    per_concept = runs.groupby("concept")[["score", "magnitude"]].mean()
    assert per_concept.loc["along_u"].tolist() == [1.0, 1.0]
    assert per_concept.loc["against_u"].tolist() == [0.0, 0.0]


def test_agrees_with_captum_tcav():
    _, _, concepts, pool, inputs = make_world(seed=2, n_concept=60)
    model = MLPToy().eval()
    randoms = random_concepts(pool, n_runs=3, set_size=60, seed=3)
    cavs = compute_cavs(model, "layer", concepts[:1], randoms)
    gradients = layer_gradients(model, "layer", inputs, batch_size=64)
    ours = score_runs(gradients, cavs).set_index(["concept", "run"])

    sets = experimental_sets(concepts[:1], randoms)
    with tempfile.TemporaryDirectory() as directory:
        captum_tcav = TCAV(
            model, ["layer"], classifier=LogisticCAVClassifier(), save_path=directory
        )
        captum_scores = captum_tcav.interpret(inputs, sets, target=0)
    assert ours["score"].between(0, 1, inclusive="neither").any()  # not all 0 or 1
    for index, (concept, negative) in enumerate(sets):
        key = concepts_to_str([concept, negative])
        run = index % 3
        name = concept.name if index < 3 else randoms[0].name  # null runs: random_k vs random_k+1
        stats = captum_tcav.cavs[key]["layer"].stats
        captum_cav = stats["weights"][list(stats["classes"]).index(concept.id)]
        assert torch.equal(captum_cav, cavs[(name, run)])
        result = captum_scores[key]["layer"]
        assert ours.loc[(name, run), "score"] == pytest.approx(
            result["sign_count"][0].item(), abs=1e-6  # captum averages in float32
        )
        # captum's "magnitude" is the mean raw (unnormalised-CAV) derivative.
        raw_mean = concept_sensitivity(gradients, captum_cav).mean() * captum_cav.norm()
        assert raw_mean.item() == pytest.approx(result["magnitude"][0].item(), rel=1e-4)


def test_no_cache_reuse_across_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    q, u, concepts, pool, _ = make_world(seed=4, n_concept=40)
    randoms = random_concepts(pool, n_runs=2, set_size=40)
    first = compute_cavs(LinearToy(q, u), "layer", concepts[:1], randoms)
    second = compute_cavs(LinearToy(-q, u), "layer", concepts[:1], randoms)
    assert os.listdir(tmp_path) == []  # nothing left in the working directory
    for key in first:
        assert not torch.allclose(first[key], second[key])

    kept = tmp_path / "cavs"
    compute_cavs(LinearToy(q, u), "layer", concepts[:1], randoms, save_path=kept)
    assert any(path.suffix == ".pkl" for path in kept.rglob("*"))


# --------------------------------------------------------------------------
# Outcome intervals and significance
# --------------------------------------------------------------------------


def test_outcome_intervals_quantiles():
    y = torch.arange(100.0)[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    index, edges = outcome_intervals(y, 4)
    assert index.dtype == np.int64 and index.shape == (100,)
    assert np.bincount(index).tolist() == [25, 25, 25, 25]
    assert edges[0] == 0 and edges[-1] == 99 and len(edges) == 5
    assert index[y.argmin()] == 0 and index[y.argmax()] == 3
    for k in range(4):
        members = y.numpy()[index == k]
        assert members.min() >= edges[k] and members.max() <= edges[k + 1]
    column, _ = outcome_intervals(y[:, None].numpy(), 4)
    assert np.array_equal(column, index)
    with pytest.raises(ValueError, match="n_intervals"):
        outcome_intervals(y, 0)
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, 1\)"):
        outcome_intervals(torch.zeros(4, 2), 2)


def planted_runs(seed: int = 0, n_runs: int = 10) -> pd.DataFrame:
    """Synthetic scores: 'planted' is high in interval 1 only, 'null' never."""
    rng = np.random.default_rng(seed)
    rows = []
    for interval in range(3):
        for concept in ("random", "planted", "null"):
            centre = 0.9 if (concept == "planted" and interval == 1) else 0.5
            for run, score in enumerate(np.clip(rng.normal(centre, 0.08, n_runs), 0, 1)):
                rows.append((concept, interval, run, score, score))
    return pd.DataFrame(rows, columns=["concept", "interval", "run", "score", "magnitude"])


def test_significance_finds_planted_interval_only():
    table = significance_table(planted_runs(), "random", alpha=0.05)
    flags = table.groupby(["concept", "interval"])["significant"].agg(["all", "any"])
    assert (flags["all"] == flags["any"]).all()  # one verdict per (concept, interval)
    significant = set(flags.index[flags["all"]])
    assert significant == {("planted", 1)}
    assert table.loc[table["concept"] == "random", "p_value"].isna().all()
    assert table.attrs["threshold"] == pytest.approx(0.05 / 6)

    summary = significant_concepts(table)
    assert summary[["concept", "interval"]].values.tolist() == [["planted", 1]]
    assert summary["score"].iloc[0] > 0.8


def test_bonferroni_option_and_no_interval_column():
    runs = planted_runs(seed=1)
    table = significance_table(runs, "random", alpha=0.05, bonferroni=True)
    p_values = table.dropna(subset="p_value").groupby(["concept", "interval"])["p_value"].first()
    uncorrected = significance_table(runs, "random", alpha=0.05, bonferroni=False)
    assert uncorrected.attrs["threshold"] == 0.05
    assert (uncorrected["significant"] == (uncorrected["p_value"] < 0.05)).all()
    assert (table["significant"] <= uncorrected["significant"]).all()
    assert p_values[("planted", 1)] < 1e-6

    one_interval = runs[runs["interval"] == 1].drop(columns="interval")
    single = significance_table(one_interval, "random")
    assert set(single.loc[single["significant"], "concept"]) == {"planted"}
    with pytest.raises(ValueError, match="null concept 'nope'"):
        significance_table(runs, "nope")


def test_tcav_by_interval_end_to_end_and_deterministic():
    q, u, concepts, pool, inputs = make_world(seed=5, n_concept=80)
    model = LinearToy(q, u, relu=True).eval()  # flat (zero gradient) where u . h < 0
    randoms = random_concepts(pool, n_runs=4, set_size=80, seed=6)
    y = model.head(model.layer(model.flatten(inputs))).detach()  # u . h, before the relu

    first = tcav_by_interval(model, "layer", inputs, y, concepts, randoms, n_intervals=4)
    second = tcav_by_interval(model, "layer", inputs, y, concepts, randoms, n_intervals=4)
    pd.testing.assert_frame_equal(first, second, check_exact=True)

    assert list(first.columns) == [
        "concept", "interval", "run", "score", "magnitude", "p_value", "significant",
    ]
    assert len(first) == 3 * 4 * 4  # (2 concepts + null) x intervals x runs
    assert len(first.attrs["interval_edges"]) == 5
    scores = first.groupby(["concept", "interval"])["score"].mean()
    # The lowest quarter has u . h < 0: the relu is off, no gradient, no concept.
    assert scores.xs(0, level="interval").eq(0).all()
    assert not first.loc[first["interval"] == 0, "significant"].any()
    assert scores[("along_u", 3)] == 1.0 and scores[("against_u", 3)] == 0.0


def test_first_runs_equal_cavs_trained_with_fewer_random_sets():
    """Nested random sets: the first R runs of R_max are the CAVs of the first R + 1 random sets."""
    q, u, concepts, pool, inputs = make_world(seed=7, n_concept=40)
    model = LinearToy(q, u).eval()
    randoms = random_concepts(pool, n_runs=5, set_size=40, seed=8)
    every = compute_cavs(model, "layer", concepts, randoms)
    fewer = compute_cavs(model, "layer", concepts, randoms[:4])  # 3 runs, trained on their own
    chosen = first_runs(every, 3)
    assert set(chosen) == set(fewer)
    for key, cav in fewer.items():
        torch.testing.assert_close(chosen[key], cav)
    with pytest.raises(ValueError, match="n_runs must lie in 2 .. 5"):
        first_runs(every, 6)

    y = model(inputs).detach()[:, 0]
    direct = tcav_by_interval(model, "layer", inputs, y, concepts, randoms[:4], n_intervals=2)
    scored = score_by_interval(model, "layer", inputs, y, chosen, randoms[0].name, n_intervals=2)
    pd.testing.assert_frame_equal(direct, scored, check_exact=True)
