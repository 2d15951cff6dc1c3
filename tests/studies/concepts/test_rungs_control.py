"""Tests of the concepts study's ladder rungs, spatial split and TCAV positive control."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score

from lib.data.splits import Split
from lib.data.tiles import TileData, band_statistics
from lib.eval.spatial_cv import spatial_blocks
from lib.studies.concepts import control, rungs
from lib.studies.concepts.data import spatial_block_split


def test_band_statistics_match_a_naive_loop():
    images = torch.rand(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    got = band_statistics(images)
    for i in range(3):
        for c in range(4):
            pixels = [float(images[i, c, y, x]) for y in range(5) for x in range(6)]
            mean = sum(pixels) / len(pixels)
            sd = (sum((p - mean) ** 2 for p in pixels) / len(pixels)) ** 0.5
            assert got[i, c] == pytest.approx(mean) and got[i, 4 + c] == pytest.approx(sd)
    with pytest.raises(ValueError, match="n, C, H, W"):
        band_statistics(images[0])


def _grid(n_side: int, step: float = 100.0):
    x, y = np.meshgrid(np.arange(n_side) * step, np.arange(n_side) * step)
    return x.ravel(), y.ravel()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spatial_split_puts_every_tile_in_one_part_and_keeps_blocks_whole(seed):
    x, y = _grid(12)
    split = spatial_block_split(x, y, 300.0, 0.15, 0.2, seed)
    parts = np.concatenate([split.fit, split.val, split.test])
    assert sorted(parts) == list(range(144))  # no tile twice, none left out
    block = spatial_blocks(x, y, 300.0)
    owners = [set(block[p]) for p in (split.fit, split.val, split.test)]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])  # blocks intact
    assert len(split.test) >= 0.2 * 144 and len(split.val) >= 0.15 * 144
    assert len(split.test) < 0.2 * 144 + 9 and len(split.val) < 0.15 * 144 + 9  # at most one block over
    again = spatial_block_split(x, y, 300.0, 0.15, 0.2, seed)
    np.testing.assert_array_equal(again.test, split.test)


def test_spatial_split_rejects_blocks_too_large():
    x, y = _grid(4)
    with pytest.raises(ValueError, match="blocks"):
        spatial_block_split(x, y, 1000.0, 0.2, 0.2, 0)


def _tiles(n: int = 60, seed: int = 0) -> TileData:
    rng = np.random.default_rng(seed)
    fractions = rng.dirichlet(np.ones(3), n)
    images = torch.from_numpy(rng.random((n, 2, 4, 4), dtype=np.float32))
    factors = pd.DataFrame({"water_proximity": rng.random(n), "distance_to_centre_km": rng.random(n)})
    y = fractions @ np.array([1.0, -2.0, 3.0]) + 0.5 * factors["water_proximity"].to_numpy() + 0.1 * rng.normal(size=n)
    return TileData(images, y, "y", "", np.arange(n).astype(str), np.zeros(n), np.zeros(n), ["a", "b"],
                    pd.DataFrame(fractions, columns=["p", "q", "r"]), pd.Series({"p": 1.0, "q": -2.0, "r": 3.0}),
                    factors)


def test_rungs_match_scikit_learn_fits():
    data = _tiles()
    split = Split(np.arange(40), np.arange(40, 50), np.arange(50, 60))
    got = rungs.rung_scores(data, split, [0.1, 1.0])
    # the oracle: least squares on fit + validation, scored on test
    design = np.hstack([data.concepts.to_numpy(), data.factors.to_numpy()])
    train = np.arange(50)
    oracle = LinearRegression().fit(design[train], data.outcome[train]).predict(design[split.test])
    assert got["aerial_oracle"] == pytest.approx(r2_score(data.outcome[split.test], oracle))
    # band statistics: ridge on standardised features, the penalty with the better validation R^2
    z = band_statistics(data.images)
    z = (z - z[split.fit].mean(0)) / z[split.fit].std(0)
    fits = [Ridge(alpha=a).fit(z[split.fit], data.outcome[split.fit]) for a in (0.1, 1.0)]
    best = max(fits, key=lambda m: r2_score(data.outcome[split.val], m.predict(z[split.val])))
    assert got["band_statistics"] == pytest.approx(r2_score(data.outcome[split.test], best.predict(z[split.test])))
    assert got["aerial_oracle"] > got["band_statistics"]  # the outcome is made of the factors, not the pixels


def test_the_planted_head_has_the_planted_finite_differences():
    """More of the concept (taken from the others in proportion) moves h by a above the threshold and not at all
    below it, whatever the composition."""
    rng = np.random.default_rng(0)
    f = torch.from_numpy(rng.dirichlet(np.ones(4), 500))
    head = control.PlantedHead(torch.tensor([1.0, -2.0, 99.0, 3.0]), concept=2, threshold=0.5, effect=4.0)
    b = head.base(f.float()).numpy()
    # b by hand: the other classes' weights over their renormalised shares (the concept's weight is ignored)
    others = f.numpy()[:, [0, 1, 3]]
    np.testing.assert_allclose(b, (others / others.sum(1, keepdims=True)) @ np.array([1.0, -2.0, 3.0]), atol=1e-5)
    fd = control.finite_difference(head, f, 0.05)
    np.testing.assert_allclose(fd, np.where(b > 0.5, 4.0, 0.0), atol=1e-4)
    assert (b > 0.5).any() and (b <= 0.5).any()
    moved = control.substitute(f, 2, 0.05)
    np.testing.assert_allclose(moved.sum(1).numpy(), 1.0)
    np.testing.assert_allclose((moved[:, 2] - f[:, 2]).numpy(), 0.05)


def test_the_planted_model_responds_through_its_encoder():
    """The whole model's output is the head of the encoder's fractions; its gradient along the concept's
    fraction is a above the threshold and 0 below."""
    enc = control.FractionEncoder(2, 3, 4, torch.zeros(2), torch.ones(2))
    head = control.PlantedHead(torch.tensor([0.0, 1.0, -1.0]), concept=0, threshold=0.0, effect=3.0)
    x = torch.rand(8, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    f = enc(x)
    assert f.shape == (8, 3) and torch.allclose(f.sum(1), torch.ones(8))
    model = control.PlantedModel(enc, head)
    torch.testing.assert_close(model(x), head(f))
    g = f.detach().requires_grad_(True)
    head(g).sum().backward()
    upper = head.base(f.detach()) > 0
    # d h / d f_g = b'(f) along f_g (b depends on f_g via 1 / (1 - f_g)) + a * 1[b > t]
    rest = 1 - f.detach()[:, 0]
    expected = head.base(f.detach()) / rest + 3.0 * upper.float()
    torch.testing.assert_close(g.grad[:, 0], expected)
