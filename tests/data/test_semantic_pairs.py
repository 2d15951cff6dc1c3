"""Semantic similarities of regions and the triplet sampler (MuseCL's pairs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics.pairwise import cosine_similarity as sk_cosine

from lib.data import semantic_pairs as sp


def _pois(rng, regions, categories, n=200):
    return pd.DataFrame({"region": rng.choice(regions, n), "category": rng.choice(categories, n)})


def test_poi_histograms_count_like_a_loop_and_reject_unknown_categories():
    rng = np.random.default_rng(0)
    regions, categories = [10, 11, 12, 15], ["bar", "cafe", "school"]
    pois = _pois(rng, regions + [99], categories)  # region 99 is not among the regions: ignored
    counts = sp.poi_histograms(pois, regions, categories)
    naive = np.zeros((4, 3))
    for region, category in zip(pois["region"], pois["category"]):
        if region in regions:
            naive[regions.index(region), categories.index(category)] += 1
    np.testing.assert_array_equal(counts, naive)
    with pytest.raises(ValueError, match="not in the category list"):
        sp.poi_histograms(pd.DataFrame({"region": [10], "category": ["casino"]}), regions, categories)
    with pytest.raises(KeyError, match="category"):
        sp.poi_histograms(pd.DataFrame({"region": [10]}), regions, categories)


def test_flow_profiles_are_normalised_out_and_in_flows():
    flows = pd.DataFrame({"origin": [1, 1, 2, 3, 3], "destination": [2, 3, 1, 1, 7], "flow": [2, 6, 5, 1, 4]})
    profiles = sp.flow_profiles(flows, [1, 2, 3])
    # region 1: out 2 to region 2, 6 to region 3 -> [0, .25, .75]; in: 5 from 2, 1 from 3 -> [0, 5/6, 1/6]
    np.testing.assert_allclose(profiles[0], [0, 0.25, 0.75, 0, 5 / 6, 1 / 6])
    np.testing.assert_allclose(profiles[1], [1, 0, 0, 1, 0, 0])  # out to 1; in from 1 only
    np.testing.assert_allclose(profiles[2], [1, 0, 0, 1, 0, 0])  # the trip to region 7 is outside: ignored
    assert np.allclose(profiles[:, :3].sum(1), 1) and np.allclose(profiles[:, 3:].sum(1), 1)


def test_cosine_similarity_matches_scikit_learn_and_marks_empty_profiles_nan():
    rng = np.random.default_rng(1)
    p = rng.poisson(2.0, size=(12, 5)).astype(float)
    p[4] = 0
    s = sp.cosine_similarity(p)
    keep = np.arange(12) != 4
    np.testing.assert_allclose(s[np.ix_(keep, keep)], sk_cosine(p[keep]), atol=1e-12)
    assert np.isnan(s[4]).all() and np.isnan(s[:, 4]).all()


def test_sampler_never_returns_the_anchor_and_draws_positives_from_the_top_k():
    rng = np.random.default_rng(2)
    s = sp.cosine_similarity(rng.random((30, 6)))
    sampler = sp.PairSampler(s, top_k=3)
    anchors = np.repeat(np.arange(30), 40)
    a, p, n = sampler.sample(anchors, rng)
    assert (p != a).all() and (n != a).all() and (n != p).all()
    for anchor in range(30):
        row = s[anchor].copy()
        row[anchor] = -np.inf
        top = set(np.argsort(-row)[:3])
        assert set(p[a == anchor]) <= top
    # negatives: uniform over the 28 regions other than anchor and positive; with 1,200 draws each region shows up
    assert set(np.unique(n)) == set(range(30))


def test_sampler_skips_regions_without_a_profile_as_positives_but_not_as_negatives():
    rng = np.random.default_rng(3)
    p = rng.random((8, 4))
    p[5] = 0  # no profile
    s = sp.cosine_similarity(p)
    assert 5 not in sp.valid_anchors(s)
    sampler = sp.PairSampler(s, top_k=7)
    a, pos, neg = sampler.sample(np.repeat(sp.valid_anchors(s), 50), rng)
    assert 5 not in pos and 5 in neg


def test_sampler_fails_naming_the_anchor_on_an_empty_or_all_zero_row():
    s = sp.cosine_similarity(np.array([[1.0, 0], [0, 1.0], [1.0, 0], [0, 0]]))
    with pytest.raises(ValueError, match="anchor 3 has no finite entry"):
        sp.PairSampler(s).sample(np.array([3]), np.random.default_rng(0))
    zero = np.eye(4)  # every region orthogonal to every other: rows rank nothing
    with pytest.raises(ValueError, match="anchor 1 is all zero"):
        sp.PairSampler(zero).sample(np.array([1]), np.random.default_rng(0))
    assert len(sp.valid_anchors(zero)) == 0
    with pytest.raises(ValueError, match="top_k"):
        sp.PairSampler(s, top_k=4)
    with pytest.raises(ValueError, match="square"):
        sp.PairSampler(np.zeros((3, 4)))
    with pytest.raises(IndexError, match="anchors"):
        sp.PairSampler(s).sample(np.array([9]), np.random.default_rng(0))


def test_neighbour_similarity_ranks_the_nearest_first():
    x, y = np.array([0.0, 1, 5, 2]), np.array([0.0, 0, 0, 0])
    sampler = sp.PairSampler(sp.neighbour_similarity(x, y), top_k=1)
    assert sampler.candidates(0).tolist() == [1] and sampler.candidates(2).tolist() == [3]


def test_ties_are_broken_at_random_by_the_seed_not_by_region_index():
    # Anchor 0 has four regions tied at the top: a stable sort would always return region 1.
    s = np.zeros((6, 6))
    s[0, 1:5] = 1.0
    s[0, 5] = 0.5
    firsts = {int(sp.PairSampler(s, 1, seed=seed).candidates(0)[0]) for seed in range(40)}
    assert firsts == {1, 2, 3, 4}  # every tied region is picked by some seed, never the lower-ranked 5
    assert sp.PairSampler(s, 1, seed=3).candidates(0).tolist() == sp.PairSampler(s, 1, seed=3).candidates(0).tolist()
    # Without ties the order is the similarity's, whatever the seed.
    ranked = np.array([[0, 3, 2, 1], [3, 0, 1, 2], [2, 1, 0, 3], [1, 2, 3, 0]], float)
    for seed in range(5):
        assert sp.PairSampler(ranked, 3, seed=seed).candidates(0).tolist() == [1, 2, 3]


def test_oracle_pairs_pick_the_region_nearest_in_the_true_factors():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(30, 3)) * [1.0, 10.0, 0.1]
    sampler = sp.PairSampler(sp.factor_similarity(factors), 1)
    z = (factors - factors.mean(0)) / factors.std(0)
    for a in range(30):
        d = np.array([np.inf if j == a else np.sqrt(((z[a] - z[j]) ** 2).sum()) for j in range(30)])  # naive loop
        assert sampler.candidates(a)[0] == int(np.argmin(d))
    with pytest.raises(ValueError, match="finite"):
        sp.factor_similarity(np.array([[0.0], [np.nan]]))


def test_mobility_similarity_keeps_volumes_that_profiles_normalise_away():
    # Regions 0 and 1 send the same shares of trips to 2 and 3, but region 1 ten times as many.
    flows = pd.DataFrame({"origin": [0, 0, 1, 1, 2, 3], "destination": [2, 3, 2, 3, 3, 2],
                          "flow": [1.0, 3.0, 10.0, 30.0, 2.0, 2.0]})
    regions = [0, 1, 2, 3]
    profiles = sp.cosine_similarity(sp.flow_profiles(flows, regions))
    mobility = sp.mobility_similarity(flows, regions, volume_weight=1.0)
    v = sp.flow_volumes(flows, regions)
    out = np.log1p([4.0, 40.0, 2.0, 2.0])
    assert np.allclose(v[:, 0], (out - out.mean()) / out.std())
    for i in range(4):
        for j in range(4):
            assert np.isclose(mobility[i, j], profiles[i, j] - np.hypot(*(v[i] - v[j])))
    assert np.allclose(sp.mobility_similarity(flows, regions, volume_weight=0.0), profiles)
    assert mobility[0, 1] < profiles[0, 1]
    with pytest.raises(ValueError, match="volume_weight"):
        sp.mobility_similarity(flows, regions, volume_weight=-1.0)


def test_random_similarity_is_seeded():
    assert np.array_equal(sp.random_similarity(5, 1), sp.random_similarity(5, 1))
    assert not np.array_equal(sp.random_similarity(5, 1), sp.random_similarity(5, 2))
