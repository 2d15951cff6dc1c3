"""Tests of the model-randomisation sanity check: the randomised copy and the rank correlation."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr, truncnorm

from lib.explain.sanity import (
    cascading_randomisation,
    randomised_copy,
    rank_correlation,
)
from lib.models.convnet import conv_encoder


def test_rank_correlation_equals_scipy_spearman_per_map():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 1, 5, 5))
    b = a + rng.normal(scale=[[[[0.1]]], [[[1.0]]], [[[3.0]]], [[[0.5]]], [[[10.0]]], [[[0.0]]]], size=a.shape)
    a[0, 0, 0, :3] = a[0, 0, 0, 0]  # ties: average ranks
    for absolute in (False, True):
        got = rank_correlation(torch.from_numpy(a), torch.from_numpy(b), absolute=absolute)
        f = np.abs if absolute else (lambda x: x)
        expected = [spearmanr(f(a[i]).ravel(), f(b[i]).ravel()).statistic for i in range(len(a))]
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_rank_correlation_of_identical_reversed_and_constant_maps():
    a = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(rank_correlation(a, a.clone()), 1.0)
    np.testing.assert_allclose(rank_correlation(a, -a), -1.0)
    np.testing.assert_allclose(rank_correlation(a, 2 * a**3), 1.0)  # only the order counts
    np.testing.assert_allclose(rank_correlation(a, -a, absolute=True), 1.0)
    assert np.isnan(rank_correlation(torch.zeros(1, 4, 4), torch.randn(1, 4, 4))).all()
    with pytest.raises(ValueError, match="shape"):
        rank_correlation(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))


def test_randomised_copy_redraws_every_parameter_within_its_range_and_keeps_the_original():
    torch.manual_seed(0)
    model = conv_encoder(1, width=8, n_blocks=2)
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)  # BatchNorm's affine parameters: give them a spread to draw from
        model[1].bias.uniform_(-0.5, 0.5)
        model[4].bias.uniform_(-0.5, 0.5)
        model[4].weight.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    random = randomised_copy(model, torch.Generator().manual_seed(1))
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, before[name])  # the original is untouched
        new = dict(random.named_parameters())[name]
        assert new.shape == param.shape and not torch.equal(new, param), name
        assert param.min() <= new.min() and new.max() <= param.max(), name
    for name, buffer in model.named_buffers():  # running statistics are kept
        torch.testing.assert_close(dict(random.named_buffers())[name], buffer)
    again = randomised_copy(model, torch.Generator().manual_seed(1))
    for (name, p), q in zip(random.named_parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_randomised_weights_follow_the_truncated_normal_of_the_trained_tensor():
    layer = torch.nn.Linear(200, 100, bias=False)
    with torch.no_grad():
        layer.weight.normal_(0.3, 2.0, generator=torch.Generator().manual_seed(0))
    w = layer.weight.detach().double()
    mean, std, low, high = float(w.mean()), float(w.std()), float(w.min()), float(w.max())
    drawn = randomised_copy(layer, torch.Generator().manual_seed(2)).weight.detach().double().numpy().ravel()
    oracle = truncnorm((low - mean) / std, (high - mean) / std, loc=mean, scale=std)  # scipy's truncated normal
    np.testing.assert_allclose(drawn.mean(), oracle.mean(), atol=4 * oracle.std() / np.sqrt(drawn.size))
    np.testing.assert_allclose(drawn.std(), oracle.std(), rtol=0.02)
    assert not np.allclose(drawn, w.numpy().ravel())
    # the new weights are independent of the old ones: no rank correlation left
    assert abs(rank_correlation(drawn[None], w.numpy().ravel()[None])[0]) < 0.02


def test_constant_parameters_have_nothing_to_draw_from_and_stay():
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.bias.fill_(0.25)
    random = randomised_copy(layer, torch.Generator().manual_seed(0))
    torch.testing.assert_close(random.bias, layer.bias)
    assert not torch.equal(random.weight, layer.weight)


def test_cascading_randomisation_redraws_layers_from_the_top_and_leaves_lower_layers_trained():
    from lib.models.convnet import conv_blocks

    torch.manual_seed(0)
    model = conv_encoder(1, width=8, n_blocks=3)
    with torch.no_grad():
        for i in (1, 4, 7):  # BatchNorm's affine parameters: give them a spread to draw from
            model[i].weight.uniform_(0.5, 1.5)
            model[i].bias.uniform_(-0.5, 0.5)
    blocks = conv_blocks(model)
    assert blocks == [["6", "7"], ["3", "4"], ["0", "1"]]
    trained = {name: p.detach().clone() for name, p in model.named_parameters()}
    copies = cascading_randomisation(model, blocks, torch.Generator().manual_seed(1))
    assert len(copies) == 3
    for k, random in enumerate(copies, start=1):
        randomised = {f"{m}.{p}" for group in blocks[:k] for m in group for p in ("weight", "bias") if m in ("1", "4", "7")}
        randomised |= {f"{m}.weight" for group in blocks[:k] for m in group}
        for name, param in random.named_parameters():
            if name in randomised:
                assert not torch.equal(param, trained[name]), (k, name)
                torch.testing.assert_close(param, dict(copies[-1].named_parameters())[name])  # one draw per layer
            else:
                torch.testing.assert_close(param, trained[name])  # the layers below stay trained
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, trained[name])  # the original is untouched
    full = randomised_copy(model, torch.Generator().manual_seed(1))
    for p, q in zip(copies[-1].parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    with pytest.raises(ValueError, match="unknown"):
        cascading_randomisation(model, [["9x"]], torch.Generator())
