"""The attribution dispatch (lib.explain.attribute): each method on a target with a known answer, and all
targets of one explicand at once equal to one target at a time."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from lib.explain import attribute as attribution
from lib.explain.cocoa import (
    ContrastiveCorpusSimilarity,
    ContrastiveLabelFree,
    CorpusSimilarity,
    LabelFreeImportance,
)
from lib.models.convnet import conv_encoder

SETTINGS = SimpleNamespace(ig_steps=2, gradshap_samples=2, gradshap_stdev=0.1, rise_masks=8, rise_grid=4, rise_p=0.5,
                           batch_size=64)


def blocks(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` 28 x 28 one-channel images: a random filled rectangle each."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, 28, 28), np.float32)
    for image in images:
        top, left = rng.integers(2, 12, 2)
        image[0, top : top + rng.integers(5, 14), left : left + rng.integers(3, 14)] = rng.uniform(0.3, 1.0)
    return torch.from_numpy(images)


class Linear(nn.Module):
    """f(x) = sum(w * x) per image: Integrated Gradients is exactly (x - baseline) * w."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        return (x * self.weight).flatten(1).sum(dim=1)


class ClassProbability(nn.Module):
    """softmax(probe(h(x)))[:, cls]: a target that does not expose a shared explicand encoder."""

    def __init__(self, encoder, probe, cls):
        super().__init__()
        self.encoder, self.probe, self.cls = encoder, probe, cls

    def forward(self, x):
        return self.probe(self.encoder(x)).softmax(dim=1)[:, self.cls]


def test_integrated_gradients_of_a_linear_target_is_exact():
    weight = torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    x, baseline = torch.rand(3, 1, 6, 6), torch.rand(3, 1, 6, 6)
    maps = attribution.attribute(Linear(weight), "integrated_gradients", x, baseline, SETTINGS, seed=0)
    torch.testing.assert_close(maps, (x - baseline) * weight)


def test_rise_maps_are_centred_and_seeded():
    weight = torch.zeros(1, 1, 8, 8)
    weight[..., :4, :] = 1.0  # only the top half counts
    x = torch.ones(2, 1, 8, 8)
    settings = SimpleNamespace(**{**vars(SETTINGS), "rise_masks": 200})
    maps = attribution.attribute(Linear(weight), "rise", x, torch.zeros_like(x), settings, seed=3)
    torch.testing.assert_close(maps.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    assert (maps[..., :4, :].mean() > maps[..., 4:, :].mean()).item()
    torch.testing.assert_close(maps, attribution.attribute(Linear(weight), "rise", x, torch.zeros_like(x), settings, 3))


def test_an_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown attribution method 'lime'.*rise"):
        attribution.attribute(Linear(torch.ones(1)), "lime", torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1),
                              SETTINGS, seed=0)


@pytest.mark.parametrize("method", ["rise", "integrated_gradients"])
def test_attributions_of_all_targets_at_once_equal_one_target_at_a_time(method):
    torch.manual_seed(1)
    encoder = conv_encoder(1, width=4, n_blocks=3).eval()
    images = blocks(12, seed=3)
    x, corpus, foil = images[:1], images[1:5], images[5:]
    with torch.no_grad():
        reps = {name: encoder(part) for name, part in {"x": x, "corpus": corpus, "foil": foil}.items()}
    targets = {"label_free": LabelFreeImportance(encoder, reps["x"]),
               "contrastive_label_free": ContrastiveLabelFree(encoder, reps["foil"], reps["x"]),
               "corpus": CorpusSimilarity(encoder, reps["corpus"]),
               "cocoa": ContrastiveCorpusSimilarity(encoder, reps["corpus"], reps["foil"])}
    baseline = torch.zeros_like(x)
    together = attribution.attribute_targets(targets, method, x, baseline, SETTINGS, seed=4)
    assert list(together) == list(targets)
    for name, target in targets.items():
        torch.testing.assert_close(together[name], attribution.attribute(target, method, x, baseline, SETTINGS, seed=4),
                                   rtol=1e-4, atol=1e-6)


def test_rise_of_targets_without_a_shared_encoder_runs_one_target_at_a_time():
    torch.manual_seed(2)
    encoder = conv_encoder(1, width=4, n_blocks=3).eval()
    probe = torch.nn.Linear(encoder.out_dim, 10).eval()
    targets = {f"class {c}": ClassProbability(encoder, probe, c) for c in (0, 1)}
    x = blocks(1, seed=5)
    together = attribution.attribute_targets(targets, "rise", x, torch.zeros_like(x), SETTINGS, seed=6)
    for name, target in targets.items():
        torch.testing.assert_close(together[name], attribution.attribute(target, "rise", x, torch.zeros_like(x),
                                                                         SETTINGS, seed=6))


def test_gradient_shap_of_all_targets_at_once_gives_each_target_its_own_gradient():
    """Dot-product targets of a linear encoder are linear in x: without input noise GradientShap is exactly
    (x - baseline) * grad f_t, so each copy of each explicand must carry its own target's gradient."""
    torch.manual_seed(3)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 5, bias=False)).eval()
    corpus, foil = torch.randn(4, 5), torch.randn(6, 5)
    targets = {"corpus": CorpusSimilarity(encoder, corpus, similarity="dot"),
               "cocoa": ContrastiveCorpusSimilarity(encoder, corpus, foil, similarity="dot")}
    x, baseline = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    settings = SimpleNamespace(**{**vars(SETTINGS), "gradshap_stdev": 0.0, "gradshap_samples": 3})
    together = attribution.attribute_targets(targets, "gradient_shap", x, baseline[:1].expand_as(x), settings, seed=0)
    for name, target in targets.items():
        gradient = (encoder[1].weight.T @ target.direction).reshape(1, 1, 4, 4)
        torch.testing.assert_close(together[name], (x - baseline[:1]) * gradient, rtol=1e-5, atol=1e-6)
