"""Region similarities and the anchor-positive-negative triplets drawn from them.

MuseCL (Yong and Zhou, IJCAI 2024, Sec. 3.2) pairs regions by what they *mean*,
not by how they look: the positive of an anchor region is the region most
similar to it by a semantic profile, the negative a random other region.

Similarities (each a documented function of a region's profile):

* :func:`poi_histograms` - ``h_i[c]``, the number of POIs of category ``c`` in
  region ``i``; the POI similarity of two regions is the cosine of their
  histograms (used to pair **aerial** images).
* :func:`flow_profiles` - ``m_i = [out_i / |out_i|_1, in_i / |in_i|_1]``, the
  region's out-flows (row ``i`` of the origin-destination matrix) and in-flows
  (column ``i``), each normalised to sum one: *where* its trips go and come
  from (the paper's mobility pattern).
* :func:`flow_volumes` - ``v_i = [log(1 + T_out_i), log(1 + T_in_i)]``, each
  column standardised over the regions: *how many* trips leave and reach it.
* :func:`mobility_similarity` - the choice made here for **street-level**
  images: ``s_ij = cos(m_i, m_j) - w |v_i - v_j|_2``. Normalising the profiles
  cancels the region's own attraction (in a gravity model the trips i -> j
  grow as ``P_i e^(eta S_i) J_j e^(eta S_j) / d_ij^2``, so ``S_i`` and the
  population ``P_i`` scale row i as a whole and vanish from ``m_i``); the
  volumes keep them. ``w`` >= 0 (``volume_weight``) trades the two; ``w = 0``
  is the paper's similarity. A region without trips has no profile (NaN row).
* :func:`cosine_similarity` - ``s_ij = <p_i, p_j> / (|p_i| |p_j|)``, NaN where a
  profile is all zero (a region without POIs or trips has no profile).
* :func:`neighbour_similarity` - ``s_ij = -d_ij``, minus the distance between
  centres: its top-k are the spatial neighbours (Tile2Vec's positives).
* :func:`factor_similarity` - ``s_ij = -|f_i - f_j|_2`` over true factors
  (columns standardised): **oracle pairs**, by what a modality really shows.
* :func:`random_similarity` - i.i.d. uniform entries from a seed: **random
  pairs**, the control that carries no meaning.

:class:`PairSampler` draws, for anchor ``a``, a positive uniformly from the
``k`` regions of largest ``s_aj`` (``j != a``) and a negative uniformly from
all regions other than ``a`` and that positive (the reference draws them the
same way, with ``k = 1``). Ties in ``s_aj`` (a histogram of one or two POIs
gives exact cosine ties) are broken at random by the sampler's ``seed``, not by
region index: a stable sort would always pick the lowest-numbered region. A
row whose off-diagonal entries are NaN or all zero carries no ranking and is
an error that names the anchor; a study drops such anchors before sampling
(:func:`valid_anchors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["PairSampler", "cosine_similarity", "factor_similarity", "flow_profiles", "flow_volumes",
           "mobility_similarity", "neighbour_similarity", "poi_histograms", "random_similarity", "valid_anchors"]


def poi_histograms(pois: pd.DataFrame, regions: Sequence[int], categories: Sequence[str]) -> np.ndarray:
    """``(len(regions), len(categories))`` POI counts per region (rows in the order of ``regions``).

    ``pois`` needs the columns ``region`` and ``category``; a category not in
    ``categories`` is an error (a typo would silently drop POIs).
    """
    missing = {"region", "category"} - set(pois.columns)
    if missing:
        raise KeyError(f"the POI table lacks the columns {sorted(missing)}")
    unknown = set(pois["category"]) - set(categories)
    if unknown:
        raise ValueError(f"POI categories not in the category list: {sorted(unknown)[:5]}")
    row = pd.Index(regions).get_indexer(pois["region"])
    col = pd.Index(categories).get_indexer(pois["category"])
    keep = row >= 0
    counts = np.zeros((len(regions), len(categories)))
    np.add.at(counts, (row[keep], col[keep]), 1.0)
    return counts


def _flow_matrix(flows: pd.DataFrame, regions: Sequence[int]) -> np.ndarray:
    """``(n, n)`` trips from region i (row) to region j (column) among ``regions``; other flows ignored."""
    missing = {"origin", "destination", "flow"} - set(flows.columns)
    if missing:
        raise KeyError(f"the flow table lacks the columns {sorted(missing)}")
    index = pd.Index(regions)
    o, d = index.get_indexer(flows["origin"]), index.get_indexer(flows["destination"])
    keep = (o >= 0) & (d >= 0)
    matrix = np.zeros((len(index), len(index)))
    np.add.at(matrix, (o[keep], d[keep]), flows["flow"].to_numpy(float)[keep])
    return matrix


def flow_profiles(flows: pd.DataFrame, regions: Sequence[int]) -> np.ndarray:
    """``(n, 2n)`` profiles ``[out-flows / total out, in-flows / total in]`` among ``regions`` (module docstring).

    Flows to or from regions outside ``regions`` are ignored; a region with no
    trips out (or in) gets zeros in that half.
    """
    matrix = _flow_matrix(flows, regions)
    out_total, in_total = matrix.sum(1, keepdims=True), matrix.sum(0, keepdims=True)
    out = np.divide(matrix, out_total, out=np.zeros_like(matrix), where=out_total > 0)
    inn = np.divide(matrix, in_total, out=np.zeros_like(matrix), where=in_total > 0)
    return np.concatenate([out, inn.T], axis=1)


def flow_volumes(flows: pd.DataFrame, regions: Sequence[int]) -> np.ndarray:
    """``(n, 2)`` standardised ``[log(1 + trips out), log(1 + trips in)]`` among ``regions`` (module docstring)."""
    matrix = _flow_matrix(flows, regions)
    v = np.log1p(np.stack([matrix.sum(1), matrix.sum(0)], axis=1))
    sd = v.std(0)
    return (v - v.mean(0)) / np.where(sd > 0, sd, 1.0)


def mobility_similarity(flows: pd.DataFrame, regions: Sequence[int], volume_weight: float = 1.0) -> np.ndarray:
    """``(n, n)`` ``cos(m_i, m_j) - w |v_i - v_j|_2`` (module docstring); NaN for regions without trips."""
    if not volume_weight >= 0:
        raise ValueError(f"volume_weight must be >= 0, got {volume_weight}")
    s = cosine_similarity(flow_profiles(flows, regions))
    v = flow_volumes(flows, regions)
    return s - volume_weight * np.linalg.norm(v[:, None] - v[None, :], axis=-1)


def factor_similarity(factors: np.ndarray) -> np.ndarray:
    """``(n, n)`` ``-|f_i - f_j|_2`` over the columns of ``factors`` (n, k), each standardised (constant: 0)."""
    f = np.asarray(factors, np.float64)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2 or not np.isfinite(f).all():
        raise ValueError(f"factors must be a finite (regions, factors) array, got shape {f.shape}")
    sd = f.std(0)
    f = (f - f.mean(0)) / np.where(sd > 0, sd, 1.0)
    return -np.linalg.norm(f[:, None] - f[None, :], axis=-1)


def random_similarity(n: int, seed: int) -> np.ndarray:
    """``(n, n)`` i.i.d. uniform similarities from ``seed``: random positives (module docstring)."""
    return np.random.default_rng([seed, n]).random((n, n))


def cosine_similarity(profiles: np.ndarray) -> np.ndarray:
    """``(n, n)`` cosine similarities of the rows of ``profiles``; NaN in the rows and columns of all-zero rows."""
    p = np.asarray(profiles, np.float64)
    if p.ndim != 2:
        raise ValueError(f"profiles must be (regions, features), got shape {p.shape}")
    norm = np.linalg.norm(p, axis=1)
    unit = np.divide(p, norm[:, None], out=np.zeros_like(p), where=norm[:, None] > 0)
    s = unit @ unit.T
    s[norm == 0, :] = np.nan
    s[:, norm == 0] = np.nan
    return s


def neighbour_similarity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``s_ij = -sqrt((x_i - x_j)^2 + (y_i - y_j)^2)``: the nearest regions rank first."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return -np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])


def _off_diagonal(similarity: np.ndarray, anchor: int) -> np.ndarray:
    row = similarity[anchor].astype(np.float64).copy()
    row[anchor] = np.nan
    return row


def valid_anchors(similarity: np.ndarray) -> np.ndarray:
    """Indices of the rows that rank other regions: some finite off-diagonal entry, not all of them zero."""
    similarity = np.asarray(similarity, np.float64)
    off = similarity.copy()
    np.fill_diagonal(off, np.nan)
    finite = np.isfinite(off)
    informative = finite.any(1) & (np.where(finite, np.abs(off), 0).max(1) > 0)
    return np.flatnonzero(informative)


class PairSampler:
    """Anchor, positive, negative index triplets from a similarity matrix (module docstring).

    ``top_k`` >= 1: how many of the most similar regions a positive is drawn
    from; ``seed``: the random order that breaks ties (module docstring). Positives are drawn among the finite entries of the anchor's row;
    NaN columns (regions without a profile) are never positives but may be
    negatives: a negative is any other region.
    """

    def __init__(self, similarity: np.ndarray, top_k: int = 1, seed: int = 0):
        similarity = np.asarray(similarity, np.float64)
        if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
            raise ValueError(f"similarity must be a square (n, n) matrix, got shape {similarity.shape}")
        n = similarity.shape[0]
        if n < 3:
            raise ValueError(f"need at least 3 regions (an anchor, a positive and a negative), got {n}")
        if not 1 <= top_k < n:
            raise ValueError(f"top_k must lie in [1, {n - 1}], got {top_k}")
        self.similarity, self.top_k, self.n = similarity, top_k, n
        # One random rank per region: among equal similarities the region of lower rank comes first.
        self._tie_rank = np.random.default_rng(seed).permutation(n)
        self._candidates: dict[int, np.ndarray] = {}

    def candidates(self, anchor: int) -> np.ndarray:
        """The (up to) ``top_k`` regions most similar to ``anchor``, most similar first; never ``anchor``."""
        if anchor not in self._candidates:
            row = _off_diagonal(self.similarity, anchor)
            finite = np.isfinite(row)
            if not finite.any():
                raise ValueError(f"similarity row of anchor {anchor} has no finite entry besides itself "
                                 "(a region without a profile): drop it with valid_anchors()")
            if not np.any(row[finite] != 0):
                raise ValueError(f"similarity row of anchor {anchor} is all zero: it ranks no region; "
                                 "drop it with valid_anchors()")
            candidates = np.flatnonzero(finite)
            ranked = candidates[np.lexsort((self._tie_rank[candidates], -row[candidates]))]
            self._candidates[anchor] = ranked[: self.top_k]
        return self._candidates[anchor]

    def sample(self, anchors: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(anchor, positive, negative)`` index arrays, one triplet per entry of ``anchors``."""
        anchors = np.asarray(anchors, np.int64)
        if anchors.size and (anchors.min() < 0 or anchors.max() >= self.n):
            raise IndexError(f"anchors must lie in [0, {self.n}), got range [{anchors.min()}, {anchors.max()}]")
        positive = np.empty_like(anchors)
        negative = np.empty_like(anchors)
        for i, a in enumerate(anchors):
            pool = self.candidates(int(a))
            positive[i] = pool[rng.integers(len(pool))]
            # Uniform over the n - 2 regions other than the anchor and the positive.
            r = int(rng.integers(self.n - 2))
            for taken in sorted((int(a), int(positive[i]))):
                if r >= taken:
                    r += 1
            negative[i] = r
        return anchors, positive, negative
