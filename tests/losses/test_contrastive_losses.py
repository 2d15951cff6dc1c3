"""InfoNCE, NT-Xent and CLIP (lib.losses.contrastive) against loops written from the papers' formulas and against
pytorch-metric-learning's NTXentLoss where the forms coincide."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import NTXentLoss

from lib.losses.contrastive import GroupedClipLoss, LogitScale, clip_loss, info_nce, nt_xent


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u @ v / (u.norm() * v.norm())


def naive_info_nce(queries, keys, positives, temperature, leave_out_self=False):
    """van den Oord et al. Eq. 4, one query at a time, with the positive's index p(i)."""
    total = 0.0
    for i in range(len(queries)):
        candidates = [j for j in range(len(keys)) if not (leave_out_self and j == i)]
        denominator = sum(torch.exp(cosine(queries[i], keys[j]) / temperature) for j in candidates)
        total = total - torch.log(torch.exp(cosine(queries[i], keys[positives[i]]) / temperature) / denominator)
    return total / len(queries)


def naive_nt_xent(z1, z2, temperature):
    """SimCLR Algorithm 1, one anchor at a time."""
    z = torch.cat([z1, z2])
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(torch.exp(cosine(z[i], z[k]) / temperature) for k in range(2 * n) if k != i)
        total = total - torch.log(torch.exp(cosine(z[i], z[j]) / temperature) / denominator)
    return total / (2 * n)


def naive_clip(image, text, scale):
    """CLIP Fig. 3, row by row and column by column."""
    image = image / image.norm(dim=1, keepdim=True)
    text = text / text.norm(dim=1, keepdim=True)
    n = len(image)

    def cross_entropy(queries, keys):
        terms = []
        for i in range(n):
            denominator = sum(torch.exp(scale * queries[i] @ keys[k]) for k in range(n))
            terms.append(-torch.log(torch.exp(scale * queries[i] @ keys[i]) / denominator))
        return sum(terms) / n

    return (cross_entropy(image, text) + cross_entropy(text, image)) / 2


def randn(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ the family
@pytest.mark.parametrize(("n", "m", "temperature"), [(2, 2, 0.1), (5, 5, 0.5), (4, 9, 1.0)])
def test_info_nce_matches_the_formula_with_any_positive(n, m, temperature):
    queries, keys = randn(n, 6, seed=n), randn(m, 6, seed=m + 10)
    pairs = info_nce(queries, keys[:n], temperature=temperature)
    torch.testing.assert_close(pairs, naive_info_nce(queries, keys[:n], list(range(n)), temperature))
    positives = torch.randint(m, (n,), generator=torch.Generator().manual_seed(1))  # e.g. a queue of M keys
    torch.testing.assert_close(info_nce(queries, keys, temperature=temperature, positives=positives),
                               naive_info_nce(queries, keys, positives.tolist(), temperature))


def test_info_nce_of_one_set_against_itself_leaves_each_query_out():
    z = randn(6, 4, seed=3)
    positives = torch.tensor([1, 0, 3, 2, 5, 4])
    torch.testing.assert_close(info_nce(z, temperature=0.3, positives=positives),
                               naive_info_nce(z, z, positives.tolist(), 0.3, leave_out_self=True))


def test_a_logit_scale_is_one_over_the_temperature():
    queries, keys = randn(5, 3, seed=1), randn(5, 3, seed=2)
    torch.testing.assert_close(info_nce(queries, keys, logit_scale=4.0), info_nce(queries, keys, temperature=0.25))


def test_info_nce_rewards_aligned_pairs_and_is_scale_invariant():
    u = randn(7, 5, seed=1)
    assert float(info_nce(u, u, temperature=0.01)) < 1e-3
    assert float(info_nce(u, u.roll(1, dims=0), temperature=0.01)) > 10.0
    torch.testing.assert_close(info_nce(3 * u, 0.5 * u.flip(1), temperature=0.2),
                               info_nce(u, u.flip(1), temperature=0.2))


@pytest.mark.parametrize(("n", "temperature"), [(2, 0.1), (6, 0.5), (9, 1.0)])
def test_one_directional_info_nce_equals_pytorch_metric_learnings_ntxent(n, temperature):
    """With u_i's pair label i and ref_emb = v, PML's positives are (u_i, v_i) and its negatives (u_i, v_j)."""
    u, v = randn(n, 8, seed=n), randn(n, 8, seed=n + 1)
    labels = torch.arange(n)
    # (a separate label tensor: PML takes ref_labels that *are* labels to mean u against itself, diagonal left out)
    reference = NTXentLoss(temperature=temperature)(u, labels, ref_emb=v, ref_labels=labels.clone())
    torch.testing.assert_close(info_nce(u, v, temperature=temperature), reference)


def test_bad_inputs_are_named():
    u = randn(4, 3)
    with pytest.raises(ValueError, match="exactly one of temperature and logit_scale"):
        info_nce(u, u)
    with pytest.raises(ValueError, match="exactly one"):
        info_nce(u, u, temperature=0.1, logit_scale=10.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        info_nce(u, u, temperature=0.0)
    with pytest.raises(ValueError, match=r"queries must be \(N, D\)"):
        info_nce(u[0], u[0], temperature=0.1)
    with pytest.raises(ValueError, match=r"keys must be \(M, 3\)"):
        info_nce(u, randn(4, 5), temperature=0.1)
    with pytest.raises(ValueError, match="a negative besides"):
        info_nce(u[:1], u[:1], temperature=0.1)
    with pytest.raises(ValueError, match=r"positives must be one key index per query, shape \(4,\)"):
        info_nce(u, u, temperature=0.1, positives=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="symmetric"):
        info_nce(u, randn(5, 3), temperature=0.1, symmetric=True)


# ------------------------------------------------------------------ NT-Xent
@pytest.mark.parametrize(("n", "dim", "temperature"), [(2, 3, 0.5), (4, 8, 0.1), (7, 5, 1.0)])
def test_nt_xent_matches_the_formula_and_pytorch_metric_learning(n, dim, temperature):
    z1, z2 = randn(2, n, dim, seed=n)
    loss = nt_xent(z1, z2, temperature)
    assert loss.shape == ()
    torch.testing.assert_close(loss, naive_nt_xent(z1, z2, temperature))
    torch.testing.assert_close(nt_xent(z2, z1, temperature), loss)
    # PML: the 2N views labelled by their image; every other view of another image a negative.
    views = torch.arange(n).repeat(2)
    torch.testing.assert_close(loss, NTXentLoss(temperature=temperature)(torch.cat([z1, z2]), views))


def test_nt_xent_keeps_simclrs_float_operations_bit_for_bit():
    """Trained SimCLR weights (cocoa) reproduce bit for bit: z z^T / tau on one normalised stack, the diagonal
    masked, cross-entropy against the other view; the value and the gradients are compared exactly."""
    z1, z2 = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0)).unbind()
    ours = [t.clone().requires_grad_() for t in (z1, z2)]
    written_out = [t.clone().requires_grad_() for t in (z1, z2)]
    loss = nt_xent(*ours, temperature=0.5)
    z = F.normalize(torch.cat(written_out), dim=1)
    logits = (z @ z.T / 0.5).masked_fill(torch.eye(32, dtype=torch.bool), float("-inf"))
    expected = F.cross_entropy(logits, torch.arange(32).roll(16))
    assert torch.equal(loss, expected)
    loss.backward()
    expected.backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, written_out))


def test_nt_xent_gradients_flow_and_shapes_are_checked():
    z1, z2 = randn(2, 5, 4, seed=2).unbind()
    z1.requires_grad_()
    nt_xent(z1, z2).backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="two"):
        nt_xent(z1, z2[:3])
    with pytest.raises(ValueError, match="a negative besides"):  # one image: its twin is the only other view
        nt_xent(z1[:1], z2[:1])


# ------------------------------------------------------------------ CLIP
@pytest.mark.parametrize(("n", "dim", "scale"), [(2, 3, 1.0), (5, 8, 1 / 0.07), (9, 4, 3.0)])
def test_clip_loss_matches_the_formula_and_is_symmetric(n, dim, scale):
    image, text = randn(2, n, dim, seed=n)
    loss = clip_loss(image, text, scale)
    assert loss.shape == ()
    torch.testing.assert_close(loss, naive_clip(image, text, scale))
    torch.testing.assert_close(clip_loss(text, image, scale), loss)
    both_ways = (info_nce(image, text, temperature=1 / scale) + info_nce(text, image, temperature=1 / scale)) / 2
    torch.testing.assert_close(loss, both_ways)


def test_clip_loss_keeps_clips_float_operations_bit_for_bit():
    """cocoa's image-text weights reproduce: the scale multiplies the normalised images before the product."""
    image, text = torch.randn(2, 10, 6, generator=torch.Generator().manual_seed(0)).unbind()
    scale = LogitScale(0.07)
    image.requires_grad_()
    loss = clip_loss(image, text, scale())
    logits = scale() * F.normalize(image, dim=1) @ F.normalize(text, dim=1).T
    labels = torch.arange(10)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert torch.equal(loss, expected)
    (ours,) = torch.autograd.grad(loss, image)
    (written_out,) = torch.autograd.grad(expected, image)
    assert torch.equal(ours, written_out)


def test_clip_loss_rewards_aligned_pairs():
    embeddings = torch.eye(6, dtype=torch.float64)
    assert clip_loss(embeddings, embeddings, 100.0) < 1e-6
    assert clip_loss(embeddings, embeddings.roll(1, dims=0), 100.0) > 10.0


def test_learnable_logit_scale():
    scale = LogitScale()
    torch.testing.assert_close(scale(), torch.tensor(1 / 0.07))
    image, text = torch.randn(2, 4, 3)
    clip_loss(image, text, scale()).backward()
    assert scale.log_scale.grad is not None
    with torch.no_grad():
        scale.log_scale.fill_(math.log(1000.0))
    assert scale().item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match="init_temperature"):
        LogitScale(0.0)


def test_grouped_clip_loss_is_the_mean_of_clip_losses_over_groups():
    generator = torch.Generator().manual_seed(0)
    captions = torch.randn(4, 6, generator=generator)
    images = torch.randn(12, 6, generator=generator)
    labels = torch.cat([torch.randperm(4, generator=generator) for _ in range(3)])  # 3 groups, each class once
    loss = GroupedClipLoss(captions, init_temperature=0.1)
    scale = loss.logit_scale()
    expected = sum(clip_loss(images[g * 4 : (g + 1) * 4], captions[labels[g * 4 : (g + 1) * 4]], scale)
                   for g in range(3)) / 3
    torch.testing.assert_close(loss(images, labels), expected)
    loss(images, labels).backward()
    assert loss.logit_scale.log_scale.grad is not None  # the temperature is learned
    with pytest.raises(ValueError, match="whole groups of 4"):
        loss(images[:10], labels[:10])
