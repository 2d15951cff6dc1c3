"""Tests of DIML's structural similarity (Zhao et al., ICCV 2021) in lib.explain.structural.

The reference is POT's ``ot.sinkhorn`` in float64 numpy, one pair at a time.
"""

import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.explain import structural
from lib.explain.structural import (
    StructuralMatch,
    sinkhorn,
    structural_marginals,
    structural_match,
    structural_plan_matrix,
    structural_similarity,
    structural_similarity_matrix,
    structural_similarity_to,
)

TIGHT = {"n_iters": 20_000, "tol": 1e-12}  # run to convergence in float64


def random_maps(seed: int, n_maps: int, n_locations: int, dim: int, dtype=torch.float64):
    """(n_maps, n_locations, dim) Gaussian features, L2-normalised per location."""
    generator = torch.Generator().manual_seed(seed)
    maps = torch.randn(n_maps, n_locations, dim, generator=generator, dtype=dtype)
    return torch.nn.functional.normalize(maps, dim=-1)


def pot_plan(a, b, cost, epsilon, method="sinkhorn"):
    """``ot.sinkhorn`` solved on the support of the marginals, zeros elsewhere.

    POT's kernel solver yields NaN when both marginals have zeros (inf * 0);
    zero-mass rows and columns of an entropic plan are zero, and the rest of
    the plan is the plan of the sub-problem on the support.
    """
    rows, cols = a > 0, b > 0
    plan = np.zeros_like(cost)
    support = np.ix_(rows, cols)
    plan[support] = ot.sinkhorn(
        a[rows], b[cols], cost[support], reg=epsilon, method=method,
        stopThr=1e-11, numItermax=100_000,
    )
    return plan


def pot_match(x, y, epsilon, marginals="cross_correlation", method="sinkhorn"):
    """(similarities (P,), plans (P, N, M)) from POT, with this module's marginals."""
    a, b = structural_marginals(x.double(), y.double(), marginals)
    plans, similarities = [], []
    for p in range(len(x)):
        cosine = (x[p].double() @ y[p].double().T).numpy()
        plan = pot_plan(a[p].numpy(), b[p].numpy(), 1.0 - cosine, epsilon, method)
        plans.append(plan)
        similarities.append((plan * cosine).sum())
    return np.array(similarities), np.stack(plans)


def use_log_domain(monkeypatch) -> None:
    """Make every problem take the log-domain form."""
    monkeypatch.setattr(structural, "_kernel_limit", lambda dtype: -1.0)


# --- agreement with POT -------------------------------------------------------


@pytest.mark.parametrize("marginals", ["cross_correlation", "uniform"])
def test_plan_and_similarity_match_pot_float64(marginals):
    x, y = random_maps(0, 5, 16, 32), random_maps(1, 5, 9, 32)
    match = structural_match(x, y, epsilon=0.05, marginals=marginals, **TIGHT)
    similarities, plans = pot_match(x, y, 0.05, marginals)
    np.testing.assert_allclose(match.plan.numpy(), plans, rtol=0, atol=1e-9)
    np.testing.assert_allclose(match.similarity.numpy(), similarities, rtol=0, atol=1e-9)


def test_float32_matches_pot():
    x, y = random_maps(2, 6, 16, 128, torch.float32), random_maps(3, 6, 16, 128, torch.float32)
    match = structural_match(x, y, epsilon=0.05)
    similarities, plans = pot_match(x, y, 0.05)
    assert match.similarity.dtype == torch.float32
    np.testing.assert_allclose(match.plan.numpy(), plans, rtol=0, atol=1e-5)
    np.testing.assert_allclose(match.similarity.numpy(), similarities, rtol=0, atol=1e-5)


def test_small_epsilon_takes_log_domain_and_matches_pot_log(monkeypatch):
    x, y = random_maps(4, 4, 16, 32, torch.float32), random_maps(5, 4, 12, 32, torch.float32)
    epsilon = 0.01  # cost range / epsilon ~ 100 > 43.7, the float32 kernel limit

    class NoKernel:
        def __init__(self, *args):
            raise AssertionError("the kernel form must not be used at this epsilon")

    monkeypatch.setattr(structural, "_KernelForm", NoKernel)
    # float32 potentials of size ~ C / epsilon ~ 100 leave marginal errors of
    # ~1e-7 relative to that size, so 1e-6 is about as tight as it gets.
    match = structural_match(x, y, epsilon=epsilon, n_iters=5_000, tol=1e-6)
    similarities, plans = pot_match(x, y, epsilon, method="sinkhorn_log")
    assert torch.isfinite(match.plan).all()
    np.testing.assert_allclose(match.plan.numpy(), plans, rtol=0, atol=1e-5)
    np.testing.assert_allclose(match.similarity.numpy(), similarities, rtol=0, atol=1e-5)


def test_sinkhorn_matches_pot_on_generic_problems():
    generator = torch.Generator().manual_seed(6)
    cost = torch.rand(3, 7, 5, generator=generator, dtype=torch.float64) * 3
    a = torch.rand(3, 7, generator=generator, dtype=torch.float64) + 0.1
    b = torch.rand(3, 5, generator=generator, dtype=torch.float64) + 0.1
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    plan = sinkhorn(cost, a, b, epsilon=0.2, **TIGHT)
    for p in range(3):
        expected = ot.sinkhorn(
            a[p].numpy(), b[p].numpy(), cost[p].numpy(), reg=0.2, stopThr=1e-13, numItermax=10_000
        )
        np.testing.assert_allclose(plan[p].numpy(), expected, rtol=0, atol=1e-10)


def test_kernel_and_log_forms_agree(monkeypatch):
    generator = torch.Generator().manual_seed(7)
    cost = torch.rand(4, 6, 8, generator=generator, dtype=torch.float64) * 2
    a = torch.softmax(torch.randn(4, 6, generator=generator, dtype=torch.float64), dim=1)
    b = torch.softmax(torch.randn(4, 8, generator=generator, dtype=torch.float64), dim=1)
    kernel_plan = sinkhorn(cost, a, b, epsilon=0.2, **TIGHT)
    use_log_domain(monkeypatch)
    log_plan = sinkhorn(cost, a, b, epsilon=0.2, **TIGHT)
    torch.testing.assert_close(log_plan, kernel_plan, rtol=0, atol=1e-10)


# --- properties ---------------------------------------------------------------


def test_plan_marginals_and_contributions():
    x, y = random_maps(8, 5, 16, 64), random_maps(9, 5, 10, 64)
    match = structural_match(x, y, tol=1e-10)
    a, b = structural_marginals(x, y)
    assert isinstance(match, StructuralMatch)
    assert match.plan.shape == match.contributions.shape == (5, 16, 10)
    assert match.similarity.shape == (5,)
    assert (match.plan >= 0).all()
    torch.testing.assert_close(match.plan.sum(dim=2), a, rtol=0, atol=1e-10)
    torch.testing.assert_close(match.plan.sum(dim=1), b, rtol=0, atol=1e-10)
    torch.testing.assert_close(match.plan.sum(dim=(1, 2)), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(match.contributions.sum(dim=(1, 2)), match.similarity)
    torch.testing.assert_close(structural_similarity(x, y, tol=1e-10), match.similarity)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 9),
    m=st.integers(1, 9),
    epsilon=st.floats(0.02, 2.0),
)
def test_plans_respect_marginals_for_any_maps(seed, n, m, epsilon):
    x, y = random_maps(seed, 3, n, 8), random_maps(seed + 1, 3, m, 8)
    match = structural_match(x, y, epsilon=epsilon, tol=1e-9, n_iters=50_000)
    a, b = structural_marginals(x, y)
    assert torch.isfinite(match.plan).all()
    torch.testing.assert_close(match.plan.sum(dim=2), a, rtol=0, atol=1e-8)
    torch.testing.assert_close(match.plan.sum(dim=1), b, rtol=0, atol=1e-8)
    assert (match.similarity.abs() <= 1 + 1e-9).all()


def test_swapping_the_maps_transposes_the_plan():
    x, y = random_maps(10, 4, 16, 32), random_maps(11, 4, 12, 32)
    forward, backward = structural_match(x, y, **TIGHT), structural_match(y, x, **TIGHT)
    torch.testing.assert_close(backward.plan, forward.plan.transpose(1, 2), rtol=0, atol=1e-10)
    torch.testing.assert_close(backward.similarity, forward.similarity, rtol=0, atol=1e-10)


def test_identical_maps_are_more_similar_than_unrelated_ones():
    x, y = random_maps(12, 8, 16, 128), random_maps(13, 8, 16, 128)
    assert (structural_similarity(x, x) > structural_similarity(x, y) + 0.5).all()


def test_inputs_are_normalised_defensively():
    x, y = random_maps(14, 3, 16, 32), random_maps(15, 3, 16, 32)
    scales = torch.linspace(0.5, 3.0, 16, dtype=torch.float64).reshape(1, 16, 1)
    torch.testing.assert_close(
        structural_similarity(3 * x * scales, y), structural_similarity(x, y)
    )


# --- marginals and zero mass --------------------------------------------------


def test_cross_correlation_marginals_formula():
    x, y = random_maps(16, 2, 16, 32), random_maps(17, 2, 9, 32)
    a, b = structural_marginals(x, y)
    expected_a = torch.relu(torch.einsum("pnd,pd->pn", x, y.mean(1)))
    expected_b = torch.relu(torch.einsum("pmd,pd->pm", y, x.mean(1)))
    torch.testing.assert_close(a, expected_a / expected_a.sum(1, keepdim=True))
    torch.testing.assert_close(b, expected_b / expected_b.sum(1, keepdim=True))
    a, b = structural_marginals(x, y, "uniform")
    torch.testing.assert_close(a, torch.full((2, 16), 1 / 16, dtype=torch.float64))
    torch.testing.assert_close(b, torch.full((2, 9), 1 / 9, dtype=torch.float64))


def test_all_negative_correlations_fall_back_to_uniform():
    # x's locations point along +e1, y's along -e1: every correlation with
    # the other map's mean is negative, so ReLU leaves no mass at all.
    direction = torch.zeros(32, dtype=torch.float64)
    direction[0] = 1.0
    generator = torch.Generator().manual_seed(18)
    noise = 0.1 * torch.randn(2, 2, 16, 32, generator=generator, dtype=torch.float64)
    x = torch.nn.functional.normalize(direction + noise[0], dim=-1)
    y = torch.nn.functional.normalize(-direction + noise[1], dim=-1)
    # The second pair is ordinary, and keeps its cross-correlation marginals.
    y[1] = random_maps(19, 1, 16, 32)[0]
    a, b = structural_marginals(x, y)
    uniform = torch.full((16,), 1 / 16, dtype=torch.float64)
    torch.testing.assert_close(a[0], uniform)
    torch.testing.assert_close(b[0], uniform)
    assert not torch.allclose(a[1], uniform)
    x.requires_grad_(True)
    match = structural_match(x, y)
    match.similarity.sum().backward()
    assert torch.isfinite(match.plan).all() and torch.isfinite(match.similarity).all()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(match.plan[0].sum(dim=1), uniform)


@pytest.mark.parametrize("log_domain", [False, True])
def test_zero_mass_gives_zero_rows_and_columns(monkeypatch, log_domain):
    if log_domain:
        use_log_domain(monkeypatch)
    generator = torch.Generator().manual_seed(20)
    cost = (torch.rand(2, 5, 6, generator=generator, dtype=torch.float64) * 2).requires_grad_(True)
    a = torch.tensor([[0.0, 0.5, 0.0, 0.25, 0.25], [0.2] * 5], dtype=torch.float64)
    b = torch.tensor(
        [[0.5, 0.0, 0.5, 0.0, 0.0, 0.0], [0.0, 0.2, 0.2, 0.2, 0.2, 0.2]], dtype=torch.float64
    )
    plan = sinkhorn(cost, a, b, epsilon=0.2, **TIGHT)
    assert torch.isfinite(plan).all()
    assert (plan[0, [0, 2]] == 0).all() and (plan[0][:, [1, 3, 4, 5]] == 0).all()
    assert (plan[1][:, 0] == 0).all()
    torch.testing.assert_close(plan.sum(dim=2), a, rtol=0, atol=1e-10)
    torch.testing.assert_close(plan.sum(dim=1), b, rtol=0, atol=1e-10)
    (plan * cost).sum().backward()
    assert torch.isfinite(cost.grad).all()


# --- gradients ----------------------------------------------------------------


def test_gradients_are_finite_through_the_similarity():
    x = random_maps(21, 4, 16, 32, torch.float32).requires_grad_(True)
    y = random_maps(22, 4, 16, 32, torch.float32).requires_grad_(True)
    structural_similarity(x, y).sum().backward()
    for grad in (x.grad, y.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("log_domain", [False, True])
def test_gradients_match_finite_differences(monkeypatch, log_domain):
    if log_domain:
        use_log_domain(monkeypatch)
    x = random_maps(23, 2, 3, 4).requires_grad_(True)
    y = random_maps(24, 2, 2, 4).requires_grad_(True)
    # A fixed number of iterations (tol = 0) keeps the function smooth.
    assert torch.autograd.gradcheck(
        lambda x, y: structural_similarity(x, y, epsilon=0.3, n_iters=25, tol=0.0), (x, y)
    )


# --- all pairs ----------------------------------------------------------------


@pytest.mark.parametrize("marginals", ["cross_correlation", "uniform"])
def test_matrix_equals_pairwise(marginals):
    queries, gallery = random_maps(25, 5, 16, 32), random_maps(26, 7, 9, 32)
    matrix = structural_similarity_matrix(queries, gallery, marginals=marginals)
    pairwise = structural_similarity(
        queries.repeat_interleave(7, dim=0), gallery.repeat(5, 1, 1), marginals=marginals
    ).reshape(5, 7)
    assert matrix.shape == (5, 7)
    torch.testing.assert_close(matrix, pairwise, rtol=0, atol=1e-9)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 10, 1000])
def test_chunking_does_not_change_results(chunk_size):
    queries, gallery = random_maps(27, 5, 16, 32), random_maps(28, 7, 16, 32)
    reference = structural_similarity_matrix(queries, gallery, chunk_size=35, **TIGHT)
    chunked = structural_similarity_matrix(queries, gallery, chunk_size=chunk_size, **TIGHT)
    torch.testing.assert_close(chunked, reference, rtol=0, atol=1e-9)


def test_empty_inputs():
    none, three = random_maps(29, 0, 4, 8), random_maps(30, 3, 4, 8)
    assert structural_similarity_matrix(none, three).shape == (0, 3)
    assert structural_similarity_matrix(three, none).shape == (3, 0)
    assert structural_similarity(none, none).shape == (0,)


@pytest.mark.parametrize("marginals", ["cross_correlation", "uniform"])
def test_plan_matrix_equals_pairwise_plans(marginals):
    queries, gallery = random_maps(35, 4, 16, 32), random_maps(36, 6, 9, 32)
    plans = structural_plan_matrix(queries, gallery, marginals=marginals, **TIGHT)
    pairwise = structural_match(
        queries.repeat_interleave(6, dim=0), gallery.repeat(4, 1, 1), marginals=marginals, **TIGHT
    ).plan.reshape(4, 6, 16, 9)
    assert plans.shape == (4, 6, 16, 9)
    torch.testing.assert_close(plans, pairwise, rtol=0, atol=1e-10)


@pytest.mark.parametrize("marginals", ["cross_correlation", "uniform"])
def test_plan_matrix_of_a_batch_with_itself_solves_half_and_transposes(monkeypatch, marginals):
    maps = random_maps(37, 6, 16, 32)
    sizes = []
    solve = structural.sinkhorn

    def counting(cost, *args, **kwargs):
        sizes.append(len(cost))
        return solve(cost, *args, **kwargs)

    monkeypatch.setattr(structural, "sinkhorn", counting)
    plans = structural_plan_matrix(maps, marginals=marginals, **TIGHT)
    assert sizes == [6 * 7 // 2]  # the pairs q <= g only
    # T_gq = T_qg^T exactly for q != g, and each equals its separately solved plan (the optimum is unique).
    off_diagonal = ~torch.eye(6, dtype=torch.bool)
    swapped = plans.transpose(0, 1).transpose(2, 3)
    assert torch.equal(plans[off_diagonal], swapped[off_diagonal])
    pairwise = structural_match(
        maps.repeat_interleave(6, dim=0), maps.repeat(6, 1, 1), marginals=marginals, **TIGHT
    ).plan.reshape(6, 6, 16, 16)
    torch.testing.assert_close(plans, pairwise, rtol=0, atol=1e-10)


@pytest.mark.parametrize("marginals", ["cross_correlation", "uniform"])
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_similarity_to_listed_items_equals_pairwise(marginals, chunk_size):
    queries, gallery = random_maps(38, 5, 16, 32), random_maps(39, 9, 12, 32)
    index = torch.randint(0, 9, (5, 4), generator=torch.Generator().manual_seed(40))
    listed = structural_similarity_to(queries, gallery, index, marginals=marginals, chunk_size=chunk_size, **TIGHT)
    pairwise = structural_similarity(
        queries.repeat_interleave(4, dim=0), gallery[index.reshape(-1)], marginals=marginals, **TIGHT
    ).reshape(5, 4)
    assert listed.shape == (5, 4)
    torch.testing.assert_close(listed, pairwise, rtol=0, atol=1e-10)


def test_similarity_to_normalises_and_handles_empty_lists():
    queries, gallery = random_maps(41, 3, 4, 8), random_maps(42, 5, 4, 8)
    index = torch.tensor([[0, 4], [1, 1], [3, 2]])
    scaled = structural_similarity_to(3.0 * queries, 0.5 * gallery, index)
    torch.testing.assert_close(scaled, structural_similarity_to(queries, gallery, index), rtol=0, atol=1e-12)
    assert structural_similarity_to(queries, gallery, index[:, :0]).shape == (3, 0)


# --- dtypes -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_returns_the_input_dtype_computing_in_float32_at_least(dtype):
    x, y = random_maps(31, 3, 16, 32, dtype), random_maps(32, 3, 16, 32, dtype)
    match = structural_match(x, y)
    assert match.similarity.dtype == match.plan.dtype == match.contributions.dtype == dtype
    reference = structural_similarity(x.double(), y.double())
    torch.testing.assert_close(match.similarity.double(), reference, rtol=0, atol=1e-2)
    assert structural_similarity_matrix(x, y).dtype == dtype
    assert sinkhorn(1 - x @ y.transpose(1, 2), *structural_marginals(x, y)).dtype == dtype


# --- errors -------------------------------------------------------------------


def test_errors_name_the_problem():
    x, y = random_maps(33, 2, 4, 8), random_maps(34, 2, 5, 8)
    with pytest.raises(ValueError, match=r"x must have shape \(P, N, D\), got shape \(4, 8\)"):
        structural_similarity(x[0], y)
    with pytest.raises(ValueError, match=r"y must have shape \(P, M, D\)"):
        structural_match(x, y[..., None])
    with pytest.raises(ValueError, match=r"y of shape \(2, M, 8\), got shape \(2, 5, 7\)"):
        structural_similarity(x, y[..., :7])
    with pytest.raises(ValueError, match=r"y of shape \(2, M, 8\), got shape \(1, 5, 8\)"):
        structural_marginals(x, y[:1])
    with pytest.raises(ValueError, match=r"gallery of shape \(G, M, 8\), got \(2, 5, 7\)"):
        structural_similarity_matrix(x, y[..., :7])
    with pytest.raises(ValueError, match=r"queries must have shape \(Q, N, D\)"):
        structural_similarity_matrix(x[0], y)
    for epsilon in (0.0, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="epsilon must be a positive finite number"):
            structural_similarity(x, y, epsilon=epsilon)
    with pytest.raises(ValueError, match="marginals must be one of"):
        structural_similarity(x, y, marginals="softmax")
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        structural_similarity_matrix(x, y, chunk_size=0)
    with pytest.raises(ValueError, match=r"gallery of shape \(G, M, 8\), got \(2, 5, 7\)"):
        structural_plan_matrix(x, y[..., :7])
    with pytest.raises(ValueError, match=r"index must be an integer tensor of shape \(Q, K\) with Q = 2"):
        structural_similarity_to(x, y, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"index must lie in \[0, 2\).*got \[0, 5\]"):
        structural_similarity_to(x, y, torch.tensor([[0], [5]]))
    cost, (a, b) = 1 - x @ y.transpose(1, 2), structural_marginals(x, y)
    with pytest.raises(ValueError, match=r"a must have shape \(P, N\).*got shape \(2, 5\)"):
        sinkhorn(cost, b, b)
    with pytest.raises(ValueError, match=r"cost must have shape \(P, N, M\)"):
        sinkhorn(cost[0], a, b)
    with pytest.raises(ValueError, match="n_iters must be >= 1"):
        sinkhorn(cost, a, b, n_iters=0)
    with pytest.raises(TypeError, match="floating-point"):
        structural_similarity(x.long(), y.long())


def test_correspondence_share_of_hand_built_plans():
    from lib.explain.structural import correspondence_share

    truth = torch.eye(3, dtype=torch.bool).expand(3, 3, 3).clone()
    plans = torch.stack([
        torch.eye(3) / 3,                         # all mass on the diagonal
        torch.full((3, 3), 1 / 9),                # uniform: chance, 3 / 9
        torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.25, 0.0, 0.25]]) * 2,  # one quarter of the mass on it
    ])
    torch.testing.assert_close(correspondence_share(plans, truth), torch.tensor([1.0, 1 / 3, 0.25]))
    torch.testing.assert_close(correspondence_share(torch.ones(3, 3, 3), truth), torch.full((3,), 1 / 3))
    with pytest.raises(ValueError, match="both be"):
        correspondence_share(plans, truth[:, :2])
    with pytest.raises(ValueError, match="positive mass"):
        correspondence_share(torch.zeros(1, 3, 3), truth[:1])
