"""POIs whose category and text carry a region's commercial character (lib.data.poi_text)."""

from __future__ import annotations

import re
import string
import time

import numpy as np
import pytest

from lib.data import poi_text
from lib.data.poi_text import (
    HIGH_STEMS,
    HIGH_WORDS,
    LANDCOVER_LABELS,
    LOW_STEMS,
    LOW_WORDS,
    POI_CATEGORIES,
    POI_LANDCOVERS,
    TEMPLATES,
    category_weights,
    commercial_loadings,
    commercial_vocabulary_score,
    draw_pois,
    p_high,
)

C_GRID = np.linspace(-3, 3, 25)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _mixed(n: int) -> tuple[list[str], list[bool]]:
    """``n`` POIs cycling through the land covers, every third one near water."""
    return [POI_LANDCOVERS[i % len(POI_LANDCOVERS)] for i in range(n)], [i % 3 == 0 for i in range(n)]


# ---------------------------------------------------------------------------
# Category weights
# ---------------------------------------------------------------------------


def test_weights_are_a_distribution_for_every_land_cover_and_c():
    for landcover in POI_LANDCOVERS:
        for c in C_GRID:
            w = category_weights(landcover, c)
            assert w.shape == (len(POI_CATEGORIES),)
            assert np.isfinite(w).all() and (w >= 0).all(), (landcover, c)
            assert w.sum() == pytest.approx(1.0, abs=1e-12), (landcover, c)


def test_weights_are_base_times_exp_of_loading_times_c():
    beta = commercial_loadings()
    for landcover in POI_LANDCOVERS:
        w0 = category_weights(landcover, 0.0)
        for c in (-2.5, -1.0, 0.7, 3.0):
            w = category_weights(landcover, c)
            assert ((w > 0) == (w0 > 0)).all()  # c never opens or closes a category
            on = w0 > 0
            # log(w(c) / w(0)) - beta c is the same for every open category (the normaliser).
            log_ratio = np.log(w[on] / w0[on]) - beta[on] * c
            np.testing.assert_allclose(log_ratio, log_ratio[0], atol=1e-9)


def test_raising_c_moves_mass_to_positive_loading_categories():
    beta = commercial_loadings()
    assert beta[POI_CATEGORIES.index("boutique")] > 0 > beta[POI_CATEGORIES.index("kindergarten")]
    for landcover in POI_LANDCOVERS:
        w0 = category_weights(landcover, 0.0)
        # Both signs are open on every land cover, so c shifts the mix everywhere.
        assert (beta[w0 > 0] > 0).any() and (beta[w0 > 0] < 0).any(), landcover
        expected = np.array([category_weights(landcover, c) @ beta for c in C_GRID])
        assert (np.diff(expected) > 0).all(), landcover
        positive_mass = [category_weights(landcover, c)[beta > 0].sum() for c in (-3.0, 3.0)]
        assert positive_mass[1] - positive_mass[0] > 0.3, (landcover, positive_mass)


def test_water_and_unknown_land_cover_are_errors():
    with pytest.raises(ValueError, match="water"):
        category_weights("water", 0.0)
    with pytest.raises(ValueError, match="water"):
        draw_pois(np.random.default_rng(0), ["forest", "water"], 0.0, [False, True])
    with pytest.raises(ValueError, match="lava"):
        category_weights("lava", 0.0)
    with pytest.raises(ValueError, match="near_water"):
        draw_pois(np.random.default_rng(0), ["forest", "roads"], 0.0, [False])
    with pytest.raises(ValueError, match="finite"):
        category_weights("forest", float("nan"))
    assert LANDCOVER_LABELS[-1] == "water" and "water" not in POI_LANDCOVERS
    assert draw_pois(np.random.default_rng(0), [], 1.0, []) == []


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


def test_same_seed_same_pois_and_another_seed_others():
    landcover, near = _mixed(200)
    a = draw_pois(np.random.default_rng(5), landcover, 0.3, near)
    b = draw_pois(np.random.default_rng(5), landcover, 0.3, near)
    other = draw_pois(np.random.default_rng(6), landcover, 0.3, near)
    assert a == b
    assert a != other
    assert all(set(p) == {"category", "name", "description"} for p in a)


def test_text_at_high_and_low_c_separates_by_vocabulary_score():
    rng = np.random.default_rng(0)
    scores = {}
    for c in (2.0, -2.0):
        pois = draw_pois(rng, ["medium_residential"] * 500, c, [False] * 500)
        scores[c] = np.array([commercial_vocabulary_score(p["description"]) for p in pois])
    assert scores[2.0].mean() - scores[-2.0].mean() > 1.2
    accuracy = ((scores[2.0] > 0).sum() + (scores[-2.0] < 0).sum()) / 1000
    assert accuracy >= 0.9


def test_share_of_upmarket_wording_is_graded_in_c():
    rng = np.random.default_rng(1)
    landcover, near = _mixed(400)
    grid = np.linspace(-3, 3, 13)
    means = np.array([np.mean([commercial_vocabulary_score(f"{p['name']} {p['description']}")
                               for p in draw_pois(rng, landcover, c, near)]) for c in grid])
    assert (np.diff(means) > 0).all(), means
    assert abs(means[6]) < 0.1  # c = 0: balanced
    # Graded, not a switch: c = +-1 sits well inside the range spanned by +-3.
    assert 0.2 < means[8] < 0.8 * means[12] and 0.8 * means[0] < means[4] < -0.2


def test_category_histogram_follows_c():
    rng = np.random.default_rng(2)
    beta = commercial_loadings()
    landcover, near = _mixed(400)
    grid = np.linspace(-3, 3, 13)
    mean_loading, upmarket, family = [], [], []
    for c in grid:
        cats = [p["category"] for p in draw_pois(rng, landcover, c, near)]
        counts = np.array([cats.count(k) for k in POI_CATEGORIES])
        mean_loading.append(counts @ beta / counts.sum())
        upmarket.append(sum(cats.count(k) for k in ("boutique", "bank", "office", "hotel", "bar")) / len(cats))
        family.append(sum(cats.count(k) for k in ("school", "kindergarten", "church", "farm_shop")) / len(cats))
    assert np.corrcoef(grid, mean_loading)[0, 1] > 0.95
    assert np.corrcoef(grid, upmarket)[0, 1] > 0.9
    assert np.corrcoef(grid, family)[0, 1] < -0.9


def test_categories_follow_land_cover():
    pois = draw_pois(np.random.default_rng(3), ["agriculture"] * 300 + ["industrial_commercial"] * 300, 0.0,
                     [False] * 600)
    farm = [p["category"] for p in pois[:300]]
    industry = [p["category"] for p in pois[300:]]
    assert farm.count("farm_shop") > 100 and "farm_shop" not in industry
    assert industry.count("warehouse") > 60 and "warehouse" in POI_CATEGORIES


def test_near_water_phrase_iff_near_water():
    rng = np.random.default_rng(4)
    landcover, _ = _mixed(900)
    near = list(rng.random(900) < 0.4)
    for c in (-2.0, 0.0, 2.0):
        for p, wet in zip(draw_pois(rng, landcover, c, near), near, strict=True):
            assert ("by the water" in p["description"]) == wet, p
    # Nothing else says "water".
    pools = sum(poi_text._ADJECTIVES + poi_text._SETTINGS + poi_text._FEATURES, ())
    places = sum(poi_text._PLACES.values(), ())
    text = " ".join(pools + places + TEMPLATES).replace("{water}", "")
    assert "water" not in text.lower()


def test_descriptions_have_8_to_20_words():
    rng = np.random.default_rng(5)
    landcover, near = _mixed(4000)
    for c in (-3.0, 0.0, 3.0):
        lengths = [len(p["description"].split()) for p in draw_pois(rng, landcover, c, near)]
        assert 8 <= min(lengths) and max(lengths) <= 20
    # The bound holds for every combination: fill each template with the longest / shortest items.
    pools = poi_text._ADJECTIVES[0] + poi_text._ADJECTIVES[1]
    settings = poi_text._SETTINGS[0] + poi_text._SETTINGS[1]
    features = poi_text._FEATURES[0] + poi_text._FEATURES[1]
    places = sum(poi_text._PLACES.values(), ())
    nouns = tuple(poi_text._PLAIN_NOUN.values())
    for pick, water in ((max, " by the water"), (min, "")):
        def longest(items, pick=pick):
            return pick(items, key=lambda s: len(s.split()))
        for template in TEMPLATES:
            adj = longest(pools)
            text = template.format(A="A", a="a", adj=adj, Adj=adj, noun=longest(nouns), Noun=longest(nouns),
                                   place=longest(places), water=water, p=longest(settings), P=longest(settings),
                                   f=longest(features), f2=longest(features))
            assert 8 <= len(text.split()) <= 20, text


def test_names_are_stem_and_category_noun():
    rng = np.random.default_rng(6)
    landcover, near = _mixed(3000)
    stems = set(poi_text._NEUTRAL_STEMS + HIGH_STEMS + LOW_STEMS)
    for c in (-2.0, 2.0):
        for p in draw_pois(rng, landcover, c, near):
            nouns = sum(poi_text._NAME_NOUNS[p["category"]], ())
            matches = [n for n in nouns if p["name"].endswith(" " + n)]
            assert matches, p
            noun = max(matches, key=len)
            prefix = p["name"][: -len(noun) - 1].split()
            assert 1 <= len(prefix) <= 2 and set(prefix) <= stems, p
            assert len(set(p["name"].split())) == len(p["name"].split()), p  # no repeated word
    names = [p["name"] for p in draw_pois(rng, landcover, 0.0, near)]
    assert len(set(names)) > 1000


def test_categories_are_long_tailed():
    """A dense block's categories: a few common ones hold most POIs, and a long tail of rare ones each under 1 %."""
    n = 20_000
    pois = draw_pois(np.random.default_rng(11), ["dense_residential"] * n, 0.0, [False] * n)
    counts = np.sort(np.unique([p["category"] for p in pois], return_counts=True)[1])[::-1]
    share = counts / n
    assert len(counts) >= 30
    assert share[:5].sum() > 0.4  # the head: 5 of 34 categories
    assert (share < 0.01).sum() >= 10 and share[share < 0.01].sum() < 0.1  # the tail: many, each rare
    # Rank-frequency falls steeply (log-log slope of the sorted shares under -1).
    slope = np.polyfit(np.log(np.arange(1, len(share) + 1)), np.log(share), 1)[0]
    assert slope < -1.0, slope


def test_fast_enough_for_a_city():
    landcover, near = _mixed(10_000)
    start = time.perf_counter()
    pois = draw_pois(np.random.default_rng(7), landcover, 0.5, near)
    assert len(pois) == 10_000
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------------------
# Vocabulary and tables
# ---------------------------------------------------------------------------


def test_enough_categories_templates_and_phrases():
    assert len(POI_CATEGORIES) >= 14 and len(set(POI_CATEGORIES)) == len(POI_CATEGORIES)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", k) for k in POI_CATEGORIES)
    assert len(TEMPLATES) >= 6 and len(set(TEMPLATES)) == len(TEMPLATES)
    for pools in (poi_text._ADJECTIVES, poi_text._SETTINGS, poi_text._FEATURES, (HIGH_STEMS, LOW_STEMS)):
        assert all(len(pool) >= 6 and len(set(pool)) == len(pool) for pool in pools)
    assert len(poi_text._NEUTRAL_STEMS) >= 6
    assert set(poi_text._PLACES) == set(POI_LANDCOVERS)
    assert set(poi_text._PLAIN_NOUN) == set(poi_text._NAME_NOUNS) == set(POI_CATEGORIES)
    for k in POI_CATEGORIES:  # every category can occur somewhere
        assert max(category_weights(lc, 0.0)[POI_CATEGORIES.index(k)] for lc in POI_LANDCOVERS) > 0, k
    fields = {name for t in TEMPLATES for _, name, _, _ in string.Formatter().parse(t) if name}
    assert fields <= {"A", "a", "adj", "Adj", "noun", "Noun", "place", "water", "p", "P", "f", "f2"}
    assert all("{water}" in t and "{place}" in t for t in TEMPLATES)


def test_vocabulary_oracle_matches_the_pools():
    assert not HIGH_WORDS & LOW_WORDS
    for high, low in (poi_text._ADJECTIVES, poi_text._SETTINGS, poi_text._FEATURES, (HIGH_STEMS, LOW_STEMS)):
        for item in high:
            assert _words(item) & HIGH_WORDS and not _words(item) & LOW_WORDS, item
        for item in low:
            assert _words(item) & LOW_WORDS and not _words(item) & HIGH_WORDS, item
    # Neutral parts carry no c.
    neutral = (list(poi_text._PLAIN_NOUN.values()) + list(poi_text._NEUTRAL_STEMS) + list(TEMPLATES)
               + [place for places in poi_text._PLACES.values() for place in places])
    for item in neutral:
        assert not _words(item) & (HIGH_WORDS | LOW_WORDS), item
    for high, low in poi_text._NAME_NOUNS.values():
        assert not any(_words(n) & LOW_WORDS for n in high) and not any(_words(n) & HIGH_WORDS for n in low)


def test_vocabulary_score():
    assert commercial_vocabulary_score("") == 0.0
    assert commercial_vocabulary_score("A bakery on a country road.") == 0.0
    assert commercial_vocabulary_score("Stylish, premium prices") == 1.0
    assert commercial_vocabulary_score("Modest, AFFORDABLE prices") == -1.0
    assert commercial_vocabulary_score("stylish and modest, with premium prices") == pytest.approx(1 / 3)


def test_p_high_is_logistic_in_c():
    assert p_high(0.0) == 0.5
    assert p_high(2.0) == pytest.approx(1 / (1 + np.exp(-2 * poi_text.TEXT_SLOPE)))
    assert p_high(1.0) + p_high(-1.0) == pytest.approx(1.0)


def test_docstring_table_matches_the_code():
    rows = {}
    for line in poi_text.__doc__.splitlines():
        parts = line.split()
        if len(parts) == 2 + len(POI_LANDCOVERS) and parts[0] in POI_CATEGORIES:
            rows[parts[0]] = [float(x) for x in parts[1:]]
    assert list(rows) == list(POI_CATEGORIES)
    beta = commercial_loadings()
    for k, category in enumerate(POI_CATEGORIES):
        assert rows[category][0] == beta[k], category
        base = [category_weights(lc, 0.0)[k] > 0 for lc in POI_LANDCOVERS]
        assert [x > 0 for x in rows[category][1:]] == base, category
        assert tuple(rows[category][1:]) == poi_text._TABLE[k][2], category
