"""Tests of the concepts study (lib/studies/concepts): parameters, ground-truth agreement, concept sets, end to end."""

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from pydantic import ValidationError
from scipy import stats
from torch import nn

from lib.data.city import build_city, load_city, river_city
from lib.explain.tcav import compute_cavs, make_concept, random_concepts, score_by_interval
from lib.runtime import runtime
from lib.studies.concepts import data as city_data
from lib.studies.concepts import evaluate, model, summary, train
from lib.studies.concepts.data import IntervalTruth
from lib.studies.concepts.params import ConceptsEvalParams, ConceptsParams, ConceptsTcav, ConceptsTrainParams

# A complete, tiny parameter section: one step of each variant on a 4 x 4-tile city.
TINY = {
    "seeds": [0, 1],
    "device": "cpu",
    "inference_batch_size": 8,
    "outcome": None,
    "split": {"val_fraction": 0.25, "test_fraction": 0.25, "block_m": 64.0},
    "model": {"width": 8, "embedding_dim": 8},
    "augment": {"crop_min": 0.7, "jitter": 0.2},
    "rnc": {"temperature": 2.0, "epochs": 2, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "max_steps_per_epoch": 1,
            "patience": 1, "min_delta": 0.0, "schedule": "warmup_cosine", "warmup_epochs": 1},
    "probe": {"ridge_alphas": [0.1, 10.0]},
    "baseline": {"epochs": 2, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "max_steps_per_epoch": 1,
                 "patience": 1, "min_delta": 0.0, "schedule": "constant", "warmup_epochs": 0},
    "eval": {"knn_k": 3, "tsne_perplexity": 5.0},
    "control": {"width": 4, "epochs": 2, "patience": 1, "batch_size": 4, "lr": 0.003, "concept": "green_urban",
                "threshold_quantile": 0.5, "effect": 2.0, "delta": 0.05},
    "tcav": {"layer": "encoder.layer3", "threshold": 0.3, "set_size": 3, "min_concept_size": 2, "n_random": [10, 12],
             "n_random_agreement": 0.9,
             "n_intervals": 2, "alpha": 0.05, "bonferroni": True, "statistic": "score", "concept_table": None},
}


# ------------------------------------------------------------------ parameters
def test_params_accept_the_tiny_section_and_reject_unknown_keys():
    cfg = ConceptsParams.model_validate(TINY)
    assert cfg.tcav.n_random == [10, 12] and cfg.outcome is None and cfg.seeds == [0, 1]

    for path in (("epoch",), ("rnc", "temprature"), ("tcav", "layers")):
        values = copy.deepcopy(TINY)
        target = values
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = 1
        with pytest.raises(ValidationError, match=path[-1]) as info:
            ConceptsParams.model_validate(values)
        assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("tcav", "n_random", [5, 20], "distinct and >= 10"),
        ("tcav", "n_random", [10, 10], "distinct and >= 10"),
        ("tcav", "n_random_agreement", 1.5, "less than or equal to 1"),
        ("tcav", "min_concept_size", 4, "exceeds set_size"),
        ("probe", "ridge_alphas", [1.0, 0.0], "must be > 0"),
        ("rnc", "epochs", "ten", "valid integer"),
    ],
)
def test_params_reject_bad_values(section, key, value, message):
    values = copy.deepcopy(TINY)
    values[section][key] = value
    with pytest.raises(ValidationError, match=message):
        ConceptsParams.model_validate(values)


def test_params_need_distinct_seeds():
    with pytest.raises(ValidationError, match="seeds must be distinct"):
        ConceptsParams.model_validate(copy.deepcopy(TINY) | {"seeds": [1, 1]})


# ------------------------------------------------------------------ metrics
def test_ground_truth_agreement_on_a_planted_example():
    truth = pd.Series({"a": -15.0, "b": -2.0, "c": 2.0, "d": 6.0, "e": 12.0, "f": 20.0})
    monotone = pd.Series({k: 1 / (1 + math.exp(-v / 5)) for k, v in truth.items()})
    perfect = evaluate.ground_truth_agreement(monotone, truth)
    assert perfect["n_concepts"] == 6
    assert perfect["spearman"] == pytest.approx(1) and perfect["kendall"] == pytest.approx(1)
    assert evaluate.ground_truth_agreement(-monotone, truth)["spearman"] == pytest.approx(-1)

    # One adjacent swap among 6: rho = 1 - 6 * 2 / (6 * 35), tau = 1 - 2 / 15.
    swapped = monotone.copy()
    swapped["c"], swapped["d"] = monotone["d"], monotone["c"]
    one_swap = evaluate.ground_truth_agreement(swapped, truth)
    assert one_swap["spearman"] == pytest.approx(1 - 12 / 210)
    assert one_swap["kendall"] == pytest.approx(1 - 2 / 15)

    # Concepts without a true effect, or without a sensitivity, do not count.
    extra = pd.concat([swapped, pd.Series({"unknown": 0.9})])
    extra["a"] = np.nan
    partial = evaluate.ground_truth_agreement(extra, truth)
    assert partial["n_concepts"] == 5
    assert partial["spearman"] == pytest.approx(stats.spearmanr(swapped[list("bcdef")], truth[list("bcdef")]).statistic)
    assert math.isnan(evaluate.ground_truth_agreement(monotone[:2], truth)["spearman"])


class _Tiles(SimpleNamespace):
    def __len__(self):
        return self.n


def _reps(rnc: dict, baseline: dict, agreement: dict | None = None, truth_tcav: dict | None = None) -> list:
    """Three synthetic repetitions with the per-seed test metrics given (the others equal for both variants),
    optionally each seed's agreement Spearman per variant and TCAV per interval of the truth concept."""
    reps = []
    for s in range(3):
        rows = {}
        for v, given in (("rnc", rnc), ("baseline", baseline)):
            rows[v] = {m: 0.5 for m in evaluate.METRICS} | {m: x[s] for m, x in given.items()}
            rows[v] |= {"best_epoch": s, "epochs": 3, "max_epochs": 3, "stopped_at_plateau": int(s < 2)}
        split = SimpleNamespace(fit=np.arange(6), val=np.arange(2), test=np.arange(4))
        rep = evaluate.Repetition(s, split, pd.DataFrame(rows).T.rename_axis("variant"),
                                  rungs={"band_statistics": 0.1 + 0.01 * s, "fractions": 0.6, "aerial_oracle": 0.8})
        if agreement is not None:
            rep.agreement = pd.DataFrame([{"variant": v, "statistic": "score", "spearman": rho[s], "kendall": rho[s] / 2,
                                           "n_concepts": 5} for v, rho in agreement.items()])
        if truth_tcav is not None:
            rep.interval_truth = pd.DataFrame([
                {"variant": v, "interval": i, "true_slope": [0.0, 0.0, 10.0, 20.0][i] + s, "tcav": tcav[s][i],
                 "significant": tcav[s][i] > 0.6} for v, tcav in truth_tcav.items() for i in range(4)])
        reps.append(rep)
    return reps


def _summary(reps: list, truth: IntervalTruth | None = None) -> summary.Summary:
    data = _Tiles(outcome_name="income", units="EUR", n=12)
    cfg = ConceptsEvalParams.model_validate({k: TINY[k] for k in ConceptsEvalParams.model_fields})
    cfg = cfg.model_copy(update={"tcav": cfg.tcav.model_copy(update={"n_intervals": 4})})
    return summary.build_summary("tiny", data, 16, 4, reps, cfg, None, truth)


def test_conclusion_states_a_difference_only_where_the_seeds_support_it():
    low = {"latent_spearman": [0.30, 0.31, 0.29], "knn_r2": [0.50, 0.52, 0.48], "r2": [0.40, 0.41, 0.39]}
    high = {k: [x + 0.2 for x in v] for k, v in low.items()}
    assert "orders the latent space better than" in summary.conclusion(_summary(_reps(high, low)))
    assert "worse" in summary.conclusion(_summary(_reps(low, high)))
    # A larger mean whose seeds scatter across the other's: not a finding.
    noisy = {"latent_spearman": [0.9, 0.1, 0.5], "knn_r2": [0.9, 0.1, 0.6], "r2": [0.40, 0.41, 0.39]}
    result = _summary(_reps(noisy, low))
    assert result.variants["rnc"]["latent_spearman"].mean > result.variants["baseline"]["latent_spearman"].mean
    assert not result.comparison["latent_spearman"].supported
    assert "cannot be told apart" in summary.conclusion(result)
    one = {k: v for k, v in high.items()}
    one["knn_r2"] = noisy["knn_r2"]
    assert "better by one measure" in summary.conclusion(_summary(_reps(one, low)))


def test_the_summary_of_synthetic_repetitions_validates_and_corrects_its_family():
    rnc = {"latent_spearman": [0.62, 0.55, 0.71], "knn_r2": [0.50, 0.45, 0.58], "r2": [0.40, 0.38, 0.47],
           "kendall_tau": [0.99, 0.2, 0.95], "mae": [1.0, 3.0, 2.0]}
    l1 = {"latent_spearman": [0.42, 0.35, 0.50], "knn_r2": [0.48, 0.41, 0.55], "r2": [0.41, 0.37, 0.45],
          "kendall_tau": [0.9, 0.3, 0.8], "mae": [1.5, 2.5, 2.2]}
    agreement = {"rnc": [0.9, float("nan"), 0.7], "baseline": [0.3, 0.1, float("nan")]}
    tcav = {"rnc": [[0.5, 0.5, 0.7, 0.9], [0.5, 0.6, 0.8, 0.9], [0.4, 0.5, 0.6, 1.0]],
            "baseline": [[0.9, 0.9, 0.9, 0.9], [0.8, 0.9, 0.8, 0.9], [0.9, 0.8, 0.9, 0.9]]}
    truth = IntervalTruth(concept="green_urban", slope=np.zeros(1), below=0.0, above=20.0)
    result = _summary(_reps(rnc, l1, agreement, tcav), truth)
    assert summary.Summary.model_validate_json(result.model_dump_json()) == result
    # the metric cells: the mean of the seeds, an interval in the metric's range
    kendall = result.variants["rnc"]["kendall_tau"]
    assert kendall.mean == pytest.approx(np.mean(rnc["kendall_tau"])) and kendall.method == "bootstrap"
    assert -1.0 <= kendall.low <= kendall.mean <= kendall.high <= 1.0
    mae = result.variants["rnc"]["mae"]
    assert mae.low >= 0.0 and mae.values == [1.0, 3.0, 2.0]
    # a seed without a number is left out of its cell, and of the paired comparison
    assert result.ground_truth_agreement["rnc"].spearman.n == 2
    assert result.ground_truth_comparison.n == 1 and result.ground_truth_comparison.p_value is None
    # one Holm family per city: six metrics, two ladder comparisons, the agreement, three interval-truth scores and
    # the TCAV claim
    ladder = result.ladders[0]
    assert [r.rung for r in ladder.rows] == ["trivial", "method", "bound", "ceiling", "ceiling"]
    assert [(c.a, c.b) for c in ladder.comparisons] == [
        (summary.LADDER_ROWS[a][0], summary.LADDER_ROWS[b][0])
        for a, b in (("rnc", "band_statistics"), ("rnc", "baseline"), ("baseline", "band_statistics"))]
    tcav_claim = result.claims[2].evidence
    family = [*result.comparison.values(), *ladder.comparisons[::2], result.ground_truth_comparison,
              *result.interval_truth.comparison.values(), tcav_claim]
    assert result.holm_family == 6 + 2 + 1 + 3 + 1 and len(family) == 13
    assert ladder.rows[0].cell.values == pytest.approx([0.10, 0.11, 0.12])
    assert result.stopped_at_plateau["rnc"] == [True, True, False] and result.max_epochs == {"rnc": 3, "baseline": 3}
    # the claims: verdicts from the Holm-corrected comparisons, a reason wherever not reproduced
    assert [c.evidence for c in result.claims[:2]] == [result.comparison["latent_spearman"], result.comparison["r2"]]
    assert result.claims[0].verdict == ("reproduced" if result.comparison["latent_spearman"].supported else
                                        "not reproduced")
    assert all(c.verdict == "reproduced" or c.reason for c in result.claims)
    tested = [c for c in family if c.p_value is not None]
    for c in tested:
        assert c.p_holm >= c.p_value and c.supported == (c.p_holm < 0.05)
    assert min(c.p_holm for c in tested) == pytest.approx(min(c.p_value for c in tested) * len(tested))
    # the interval truth: the slope's cell is a t interval (unbounded), the TCAV cells bootstrap in [0, 1]
    truth_cells = result.interval_truth
    assert truth_cells.true_slope[3].method == "t" and truth_cells.true_slope[3].mean == pytest.approx(21.0)
    assert truth_cells.variants["rnc"].tcav[3].high <= 1.0 and truth_cells.variants["rnc"].significant_seeds == [0, 0, 2, 3]
    # RNC's score rises with the true effect; L1's is flat in seed 0, where its rank correlation is undefined
    assert truth_cells.variants["rnc"].spearman.mean > 0.8 and truth_cells.variants["baseline"].spearman.n == 2
    assert result.tcav is None  # no TCAV tables in these repetitions
    headline = result.headline()
    assert headline["rnc"]["latent_spearman"] == round(np.mean(rnc["latent_spearman"]), 4)
    assert set(headline["rnc"]) == {"r2", "latent_spearman", "knn_r2", "ground_truth_spearman", "interval_truth_spearman"}
    assert "Holm-corrected over 13 comparisons" in summary.conclusion(result)


def test_the_front_page_headlines_read_every_city_summary(tmp_path):
    low = {"latent_spearman": [0.30, 0.31, 0.29], "knn_r2": [0.50, 0.52, 0.48], "r2": [0.40, 0.41, 0.39]}
    high = {k: [x + 0.2 for x in v] for k, v in low.items()}
    result = _summary(_reps(high, low))
    (tmp_path / "concepts" / "tiny").mkdir(parents=True)
    (tmp_path / "concepts" / "tiny" / "summary.json").write_text(result.model_dump_json())
    rows = {what: (value, meaning) for what, value, meaning in summary.headlines(tmp_path)}
    assert rows["tiny / RNC + linear probe: latent_spearman"][0] == result.variants["rnc"]["latent_spearman"].format()
    assert rows["tiny: RNC - L1, latent_spearman"][1].endswith("supported (Holm over 8)")  # 6 metrics, 2 ladder comparisons


def test_the_figures_draw_the_summary_cells():
    import matplotlib.pyplot as plt

    from lib.studies.concepts import figures

    tcav = {"rnc": [[0.5, 0.5, 0.7, 0.9]] * 3, "baseline": [[0.9, 0.8, 0.9, 0.7]] * 3}
    low = {"latent_spearman": [0.30, 0.31, 0.29], "knn_r2": [0.50, 0.52, 0.48], "r2": [0.40, 0.41, 0.39]}
    result = _summary(_reps(low, low, truth_tcav=tcav), IntervalTruth("green_urban", np.zeros(1), 0.0, 20.0))
    fig = figures.metric_bars(result.variants)
    assert len(fig.axes[0].patches) == 2 * len(figures.METRIC_LABELS)  # a bar per variant and metric
    plt.close(fig)
    fig = figures.interval_truth(result.interval_truth, "score", "income")
    assert "rho" in fig.axes[1].get_legend().get_texts()[0].get_text()
    plt.close(fig)


# ------------------------------------------------------------------ augmentation and concepts
def test_concept_sets_keep_dominant_tiles_and_skip_rare_concepts():
    fractions = pd.DataFrame({"forest": [0.9, 0.6, 0.2, 0.7, 0.8], "water": [0.0, 0.4, 0.8, 0.1, 0.0]})
    pool = np.array([0, 1, 2, 3])  # tile 4 is a test tile
    sets = evaluate.concept_sets(fractions, pool, threshold=0.5, set_size=2, min_size=2, seed=0)
    assert set(sets.members) == {"forest"}
    assert len(sets.members["forest"]) == 2 and set(sets.members["forest"]) <= {0, 1, 3}
    assert sets.table.set_index("concept")["qualifying_tiles"].to_dict() == {"forest": 3, "water": 1}


# ------------------------------------------------------------------ choosing n_random on validation tiles
def _decisions(significant: dict[tuple[str, int], bool]) -> pd.DataFrame:
    """A TCAV table with the given significance decisions (two runs each) and null-concept rows."""
    rows = [{"concept": c, "interval": i, "run": r, "score": 0.5, "significant": d}
            for (c, i), d in significant.items() for r in range(2)]
    rows += [{"concept": "random_0", "interval": i, "run": r, "score": 0.5, "significant": False}
             for i in {i for _, i in significant} for r in range(2)]
    table = pd.DataFrame(rows)
    table.attrs["null_concept"] = "random_0"
    return table


def test_choose_n_random_takes_the_smallest_candidate_agreeing_with_the_largest():
    cells = [("forest", 0), ("forest", 1), ("park", 0), ("park", 1), ("fields", 0)]
    largest = dict(zip(cells, [True, True, False, True, False], strict=True))
    one_off = largest | {("park", 0): True}        # 4 of 5 cells agree in this table
    two_off = one_off | {("fields", 0): True}       # 3 of 5
    validation = {10: [_decisions(two_off), _decisions(largest)],   # 8 of 10 agree
                  20: [_decisions(one_off), _decisions(largest)],   # 9 of 10
                  40: [_decisions(largest), _decisions(largest)]}
    tcav = ConceptsTcav.model_validate(TINY["tcav"] | {"n_random": [40, 10, 20], "n_random_agreement": 0.9})
    choice = evaluate.choose_n_random(validation, tcav)
    assert choice.agreement == {10: 0.8, 20: 0.9, 40: 1.0} and choice.cells == 10
    assert choice.chosen == 20
    assert evaluate.choose_n_random(validation, tcav.model_copy(update={"n_random_agreement": 0.8})).chosen == 10
    assert evaluate.choose_n_random(validation, tcav.model_copy(update={"n_random_agreement": 0.95})).chosen == 40
    fixed = tcav.model_copy(update={"n_random": [30]})
    assert evaluate.choose_n_random({30: validation[40]}, fixed).chosen == 30  # one candidate: fixed in advance
    with pytest.raises(ValueError, match="candidates"):
        evaluate.choose_n_random({10: validation[10]}, tcav)


# ------------------------------------------------------------------ the interval-dependent truth
def test_true_slope_by_interval_and_the_agreement_scores_by_hand():
    y = np.arange(8.0)                                   # quartiles {0, 1}, {2, 3}, {4, 5}, {6, 7}
    slope = np.array([0, 0, 0, 30, 30, 30, 30, 30.0])
    np.testing.assert_allclose(evaluate.true_slope_by_interval(slope, y, 4), [0, 15, 30, 30])

    truth = np.array([0.0, 15.0, 30.0, 30.0])
    follows = evaluate.interval_truth_agreement(np.array([0.45, 0.6, 0.8, 0.9]), truth)
    # rho of (1, 2, 3, 4) with (1, 2, 3.5, 3.5); sign: 3 intervals with an effect, all scores above 0.5.
    assert follows["spearman"] == pytest.approx(stats.spearmanr([1, 2, 3, 4], [1, 2, 3.5, 3.5]).statistic)
    assert follows["sign_agreement"] == 1.0 and follows["n_intervals"] == 4
    assert follows["contrast"] == pytest.approx((0.8 + 0.9) / 2 - 0.45)
    against = evaluate.interval_truth_agreement(np.array([0.9, 0.6, 0.4, 0.3]), truth)
    assert against["spearman"] < -0.9 and against["sign_agreement"] == pytest.approx(1 / 3) and against["contrast"] < 0
    flat = evaluate.interval_truth_agreement(np.array([0.5, 0.6, 0.7, np.nan]), np.zeros(4))
    assert math.isnan(flat["spearman"]) and math.isnan(flat["sign_agreement"]) and flat["n_intervals"] == 3
    with pytest.raises(ValueError, match="one length"):
        evaluate.interval_truth_agreement(np.zeros(3), np.zeros(4))


class _ThresholdToy(nn.Module):
    """x (n, 8) -> layer h = x -> y = relu(u . h - t): sensitive to u only above the threshold t."""

    def __init__(self, u: torch.Tensor, threshold: float):
        super().__init__()
        self.layer = nn.Identity()
        self.u, self.threshold = u, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.layer(x) @ self.u - self.threshold)[:, None]


def test_interval_truth_scores_tcav_of_a_model_with_a_known_interval_effect():
    """A model whose output moves along the concept only above the median outcome, like the truth g_u:
    TCAV per interval is 0, 0, 1, 1 and the true slope 0, 0, 30, 30, so rho = 1 and the signs agree."""
    gen = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(8, generator=gen), dim=0)
    inputs = torch.randn(200, 8, generator=gen)
    y = (inputs @ u).numpy().astype(np.float64)          # the outcome: larger along u
    toy = _ThresholdToy(u, float(np.median(y))).eval()
    concept = make_concept(0, "green_urban", 3 * u + 0.3 * torch.randn(60, 8, generator=gen))
    randoms = random_concepts(torch.randn(300, 8, generator=gen), n_runs=10, set_size=60, seed=1)
    table = score_by_interval(toy, "layer", inputs, y, compute_cavs(toy, "layer", [concept], randoms), randoms[0].name)
    truth = city_data.IntervalTruth("green_urban", np.where(y > np.median(y), 30.0, 0.0), 0.0, 30.0)
    rows = evaluate.interval_truth_table({"rnc": table}, truth, SimpleNamespace(outcome=y), np.arange(len(y)), "score", 4)
    assert rows["true_slope"].tolist() == [0.0, 0.0, 30.0, 30.0]
    assert rows["tcav"].tolist() == [0.0, 0.0, 1.0, 1.0]
    # Below the threshold no CAV moves the output (random ones neither): not significant there.
    assert rows["significant"].tolist() == [False, False, True, True]
    scores = evaluate.interval_truth_scores(rows).set_index("variant").loc["rnc"]
    assert scores["spearman"] == pytest.approx(1.0) and scores["sign_agreement"] == 1.0 and scores["contrast"] == 1.0


# ------------------------------------------------------------------ end to end
UNINHABITED = [0, 5, 9]  # tiles marked as open water in the tiny city's copy


@pytest.fixture(scope="module")
def tiny_city(tmp_path_factory):
    """A 4 x 4-tile city whose tiles 0, 5 and 9 are marked uninhabited (outcomes NaN), as water tiles are."""
    out = tmp_path_factory.mktemp("city") / "tiny"
    build_city(river_city(name="tiny", grid=(4, 4), tile_px=32, regions={"spacing_m": 64.0}, views_per_region=1), out)
    with load_city(out) as ds:
        ds = ds.load()
    ds["inhabited"].values[UNINHABITED] = 0
    for name in json.loads(ds.attrs["outcomes"]):
        ds[name].values[UNINHABITED] = np.nan
    path = out / "tiles_with_water.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_uninhabited_tiles_are_in_no_split_and_no_concept_or_random_set(tiny_city):
    cfg = ConceptsEvalParams.model_validate({k: TINY[k] for k in ConceptsEvalParams.model_fields})
    tiles = city_data.load_city_tiles(tiny_city, cfg)
    assert (tiles.n_tiles, tiles.n_uninhabited, len(tiles.data)) == (16, 3, 13)
    water = {str(t) for t in UNINHABITED}
    assert water.isdisjoint(tiles.data.tile_ids) and np.isfinite(tiles.data.outcome).all()
    with xr.open_dataset(tiny_city, engine="h5netcdf") as ds:  # the true slope follows the tiles it belongs to
        slope = ds["liveability_slope_green_urban"].values
    np.testing.assert_array_equal(tiles.truth.slope, slope[tiles.data.tile_ids.astype(int)])
    assert tiles.truth.concept == "green_urban" and (tiles.truth.below, tiles.truth.above) == (0.0, 30.0)
    for seed in cfg.seeds:
        split = city_data.split_for(cfg, tiles.data, seed)
        parts = np.concatenate([split.fit, split.val, split.test])
        assert sorted(parts) == list(range(13))  # every inhabited tile once, nothing else
        pool = evaluate.concept_pool(split)
        sets = evaluate.concept_sets(tiles.data.concepts, pool, 0.3, 3, 2, seed)
        used = np.concatenate([pool, *sets.members.values()])
        assert water.isdisjoint(tiles.data.tile_ids[used])  # concept and random sets draw from the pool


def test_end_to_end_on_a_tiny_city(tiny_city, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # training checkpoints go to ./checkpoints/: keep them out of the repository
    ConceptsParams.model_validate(TINY)  # the section is the union of the two stages' parts
    cfg, eval_cfg = (stage.model_validate({k: TINY[k] for k in stage.model_fields})
                     for stage in (ConceptsTrainParams, ConceptsEvalParams))
    assert set(ConceptsTrainParams.model_fields) | set(ConceptsEvalParams.model_fields) == set(ConceptsParams.model_fields)
    tiles = city_data.load_city_tiles(tiny_city, cfg)
    data = tiles.data
    assert data.outcome_name == "liveability" and data.images.shape == (13, 4, 32, 32)

    trained = train.train_seeds(cfg, data, tmp_path / "models", progress=False)
    assert sorted(trained) == [0, 1]
    rt = runtime("cpu")
    for seed, by_variant in trained.items():
        for variant, fitted in by_variant.items():
            assert 1 <= len(fitted.meta["history"]) <= 2 and fitted.meta["seed"] == seed
            reloaded = model.load_variant(model.model_path(tmp_path / "models", variant, seed))
            # The evaluation stage reads the saved weights: they predict exactly what the trained model did.
            np.testing.assert_array_equal(reloaded.predict(data.images, rt), fitted.predict(data.images, rt))
    # Two seeds, two different models.
    assert not np.array_equal(trained[0]["rnc"].predict(data.images, rt), trained[1]["rnc"].predict(data.images, rt))
    trained = {s: {v: model.load_variant(model.model_path(tmp_path / "models", v, s)) for v in model.VARIANTS}
               for s in cfg.seeds}
    assert "probe_alpha" in trained[0]["rnc"].meta

    reps = []
    for seed in eval_cfg.seeds:
        split = city_data.split_for(eval_cfg, data, seed)
        reps.append(evaluate.Repetition(seed, split, evaluate.metrics_table(trained[seed], data, split, eval_cfg, seed)))
        evaluate.score_rungs(reps[-1], data, eval_cfg)
        assert np.isfinite(list(reps[-1].rungs.values())).all()
    metrics = reps[0].metrics
    assert list(metrics.index) == ["rnc", "baseline"]
    assert {"r2", "mae", "kendall_tau", "latent_spearman", "knn_r2", "val_r2"} <= set(metrics.columns)
    assert np.isfinite(metrics[["r2", "mae", "latent_spearman", "knn_r2"]].to_numpy(float)).all()

    for rep in reps:
        evaluate.prepare_concepts(rep, trained[rep.seed], data, eval_cfg)
        assert sorted(rep.validation) == [10, 12]
    choice = evaluate.choose_n_random(evaluate.validation_tables(reps), eval_cfg.tcav)
    assert choice.chosen in (10, 12) and choice.agreement[12] == 1.0
    for rep in reps:
        evaluate.positive_control(rep, data, eval_cfg, choice.chosen)
        assert len(rep.control.table) == eval_cfg.tcav.n_intervals and rep.control.training["max_epochs"] == 2
    for rep in reps:
        evaluate.explain_test_tiles(rep, trained[rep.seed], data, eval_cfg, choice.chosen, tiles.truth)
        assert set(rep.tcav["rnc"]["concept"]) == {*rep.sets.members, "random_0"}
        assert rep.tcav["rnc"]["run"].max() == choice.chosen - 1
        assert set(rep.agreement["statistic"]) == {"score", "magnitude"}
        assert len(rep.interval_truth) == 2 * eval_cfg.tcav.n_intervals

    result = summary.build_summary("tiny", data, tiles.n_tiles, tiles.n_uninhabited, reps, eval_cfg, choice, tiles.truth)
    history = model.history_frame(trained)
    evaluate.save_results(tmp_path / "results", result, reps, history)
    saved = summary.Summary.model_validate_json((tmp_path / "results" / "summary.json").read_text())
    assert saved == result and saved.seeds == [0, 1]
    assert saved.tiles.model_dump() == {"total": 16, "uninhabited_excluded": 3, "inhabited": 13,
                                        "fit": len(reps[0].split.fit), "validation": len(reps[0].split.val),
                                        "test": len(reps[0].split.test), "block_m": 64.0}
    r2 = saved.variants["rnc"]["r2"]
    assert r2.values == pytest.approx([rep.metrics.loc["rnc", "r2"] for rep in reps])
    assert r2.mean == pytest.approx(np.mean(r2.values)) and r2.low < r2.high <= 1.0
    assert set(saved.comparison) == set(evaluate.METRICS)
    assert all(1 <= e <= 2 for v in model.VARIANTS for e in saved.epochs[v])
    assert all(b <= e for v in model.VARIANTS for b, e in zip(saved.best_epoch[v], saved.epochs[v]))
    # a run that stopped before its maximum stopped at its plateau
    assert all(stop for v in model.VARIANTS for stop, e in zip(saved.stopped_at_plateau[v], saved.epochs[v]) if e < 2)
    assert saved.control is not None and len(saved.control.recovered_seeds) == eval_cfg.tcav.n_intervals
    assert saved.ladders[0].rows[0].name == summary.RUNGS["band_statistics"] and len(saved.claims) == 3
    assert saved.comparison["r2"].n == 2 and saved.comparison["r2"].p_holm is not None
    assert saved.tcav.n_random == choice.chosen and saved.tcav.n_random_choice.candidates == [10, 12]
    tcav_cells = [c for by_c in saved.tcav.cells.values() for by_i in by_c.values() for c in by_i.values()]
    assert all(c.n == 1 or 0.0 <= c.low <= c.high <= 1.0 for c in tcav_cells)  # a concept of one seed: no interval
    assert any(c.n == 2 for c in tcav_cells)
    assert set(saved.ground_truth_agreement) == {"rnc", "baseline"}
    truth = saved.interval_truth
    assert truth.concept == "green_urban" and len(truth.true_slope) == eval_cfg.tcav.n_intervals
    headline = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert set(headline) == {"rnc", "baseline"}
    assert set(headline["rnc"]) == {"r2", "latent_spearman", "knn_r2", "ground_truth_spearman", "interval_truth_spearman"}
    assert headline["baseline"]["knn_r2"] == pytest.approx(np.mean([rep.metrics.loc["baseline", "knn_r2"] for rep in reps]),
                                                           abs=5e-5)
    curves = pd.read_csv(tmp_path / "results" / "plots" / "validation_r2.csv")
    assert list(curves.columns) == ["epoch", "rnc", "baseline"] and curves["epoch"].tolist()[0] == 1
    for table in ("tcav_intervals", "tcav_validation", "interval_truth", "metrics", "ground_truth_agreement",
                  "positive_control"):
        assert "seed" in pd.read_csv(tmp_path / "results" / "tables" / f"{table}.csv").columns
    assert "RNC pretraining" in summary.conclusion(saved)
