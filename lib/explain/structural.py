"""Structural similarity of DIML, batched over pairs of feature maps.

DIML (Zhao et al., ICCV 2021, "Towards Interpretable Deep Metric Learning
with Structural Matching", Sec. 3) replaces the cosine of two pooled
embeddings by an optimal-transport matching of their spatial features. For
one pair of L2-normalised feature maps ``x`` (N locations) and ``y``
(M locations) of dimension D:

* ``S_ij = <x_i, y_j>`` is the cosine similarity of location i of x and
  location j of y, and ``C = 1 - S`` the transport cost;
* the marginals ``a`` (over x's locations) and ``b`` (over y's) weight each
  location by how well it agrees with the *other* image's global feature,
  ``a_i ∝ ReLU(<x_i, mean_j y_j>)`` and ``b_j ∝ ReLU(<y_j, mean_i x_i>)``
  (the paper's cross-correlation marginals);
* ``T`` is the entropic optimal transport plan between ``a`` and ``b`` under
  ``C`` (Sinkhorn, Cuturi 2013), and the structural similarity is
  ``s = sum_ij T_ij S_ij``.

The per-location contributions ``T * S`` sum to ``s`` and are the
explanation: which location of one image matches which of the other, and
how much each match adds to the similarity.

Everything here works on a batch of P pairs at once with tensor algebra
(no Python loop over pairs), on the device of its inputs, and is
differentiable (autograd runs through the unrolled Sinkhorn iterations), so
it serves both as an explainer and inside a training loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Marginals",
    "StructuralMatch",
    "correspondence_share",
    "sinkhorn",
    "structural_marginals",
    "structural_match",
    "structural_plan_matrix",
    "structural_similarity",
    "structural_similarity_matrix",
    "structural_similarity_to",
]

Marginals = Literal["cross_correlation", "uniform"]
"""How the transport marginals are chosen: DIML's cross-correlation
weighting, or uniform weights (the paper's ablation)."""

_MARGINALS = ("cross_correlation", "uniform")


@dataclass(frozen=True)
class StructuralMatch:
    """The structural matching of P pairs of feature maps.

    Attributes:
        similarity: (P,) structural similarity ``s = sum_ij T_ij S_ij``.
        plan: (P, N, M) transport plan ``T``; rows sum to the marginal of
            the first map, columns to that of the second, everything to 1.
        contributions: (P, N, M) ``T * S``, how much matching location i of
            the first map with location j of the second adds to the
            similarity; sums over (N, M) to ``similarity``.
    """

    similarity: Tensor
    plan: Tensor
    contributions: Tensor


# ---------------------------------------------------------------------------
# Entropic optimal transport
# ---------------------------------------------------------------------------


def sinkhorn(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    epsilon: float = 0.05,
    n_iters: int = 500,
    tol: float = 1e-6,
    check_every: int = 5,
) -> Tensor:
    """Entropic optimal transport plans for a batch of problems.

    Solves, independently for each of the P problems,

        T = argmin_{T >= 0, T 1 = a, T^T 1 = b}  <T, C> - epsilon * H(T),
        H(T) = -sum_ij T_ij (log T_ij - 1),

    the problem ``ot.sinkhorn(a, b, C, reg=epsilon)`` of POT solves. The
    solution has the form ``T = diag(u) K diag(v)`` with the Gibbs kernel
    ``K = exp(-C / epsilon)``; Sinkhorn's iterations alternate
    ``v = b / (K^T u)`` and ``u = a / (K v)`` from ``u = 1``.

    Two numerically equivalent forms of the iteration are used:

    * kernel space (batched matrix-vector products, fast) when no kernel
      entry can underflow. Each problem's cost is first shifted by its
      minimum, which leaves T unchanged (a constant factor on K is absorbed
      by u), so the kernel lies in ``[exp(-R), 1]`` with
      ``R = (max C - min C) / epsilon``. This form is used when every
      problem of the batch has ``R <= log(1 / tiny) / 2`` for the working
      dtype's smallest normal number ``tiny`` (R <= 43.7 in float32,
      R <= 354 in float64): kernel entries then stay at or above
      ``sqrt(tiny)``, and the scalings u and v, of order ``exp(R)`` times
      ratios of marginal entries, keep half the exponent range as headroom
      against overflow. For DIML's cost ``1 - cosine`` in [0, 2] this holds
      down to epsilon = 2 / 43.7 ~ 0.046 in float32;
    * log domain otherwise, iterating the potentials ``f = log u``,
      ``g = log v`` with log-sum-exp, which cannot underflow or overflow.
      The potentials grow like C / epsilon, and their rounding with them:
      in float32 at C / epsilon ~ 100 the marginals are resolved to about
      1e-6, and a smaller ``tol`` just runs all ``n_iters`` iterations.

    Each problem stops on its own, after ``n_iters`` iterations or once its
    largest violation of the column marginals, ``max_j |sum_i T_ij - b_j|``,
    is below ``tol`` (the rows are exact after each update of u, so that is
    its largest marginal violation); the largest violation over the batch is
    then below ``tol`` too. Converged problems leave the batch, so that a few
    slow ones do not keep all the others iterating (on random 4 x 4 maps the
    slowest of 20,000 problems needs 7 times the mean number of iterations).
    Convergence is checked every ``check_every`` iterations only, as each
    check synchronises with the device, and problems leave in groups (see
    ``_iterate``), so a plan may be a little closer to the solution than
    ``tol`` requires, by an amount that depends on the rest of its batch.

    Zero entries of ``a`` (``b``) give zero rows (columns) of T, without
    NaN, in the values and in their gradients.

    Args:
        cost: (P, N, M) transport costs C.
        a: (P, N) non-negative row marginals.
        b: (P, M) non-negative column marginals, each ``b[p]`` with the same
            total mass as ``a[p]`` (usually 1).
        epsilon: entropic regularisation, > 0 (POT's ``reg``).
        n_iters: maximum number of Sinkhorn iterations, >= 1.
        tol: stopping threshold on the marginal violation, >= 0 (0 runs all
            ``n_iters`` iterations).
        check_every: iterations between two convergence checks, >= 1.

    Returns:
        (P, N, M) transport plans T, in ``cost``'s dtype and on its device.
        The computation runs in float32 at least (half and bfloat16 inputs
        are upcast) and is differentiable with respect to cost, a and b.
    """
    _check_rank("cost", cost, "(P, N, M)")
    n_pairs, n, m = cost.shape
    _check_shape("a", a, (n_pairs, n), "(P, N) with (P, N) from cost")
    _check_shape("b", b, (n_pairs, m), "(P, M) with (P, M) from cost")
    _check_epsilon(epsilon)
    if n_iters < 1:
        raise ValueError(f"n_iters must be >= 1, got {n_iters}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")

    dtype, work = cost.dtype, _working_dtype(cost, a, b)
    if n_pairs == 0:
        return cost.new_zeros(cost.shape)
    cost, a, b = cost.to(work), a.to(work), b.to(work)
    # The plan does not depend on a constant shift of each problem's cost, so
    # the shift may be detached: its gradient is exactly zero anyway.
    scaled = (cost - cost.detach().amin(dim=(1, 2), keepdim=True)) / epsilon
    if scaled.detach().amax().item() <= _kernel_limit(work):
        form = _KernelForm(scaled, a, b)
    else:
        form = _LogForm(scaled, a, b)
    u, v = _iterate(form, n_iters, tol, check_every)
    return form.plan(u, v).to(dtype)


def _kernel_limit(dtype: torch.dtype) -> float:
    """Largest scaled cost range R for which the kernel form is used."""
    return 0.5 * -math.log(torch.finfo(dtype).tiny)


class _KernelForm:
    """Sinkhorn on the scalings u, v (P, ., 1) and the kernel K = exp(-C / eps).

    Each half-iteration is one batched matrix-vector product (``torch.bmm``);
    K and K^T are both stored contiguously, which makes those products about
    three times faster than through a transposed view.
    """

    def __init__(self, scaled: Tensor, a: Tensor, b: Tensor) -> None:
        kernel = torch.exp(-scaled)
        kernel_t = kernel.transpose(1, 2).contiguous()
        self.problem = (kernel, kernel_t, a.unsqueeze(-1), b.unsqueeze(-1))
        self.start = (torch.ones_like(self.problem[2]), torch.ones_like(self.problem[3]))

    @staticmethod
    def column_mass(problem: tuple[Tensor, ...], u: Tensor) -> Tensor:
        """``K^T u``: the columns of the plan sum to ``v * K^T u``."""
        return torch.bmm(problem[1], u)

    @staticmethod
    def violation(problem: tuple[Tensor, ...], column_mass: Tensor, v: Tensor) -> Tensor:
        """(P,) largest column-marginal violation ``max_j |b_j - v_j (K^T u)_j|``."""
        error = torch.addcmul(problem[3], v, column_mass, value=-1)
        return torch.linalg.vector_norm(error, math.inf, dim=(1, 2))

    @staticmethod
    def update(problem: tuple[Tensor, ...], column_mass: Tensor) -> tuple[Tensor, Tensor]:
        """``v = b / (K^T u)``, then ``u = a / (K v)``."""
        kernel, _, a, b = problem
        v = b / column_mass
        return a / torch.bmm(kernel, v), v

    def plan(self, u: Tensor, v: Tensor) -> Tensor:
        return u * self.problem[0] * v.transpose(1, 2)


class _LogForm:
    """Sinkhorn on the potentials ``f = log u`` (P, N) and ``g = log v`` (P, M).

    ``g = log b - LSE_i(f_i - C_ij / eps)`` and
    ``f = log a - LSE_j(g_j - C_ij / eps)``: the kernel form's updates in
    logarithms, stable whatever the range of C / eps.
    """

    def __init__(self, scaled: Tensor, a: Tensor, b: Tensor) -> None:
        self.problem = (scaled, _log_mass(a), _log_mass(b), b)
        self.start = (torch.zeros_like(a), torch.zeros_like(b))

    @staticmethod
    def column_mass(problem: tuple[Tensor, ...], f: Tensor) -> Tensor:
        """``log K^T u``: the columns of the plan sum to ``exp(g + log K^T u)``."""
        return torch.logsumexp(f.unsqueeze(2) - problem[0], dim=1)

    @staticmethod
    def violation(problem: tuple[Tensor, ...], log_column_mass: Tensor, g: Tensor) -> Tensor:
        """(P,) largest column-marginal violation ``max_j |b_j - exp(g_j + log K^T u)_j|``."""
        error = torch.exp(g + log_column_mass) - problem[3]
        return torch.linalg.vector_norm(error, math.inf, dim=1)

    @staticmethod
    def update(problem: tuple[Tensor, ...], log_column_mass: Tensor) -> tuple[Tensor, Tensor]:
        """``g = log b - log K^T u``, then ``f = log a - log K v``."""
        scaled, log_a, log_b, _ = problem
        g = log_b - log_column_mass
        return log_a - torch.logsumexp(g.unsqueeze(1) - scaled, dim=2), g

    def plan(self, f: Tensor, g: Tensor) -> Tensor:
        return torch.exp(f.unsqueeze(2) + g.unsqueeze(1) - self.problem[0])


_RETIRE_FRACTION = 8


def _iterate(
    form: _KernelForm | _LogForm, n_iters: int, tol: float, check_every: int
) -> tuple[Tensor, Tensor]:
    """Run Sinkhorn's iterations of ``form``; returns its final (P, ...) scalings.

    Problems whose violation is below ``tol`` at a check leave the working
    set ``problem`` (indexed by ``active`` into the batch) with their current
    scalings, which are put back in batch order at the end. Removing them
    copies the working set, about the cost of one iteration, so it waits
    until at least ``1 / _RETIRE_FRACTION`` of the set has converged; the
    others iterate on meanwhile, which only brings them closer to the
    solution.
    """
    problem = form.problem
    u, v = form.start
    active = torch.arange(len(u), device=u.device)
    retired: list[tuple[Tensor, Tensor, Tensor]] = []
    for it in range(n_iters):
        column_mass = form.column_mass(problem, u)
        # After u's update the rows are exact, so checking the columns against
        # the K^T u needed for the next update costs no extra product.
        if it > 0 and it % check_every == 0:
            converged = form.violation(problem, column_mass, v) < tol
            if converged.sum().item() * _RETIRE_FRACTION >= len(converged):
                done, keep = converged.nonzero()[:, 0], (~converged).nonzero()[:, 0]
                retired.append((active[done], u[done], v[done]))
                if len(keep) == 0:
                    break
                # One index per check; selecting with it is cheaper than masking.
                problem = tuple(t.index_select(0, keep) for t in problem)
                active, u, v, column_mass = (
                    t.index_select(0, keep) for t in (active, u, v, column_mass)
                )
        u, v = form.update(problem, column_mass)
    else:
        retired.append((active, u, v))
    order = torch.cat([r[0] for r in retired])
    u = torch.cat([r[1] for r in retired])
    v = torch.cat([r[2] for r in retired])
    # Scatter back to batch order; index_copy is differentiable w.r.t. its source.
    return (
        u.new_empty(u.shape).index_copy(0, order, u),
        v.new_empty(v.shape).index_copy(0, order, v),
    )


def _log_mass(w: Tensor) -> Tensor:
    """``log w`` with ``-inf`` at zero entries and a zero gradient there.

    The logarithm is taken of 1 in place of 0, since ``torch.where`` would
    otherwise multiply log's infinite derivative at 0 by zero, giving NaN.
    """
    positive = w > 0
    log_w = torch.log(torch.where(positive, w, torch.ones_like(w)))
    return torch.where(positive, log_w, -math.inf)


# ---------------------------------------------------------------------------
# DIML's structural similarity
# ---------------------------------------------------------------------------


def structural_marginals(
    x: Tensor, y: Tensor, kind: Marginals = "cross_correlation"
) -> tuple[Tensor, Tensor]:
    """Transport marginals of P pairs of feature maps.

    With ``kind="cross_correlation"`` (DIML, Sec. 3), each location is
    weighted by its agreement with the other map's mean feature,

        a_i = ReLU(<x_i, mean_j y_j>) / sum_k ReLU(<x_k, mean_j y_j>),
        b_j = ReLU(<y_j, mean_i x_i>) / sum_k ReLU(<y_k, mean_i x_i>),

    so that locations unrelated to the other image carry little or no mass.
    When every correlation of a map is <= 0 the ratio is 0/0; that pair's
    marginal then falls back to uniform (``1 / N``), so the result is always
    a probability vector. (The authors' code adds 1e-5 to the denominator
    instead, which leaves an all-zero marginal and a NaN plan.)

    With ``kind="uniform"`` (the paper's ablation) both marginals are
    uniform.

    The maps are used as given (no re-normalisation): the marginals are
    invariant to the scale of the mean features but not of the locations.

    Args:
        x: (P, N, D) first feature maps.
        y: (P, M, D) second feature maps.
        kind: ``"cross_correlation"`` or ``"uniform"``.

    Returns:
        ``(a, b)`` of shapes (P, N) and (P, M), non-negative, summing to 1
        per pair, in the working dtype (float32 at least).
    """
    _check_pair_maps(x, y)
    _check_marginals(kind)
    work = _working_dtype(x, y)
    x, y = x.to(work), y.to(work)
    if kind == "uniform":
        return _uniform_like(x[..., 0]), _uniform_like(y[..., 0])
    a = torch.einsum("pnd,pd->pn", x, y.mean(dim=1))
    b = torch.einsum("pmd,pd->pm", y, x.mean(dim=1))
    return _normalise_or_uniform(a), _normalise_or_uniform(b)


def _normalise_or_uniform(correlation: Tensor) -> Tensor:
    """``ReLU(c) / sum ReLU(c)`` along the last axis; uniform where that sum is 0."""
    weight = torch.relu(correlation)
    total = weight.sum(dim=-1, keepdim=True)
    has_mass = total > 0
    # Dividing by 1 where there is no mass keeps the unused branch finite, so
    # that torch.where's gradient stays free of NaN.
    normalised = weight / torch.where(has_mass, total, torch.ones_like(total))
    return torch.where(has_mass, normalised, _uniform_like(weight))


def _uniform_like(w: Tensor) -> Tensor:
    return torch.full_like(w, 1.0 / w.shape[-1])


def structural_match(
    x: Tensor,
    y: Tensor,
    epsilon: float = 0.05,
    marginals: Marginals = "cross_correlation",
    n_iters: int = 500,
    tol: float = 1e-6,
) -> StructuralMatch:
    """DIML structural matching of P pairs of feature maps.

    ``S_ij = <x_i, y_j> / (|x_i| |y_j|)``, ``C = 1 - S``,
    ``T = sinkhorn(C, a, b, epsilon)`` with ``(a, b) =
    structural_marginals(x, y, marginals)``, similarity ``sum_ij T_ij S_ij``.
    The locations are L2-normalised here (a no-op for maps that already
    are), so S is a cosine similarity whatever the inputs' scale.

    Args:
        x: (P, N, D) first feature maps, one feature vector per location
            (e.g. N = 16 for a 4 x 4 grid).
        y: (P, M, D) second feature maps.
        epsilon: entropic regularisation of the transport, > 0 (DIML: 0.05).
        marginals: ``"cross_correlation"`` (DIML) or ``"uniform"``.
        n_iters, tol: Sinkhorn's stopping rule, see :func:`sinkhorn`.

    Returns:
        A :class:`StructuralMatch` of (P,) similarities, (P, N, M) plans and
        (P, N, M) contributions, in ``x``'s dtype; differentiable.
    """
    _check_pair_maps(x, y)
    _check_marginals(marginals)
    _check_epsilon(epsilon)
    dtype = x.dtype
    x, y = _normalised(x, y), _normalised(y, x)
    cosine = torch.bmm(x, y.transpose(1, 2))
    a, b = structural_marginals(x, y, marginals)
    plan = sinkhorn(1.0 - cosine, a, b, epsilon, n_iters, tol)
    contributions = plan * cosine
    return StructuralMatch(
        similarity=contributions.sum(dim=(1, 2)).to(dtype),
        plan=plan.to(dtype),
        contributions=contributions.to(dtype),
    )


def structural_similarity(
    x: Tensor,
    y: Tensor,
    epsilon: float = 0.05,
    marginals: Marginals = "cross_correlation",
    n_iters: int = 500,
    tol: float = 1e-6,
) -> Tensor:
    """(P,) DIML structural similarities of P pairs; see :func:`structural_match`."""
    return structural_match(x, y, epsilon, marginals, n_iters, tol).similarity


def structural_similarity_matrix(
    queries: Tensor,
    gallery: Tensor,
    epsilon: float = 0.05,
    marginals: Marginals = "cross_correlation",
    n_iters: int = 500,
    tol: float = 1e-6,
    chunk_size: int = 8192,
) -> Tensor:
    """Structural similarity of every query with every gallery item.

    Equal to ``structural_similarity(queries[q], gallery[g])`` for all
    (q, g), computed block by block over at most ``chunk_size`` pairs: the
    cosines of a block of queries against a block of gallery items come
    from one matrix product ``(q N, D) @ (D, g M)``, and all pairs of the
    block share one batched Sinkhorn. Memory grows with ``chunk_size``
    (about ``10 * N * M`` floats per pair), not with Q * G.

    Args:
        queries: (Q, N, D) feature maps.
        gallery: (G, M, D) feature maps.
        epsilon, marginals, n_iters, tol: as in :func:`structural_match`.
        chunk_size: maximum number of pairs per batched Sinkhorn, >= 1.

    Returns:
        (Q, G) similarities in ``queries``' dtype; differentiable.
    """
    _check_query_gallery(queries, gallery)
    _check_marginals(marginals)
    _check_epsilon(epsilon)
    _check_chunk_size(chunk_size)

    dtype = queries.dtype
    queries, gallery = _normalised(queries, gallery), _normalised(gallery, queries)
    n_queries, n, _ = queries.shape
    n_gallery, m, _ = gallery.shape
    if n_queries == 0 or n_gallery == 0:
        return queries.new_zeros(n_queries, n_gallery).to(dtype)
    query_block = max(1, chunk_size // n_gallery)
    gallery_block = min(n_gallery, chunk_size)

    rows = []
    for q0 in range(0, n_queries, query_block):
        q_block = slice(q0, q0 + query_block)
        q_maps = queries[q_block]
        row = []
        for g0 in range(0, n_gallery, gallery_block):
            g_block = slice(g0, g0 + gallery_block)
            cosine, a, b = _all_pair_problems(q_maps, gallery[g_block], marginals)
            blocks = cosine.shape[:2]
            cosine = cosine.reshape(-1, n, m)
            a, b = a.reshape(-1, n), b.reshape(-1, m)
            plan = sinkhorn(1.0 - cosine, a, b, epsilon, n_iters, tol)
            row.append((plan * cosine).sum(dim=(1, 2)).reshape(blocks))
        rows.append(torch.cat(row, dim=1))
    return torch.cat(rows, dim=0).to(dtype)


def structural_similarity_to(
    queries: Tensor,
    gallery: Tensor,
    index: Tensor,
    epsilon: float = 0.05,
    marginals: Marginals = "cross_correlation",
    n_iters: int = 500,
    tol: float = 1e-6,
    chunk_size: int = 8192,
) -> Tensor:
    """Structural similarity of each query with its own list of gallery items.

    ``out[q, k] = structural_similarity(queries[q], gallery[index[q, k]])``,
    e.g. with each query's top-K global neighbours for re-ranking. Queries
    are taken in blocks of at most ``chunk_size`` pairs; in a block the
    cosines of a query with its K items come from one matrix product
    ``(N, D) @ (D, K M)``, and the cross-correlation marginals from those
    cosines (for unit locations ``<x_i, mean_j y_j> = mean_j <x_i, y_j>``), so
    only the listed gallery maps are gathered and no pair's maps are copied
    twice.

    Args:
        queries: (Q, N, D) feature maps.
        gallery: (G, M, D) feature maps.
        index: (Q, K) integer indices into ``gallery``.
        epsilon, marginals, n_iters, tol: as in :func:`structural_match`.
        chunk_size: maximum number of pairs per batched Sinkhorn, >= 1.

    Returns:
        (Q, K) similarities in ``queries``' dtype; differentiable.
    """
    _check_query_gallery(queries, gallery)
    if index.dim() != 2 or index.shape[0] != queries.shape[0] or index.is_floating_point():
        raise ValueError(
            f"index must be an integer tensor of shape (Q, K) with Q = {queries.shape[0]} queries, "
            f"got {index.dtype} of shape {tuple(index.shape)}"
        )
    if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < len(gallery):
        raise ValueError(f"index must lie in [0, {len(gallery)}) (the gallery's size), got [{int(index.min())}, {int(index.max())}]")
    _check_marginals(marginals)
    _check_epsilon(epsilon)
    _check_chunk_size(chunk_size)

    dtype = queries.dtype
    queries, gallery = _normalised(queries, gallery), _normalised(gallery, queries)
    n_queries, n_items = index.shape
    if n_queries == 0 or n_items == 0:
        return queries.new_zeros(n_queries, n_items).to(dtype)
    n, m = queries.shape[1], gallery.shape[1]
    block = max(1, chunk_size // n_items)
    out = []
    for q0 in range(0, n_queries, block):
        q_maps, items = queries[q0 : q0 + block], gallery[index[q0 : q0 + block]]
        cosine = torch.einsum("qnd,qkmd->qknm", q_maps, items).reshape(-1, n, m)
        a, b = _marginals_of(cosine, marginals)
        plan = sinkhorn(1.0 - cosine, a, b, epsilon, n_iters, tol)
        out.append((plan * cosine).sum(dim=(1, 2)).reshape(len(q_maps), n_items))
    return torch.cat(out).to(dtype)


def structural_plan_matrix(
    queries: Tensor,
    gallery: Tensor | None = None,
    epsilon: float = 0.05,
    marginals: Marginals = "cross_correlation",
    n_iters: int = 500,
    tol: float = 1e-6,
) -> Tensor:
    """Transport plans of every query with every gallery item, (Q, G, N, M).

    ``plans[q, g]`` is ``structural_match(queries[q], gallery[g]).plan``; the
    cosines and marginals of all pairs come from one matrix product each, as
    in :func:`structural_similarity_matrix`, and all pairs share one batched
    Sinkhorn. Use it for a batch of a few hundred maps (memory grows with
    Q * G * N * M), e.g. inside a training loss.

    Without ``gallery`` the batch is matched with itself, and only the
    Q (Q + 1) / 2 pairs with q <= g are solved: swapping the two maps
    transposes the cosines and swaps the marginals, so the optimal plan of
    (g, q) is the transpose of the plan of (q, g), ``T_gq = T_qg^T``, and is
    filled in as such. The result is then exactly symmetric in that sense,
    and the two plans of a pair agree with separately solved ones to within
    Sinkhorn's stopping tolerance.

    Args:
        queries: (Q, N, D) feature maps.
        gallery: (G, M, D) feature maps, or None for ``queries`` itself.
        epsilon, marginals, n_iters, tol: as in :func:`structural_match`.

    Returns:
        (Q, G, N, M) plans in ``queries``' dtype; differentiable.
    """
    _check_query_gallery(queries, gallery)
    _check_marginals(marginals)
    _check_epsilon(epsilon)
    dtype = queries.dtype
    if gallery is None:
        maps = _normalised(queries, queries)
        cosine, a, b = _all_pair_problems(maps, maps, marginals)
        n_maps, n = len(maps), maps.shape[1]
        first, second = torch.triu_indices(n_maps, n_maps, device=maps.device)
        plan = sinkhorn(1.0 - cosine[first, second], a[first, second], b[first, second], epsilon, n_iters, tol)
        plans = plan.new_empty(n_maps, n_maps, n, n)
        plans[second, first] = plan.transpose(1, 2)
        plans[first, second] = plan  # on the diagonal, the plan as solved
        return plans.to(dtype)
    queries, gallery = _normalised(queries, gallery), _normalised(gallery, queries)
    cosine, a, b = _all_pair_problems(queries, gallery, marginals)
    blocks = cosine.shape
    plan = sinkhorn(1.0 - cosine.flatten(0, 1), a.flatten(0, 1), b.flatten(0, 1), epsilon, n_iters, tol)
    return plan.reshape(blocks).to(dtype)


def _all_pair_problems(q_maps: Tensor, g_maps: Tensor, marginals: Marginals) -> tuple[Tensor, Tensor, Tensor]:
    """Cosines (Q, G, N, M) and marginals (Q, G, N), (Q, G, M) of every (query, gallery) pair.

    All cosines come from one GEMM, (Q N, D) @ (D, G M), laid out as one
    (N, M) problem per pair; the marginals from the cosines (:func:`_marginals_of`).
    """
    cosine = torch.einsum("qnd,gmd->qgnm", q_maps, g_maps)
    return cosine, *_marginals_of(cosine, marginals)


def _marginals_of(cosine: Tensor, marginals: Marginals) -> tuple[Tensor, Tensor]:
    """The marginals of :func:`structural_marginals` from the cosines (..., N, M) of unit locations.

    For unit locations ``<x_i, mean_j y_j> = mean_j <x_i, y_j>``: the
    cross-correlation marginals are the row and column means of the cosines,
    through ReLU and normalised.
    """
    if marginals == "uniform":
        return _uniform_like(cosine[..., 0]), _uniform_like(cosine[..., 0, :])
    return _normalise_or_uniform(cosine.mean(dim=-1)), _normalise_or_uniform(cosine.mean(dim=-2))


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _working_dtype(*tensors: Tensor) -> torch.dtype:
    """float32 at least: half precision is too coarse for Sinkhorn's scalings."""
    for t in tensors:
        if not t.is_floating_point():
            raise TypeError(f"expected floating-point tensors, got dtype {t.dtype}")
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _normalised(maps: Tensor, other: Tensor) -> Tensor:
    """``maps`` in the pair's working dtype, each location L2-normalised."""
    return F.normalize(maps.to(_working_dtype(maps, other)), dim=-1)


def _check_rank(name: str, t: Tensor, expected: str) -> None:
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(t.shape)}")


def _check_shape(name: str, t: Tensor, shape: tuple[int, ...], expected: str) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(
            f"{name} must have shape {expected} = {shape}, got shape {tuple(t.shape)}"
        )


def _check_pair_maps(x: Tensor, y: Tensor) -> None:
    _check_rank("x", x, "(P, N, D)")
    _check_rank("y", y, "(P, M, D)")
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            "x and y must hold the same number of pairs P and feature dimension D: "
            f"expected y of shape ({x.shape[0]}, M, {x.shape[2]}), got shape {tuple(y.shape)}"
        )


def _check_query_gallery(queries: Tensor, gallery: Tensor | None) -> None:
    """Queries (Q, N, D) and, unless None, a gallery (G, M, D) of the same D."""
    _check_rank("queries", queries, "(Q, N, D)")
    if gallery is None:
        return
    _check_rank("gallery", gallery, "(G, M, D)")
    if queries.shape[2] != gallery.shape[2]:
        raise ValueError(
            "queries and gallery must have the same feature dimension D: "
            f"expected gallery of shape (G, M, {queries.shape[2]}), got {tuple(gallery.shape)}"
        )


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _check_marginals(kind: str) -> None:
    if kind not in _MARGINALS:
        raise ValueError(f"marginals must be one of {_MARGINALS}, got {kind!r}")


def _check_epsilon(epsilon: float) -> None:
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon}")


# ---------------------------------------------------------------------------
# Positive control of the explanation
# ---------------------------------------------------------------------------


def correspondence_share(plan: Tensor, correspondence: Tensor) -> Tensor:
    """(P,) share of each plan's transport mass on the true correspondences.

    For a plan T (N, M) and a known correspondence C (N, M) (1 where location
    i of the first map and j of the second show the same part),

        share = sum_ij T_ij C_ij / sum_ij T_ij.

    A plan that ignores the images' content, the uniform T = 1 / (N M), gets
    the chance level ``sum_ij C_ij / (N M)``: pass ``torch.ones_like(plan)``.

    Args:
        plan: (P, N, M) non-negative plans, each of positive mass.
        correspondence: (P, N, M) booleans (or weights in [0, 1]).
    """
    if plan.dim() != 3 or plan.shape != correspondence.shape:
        raise ValueError(f"plan and correspondence must both be (P, N, M), got {tuple(plan.shape)} and "
                         f"{tuple(correspondence.shape)}")
    if (plan < 0).any():
        raise ValueError("a transport plan has no negative entries")
    mass = plan.sum(dim=(1, 2))
    if (mass <= 0).any():
        raise ValueError("every plan needs a positive mass")
    return (plan * correspondence.to(plan.dtype)).sum(dim=(1, 2)) / mass
