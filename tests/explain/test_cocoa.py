"""COCOA explanation targets: definition, set algebra and use with captum."""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import GradientShap, IntegratedGradients
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lib.explain.cocoa import (
    ContrastiveCorpusSimilarity,
    ContrastiveLabelFree,
    CorpusSimilarity,
    LabelFreeImportance,
)
from lib.eval.encode import encode

DIM = 6
DTYPE = torch.float64


def make_encoder(seed: int = 0) -> nn.Module:
    """A small smooth CNN, (B, 1, 8, 8) -> (B, DIM), in float64."""
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 16, DIM),
        )
        .to(DTYPE)
        .eval()
    )


@pytest.fixture(scope="module")
def setup():
    encoder = make_encoder()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(5 + 11 + 9, 1, 8, 8, generator=generator, dtype=DTYPE)
    explicands, corpus, foil = images.split([5, 11, 9])
    return encoder, explicands, encode(encoder, corpus), encode(encoder, foil)


def naive_similarity(h: torch.Tensor, others: torch.Tensor, similarity: str) -> torch.Tensor:
    """Mean similarity of each row of h (B, D) to the rows of others (N, D), by loops."""
    rows = []
    for row in h:
        if similarity == "cosine":
            values = [F.cosine_similarity(row, other, dim=0) for other in others]
        else:
            values = [row @ other for other in others]
        rows.append(torch.stack(values).mean())
    return torch.stack(rows)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_mean_and_pairwise_forms_agree_with_definition(setup, similarity):
    encoder, x, corpus, foil = setup
    x = x.clone().requires_grad_()
    values, grads = [], []
    for form in ("mean", "pairwise"):
        f = ContrastiveCorpusSimilarity(encoder, corpus, foil, similarity, form=form)(x)
        (grad,) = torch.autograd.grad(f.sum(), x)
        values.append(f)
        grads.append(grad)
    h = encoder(x)
    expected = naive_similarity(h, corpus, similarity) - naive_similarity(h, foil, similarity)
    assert values[0].shape == (5,)
    torch.testing.assert_close(values[0], expected)
    torch.testing.assert_close(values[1], expected)
    torch.testing.assert_close(grads[0], grads[1])


@settings(max_examples=25, deadline=None, database=None)
@given(
    sizes=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    seed=st.integers(0, 2**16),
    similarity=st.sampled_from(["cosine", "dot"]),
)
def test_target_is_linear_in_the_corpus_and_foil_sets(sizes, seed, similarity):
    """f(A u B, F) is the size-weighted mix of f(A, F) and f(B, F); same for foils."""
    generator = torch.Generator().manual_seed(seed)
    a, b, foil = (torch.randn(n, DIM, dtype=DTYPE, generator=generator) for n in sizes)
    x = torch.randn(4, DIM, dtype=DTYPE, generator=generator)

    def f(corpus, foil_set):
        return ContrastiveCorpusSimilarity(nn.Identity(), corpus, foil_set, similarity)(x)

    weight_a, weight_b = len(a) / (len(a) + len(b)), len(b) / (len(a) + len(b))
    torch.testing.assert_close(
        f(torch.cat([a, b]), foil), weight_a * f(a, foil) + weight_b * f(b, foil)
    )
    torch.testing.assert_close(
        f(foil, torch.cat([a, b])), weight_a * f(foil, a) + weight_b * f(foil, b)
    )
    # Swapping corpus and foil flips the sign; identical sets cancel.
    torch.testing.assert_close(f(a, foil), -f(foil, a))
    torch.testing.assert_close(f(a, a), torch.zeros(4, dtype=DTYPE))
    # The contrastive target is the difference of the two corpus similarities.
    corpus_only = CorpusSimilarity(nn.Identity(), a, similarity)(x)
    foil_only = CorpusSimilarity(nn.Identity(), foil, similarity)(x)
    torch.testing.assert_close(f(a, foil), corpus_only - foil_only)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_shared_elements_shrink_the_contrast(similarity):
    """Adding S to both sets of equal size n scales f by n / (n + |S|)."""
    generator = torch.Generator().manual_seed(3)
    corpus, foil, shared = (
        torch.randn(n, DIM, dtype=DTYPE, generator=generator) for n in (4, 4, 6)
    )
    x = torch.randn(3, DIM, dtype=DTYPE, generator=generator)
    plain = ContrastiveCorpusSimilarity(nn.Identity(), corpus, foil, similarity)(x)
    padded = ContrastiveCorpusSimilarity(
        nn.Identity(), torch.cat([corpus, shared]), torch.cat([foil, shared]), similarity
    )(x)
    torch.testing.assert_close(padded, plain * 4 / 10)


def test_cosine_target_ignores_representation_norms():
    generator = torch.Generator().manual_seed(4)
    corpus, foil, x = (torch.randn(n, DIM, dtype=DTYPE, generator=generator) for n in (5, 3, 2))
    scales = torch.rand(5, 1, dtype=DTYPE, generator=generator) + 0.1
    target = ContrastiveCorpusSimilarity(nn.Identity(), corpus, foil)
    rescaled = ContrastiveCorpusSimilarity(nn.Identity(), corpus * scales, foil)
    torch.testing.assert_close(target(x), rescaled(x))
    torch.testing.assert_close(target(x), target(7.0 * x))


def test_separate_explicand_encoder(setup):
    """Corpus and foil from one encoder, explicands from another (CLIP-style)."""
    encoder, x, corpus, foil = setup
    image_encoder = make_encoder(seed=5)
    target = ContrastiveCorpusSimilarity(encoder, corpus, foil, explicand_encoder=image_encoder)
    reference = ContrastiveCorpusSimilarity(image_encoder, corpus, foil)
    torch.testing.assert_close(target(x), reference(x))
    assert set(dict(target.named_children())) == {"encoder", "explicand_encoder"}


def test_buffers_are_detached_copies(setup):
    encoder, x, corpus, foil = setup
    corpus = corpus.clone().requires_grad_()
    target = ContrastiveCorpusSimilarity(encoder, corpus, foil)
    assert not target.corpus_repr.requires_grad and not target.direction.requires_grad
    assert {"corpus_repr", "foil_repr", "direction"} <= set(target.state_dict())
    before = target(x)
    with torch.no_grad():
        corpus.add_(1.0)
    torch.testing.assert_close(target(x), before)


def test_invalid_arguments(setup):
    encoder, _, corpus, foil = setup
    with pytest.raises(ValueError):
        ContrastiveCorpusSimilarity(encoder, corpus, foil, similarity="euclidean")
    with pytest.raises(ValueError):
        ContrastiveCorpusSimilarity(encoder, corpus, foil[:, :3])
    with pytest.raises(ValueError):
        ContrastiveCorpusSimilarity(encoder, corpus[:0], foil)


def test_encode_is_chunk_independent_and_gradient_free(setup):
    encoder, x, _, _ = setup
    whole = encode(encoder, x, batch_size=100)
    torch.testing.assert_close(encode(encoder, x, batch_size=2), whole)
    assert not whole.requires_grad
    torch.testing.assert_close(whole, encoder(x).detach())


def test_label_free_targets(setup):
    encoder, x, _, foil = setup
    own = encode(encoder, x)
    h = encoder(x)
    torch.testing.assert_close(LabelFreeImportance(encoder)(x, own), (h * own).sum(dim=1))
    torch.testing.assert_close(LabelFreeImportance(encoder, own)(x), (h * own).sum(dim=1))
    # A single stored reference is shared by every row.
    torch.testing.assert_close(LabelFreeImportance(encoder, own[0])(x), h @ own[0])
    expected = F.cosine_similarity(h, own, dim=1) - naive_similarity(h, foil, "cosine")
    torch.testing.assert_close(ContrastiveLabelFree(encoder, foil)(x, own), expected)
    with pytest.raises(ValueError):
        LabelFreeImportance(encoder)(x)
    with pytest.raises(ValueError):
        LabelFreeImportance(encoder, own[:2])(x)


def test_label_free_reference_flows_through_captum(setup):
    """Several explicands in one IG call equal one call per explicand."""
    encoder, x, _, _ = setup
    own = encode(encoder, x)
    batched = IntegratedGradients(LabelFreeImportance(encoder)).attribute(
        x, additional_forward_args=(own,), n_steps=16
    )
    single = torch.cat(
        [
            IntegratedGradients(LabelFreeImportance(encoder, reference)).attribute(
                explicand[None], n_steps=16
            )
            for explicand, reference in zip(x, own)
        ]
    )
    torch.testing.assert_close(batched, single)


def all_targets(encoder, corpus, foil, own):
    """(target, additional_forward_args) pairs for every target class."""
    return [
        (ContrastiveCorpusSimilarity(encoder, corpus, foil), None),
        (ContrastiveCorpusSimilarity(encoder, corpus, foil, "dot", form="pairwise"), None),
        (CorpusSimilarity(encoder, corpus), None),
        (LabelFreeImportance(encoder), (own,)),
        (ContrastiveLabelFree(encoder, foil), (own,)),
    ]


def test_captum_methods_return_input_shaped_attributions(setup):
    encoder, x, corpus, foil = setup
    background = torch.randn(4, 1, 8, 8, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
    for target, extra in all_targets(encoder, corpus, foil, encode(encoder, x)):
        assert target(x, *(extra or ())).shape == (len(x),)
        ig = IntegratedGradients(target).attribute(x, additional_forward_args=extra, n_steps=8)
        torch.manual_seed(0)
        shap = GradientShap(target).attribute(
            x, baselines=background, n_samples=3, additional_forward_args=extra
        )
        for attributions in (ig, shap):
            assert attributions.shape == x.shape
            assert attributions.dtype == x.dtype
            assert torch.isfinite(attributions).all()


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_integrated_gradients_completeness(setup, similarity):
    """sum_i IG_i(x) = f(x) - f(baseline) (Sundararajan et al. 2017, completeness)."""
    encoder, x, corpus, foil = setup
    target = ContrastiveCorpusSimilarity(encoder, corpus, foil, similarity)
    baseline = torch.zeros_like(x)
    attributions = IntegratedGradients(target).attribute(x, baselines=baseline, n_steps=64)
    with torch.no_grad():
        expected = target(x) - target(baseline)
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), expected, rtol=1e-4, atol=1e-5)
