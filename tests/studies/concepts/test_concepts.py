"""Tests of the concepts study (lib/studies/concepts): parameters, ground-truth agreement, concept sets, end to end."""

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy import stats

from lib.data.splits import stratified_split
from lib.data.tiles import load_tiles
from lib.runtime import runtime
from lib.studies.concepts import evaluate, model, train
from lib.studies.concepts.params import ConceptsEvalParams, ConceptsParams, ConceptsTrainParams
from lib.data.city import build_city, river_city

# A complete, tiny parameter section: one step of each variant on a 4 x 4-tile city.
TINY = {
    "seed": 0,
    "device": "cpu",
    "inference_batch_size": 8,
    "outcome": None,
    "split": {"val_fraction": 0.15, "test_fraction": 0.15, "n_strata": 4},
    "model": {"width": 8, "embedding_dim": 8},
    "augment": {"crop_min": 0.7, "jitter": 0.2},
    "rnc": {"temperature": 2.0, "epochs": 1, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "max_steps_per_epoch": 1},
    "probe": {"ridge_alphas": [0.1, 10.0]},
    "baseline": {"epochs": 1, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "max_steps_per_epoch": 1},
    "eval": {"knn_k": 3, "tsne_perplexity": 5.0},
    "tcav": {"layer": "encoder.layer3", "threshold": 0.3, "set_size": 3, "min_concept_size": 2, "n_random": 10,
             "n_intervals": 2, "alpha": 0.05, "bonferroni": True, "statistic": "score", "concept_table": None},
}


# ------------------------------------------------------------------ parameters
def test_params_accept_the_tiny_section_and_reject_unknown_keys():
    cfg = ConceptsParams.model_validate(TINY)
    assert cfg.tcav.n_random == 10 and cfg.outcome is None

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
        ("tcav", "n_random", 5, "greater than or equal to 10"),
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


def test_conclusion_follows_the_numbers():
    def table(rnc, baseline):
        columns = ["latent_spearman", "knn_r2", "r2"]
        return pd.DataFrame([rnc, baseline], index=["rnc", "baseline"], columns=columns)

    assert "orders the latent space better than" in evaluate.conclusion(table([0.6, 0.7, 0.7], [0.3, 0.5, 0.4]), None, "score")
    assert "does not order" in evaluate.conclusion(table([0.2, 0.4, 0.4], [0.3, 0.5, 0.4]), None, "score")
    assert "by one measure better" in evaluate.conclusion(table([0.509, 0.64, 0.6], [0.514, 0.56, 0.6]), None, "score")
    agreement = pd.DataFrame({"variant": ["rnc", "baseline"], "statistic": "score", "n_concepts": 2, "spearman": np.nan})
    assert "too few" in evaluate.conclusion(table([0.6, 0.7, 0.7], [0.3, 0.5, 0.4]), agreement, "score")


# ------------------------------------------------------------------ augmentation and concepts
def test_concept_sets_keep_dominant_tiles_and_skip_rare_concepts():
    fractions = pd.DataFrame({"forest": [0.9, 0.6, 0.2, 0.7, 0.8], "water": [0.0, 0.4, 0.8, 0.1, 0.0]})
    pool = np.array([0, 1, 2, 3])  # tile 4 is a test tile
    sets = evaluate.concept_sets(fractions, pool, threshold=0.5, set_size=2, min_size=2, seed=0)
    assert set(sets.members) == {"forest"}
    assert len(sets.members["forest"]) == 2 and set(sets.members["forest"]) <= {0, 1, 3}
    assert sets.table.set_index("concept")["qualifying_tiles"].to_dict() == {"forest": 3, "water": 1}


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_city(tmp_path_factory):
    out = tmp_path_factory.mktemp("city") / "tiny"
    build_city(river_city(name="tiny", grid=(4, 4), tile_px=32, regions={"spacing_m": 64.0}, views_per_region=1), out)
    return out / "tiles.nc"


def test_end_to_end_on_a_tiny_city(tiny_city, tmp_path):
    ConceptsParams.model_validate(TINY)  # the section is the union of the two stages' parts
    cfg, eval_cfg = (stage.model_validate({k: TINY[k] for k in stage.model_fields})
                     for stage in (ConceptsTrainParams, ConceptsEvalParams))
    assert set(ConceptsTrainParams.model_fields) | set(ConceptsEvalParams.model_fields) == set(ConceptsParams.model_fields)
    data = load_tiles(tiny_city)
    assert data.outcome_name == "liveability" and data.images.shape == (16, 4, 32, 32)
    split = stratified_split(data.outcome, cfg.split.val_fraction, cfg.split.test_fraction, cfg.split.n_strata, cfg.seed)

    trained = {v: train.train_variant(cfg, data, split, v, tmp_path / f"tiny_{v}.safetensors", progress=False)
               for v in model.VARIANTS}
    rt = runtime("cpu")
    for variant, fitted in trained.items():
        assert len(fitted.meta["history"]) == 1
        reloaded = model.load_variant(tmp_path / f"tiny_{variant}.safetensors")
        # The evaluation stage reads the saved weights: they predict exactly what the trained model did.
        np.testing.assert_array_equal(reloaded.predict(data.images, rt), fitted.predict(data.images, rt))
    trained = {v: model.load_variant(tmp_path / f"tiny_{v}.safetensors") for v in model.VARIANTS}
    assert "probe_alpha" in trained["rnc"].meta

    metrics = evaluate.metrics_table(trained, data, split, eval_cfg)
    assert list(metrics.index) == ["rnc", "baseline"]
    assert {"r2", "mae", "kendall_tau", "latent_spearman", "knn_r2", "val_r2"} <= set(metrics.columns)
    assert np.isfinite(metrics[["r2", "mae", "latent_spearman", "knn_r2"]].to_numpy(float)).all()

    t = eval_cfg.tcav
    sets = evaluate.concept_sets(data.concepts, np.concatenate([split.fit, split.val]), t.threshold,
                                 t.set_size, t.min_concept_size, eval_cfg.seed)
    tcav = {"rnc": evaluate.concept_tcav(trained["rnc"], data, split, sets, eval_cfg)}  # one variant: the test stays short
    assert set(tcav["rnc"]["concept"]) == {*sets.members, "random_0"}
    agreement = evaluate.agreement_table(tcav, data.true_effects)
    assert set(agreement["statistic"]) == {"score", "magnitude"}

    evaluate.save_results(tmp_path / "results", "tiny", data, split, metrics, model.history_frame(trained), eval_cfg,
                          sets=sets, tcav=tcav, agreement=agreement)
    saved = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert saved["variants"]["rnc"]["r2"] == pytest.approx(metrics.loc["rnc", "r2"])
    assert saved["tiles"] == {"fit": len(split.fit), "validation": len(split.val), "test": len(split.test)}
    assert set(saved["ground_truth_agreement"]) == {"rnc"}
    headline = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert set(headline) == {"rnc", "baseline"}
    assert set(headline["rnc"]) == {"r2", "latent_spearman", "knn_r2", "ground_truth_spearman"}
    assert headline["baseline"]["knn_r2"] == pytest.approx(metrics.loc["baseline", "knn_r2"], abs=5e-5)
    curves = pd.read_csv(tmp_path / "results" / "plots" / "validation_r2.csv")
    assert list(curves.columns) == ["epoch", "rnc", "baseline"] and curves["epoch"].tolist() == [1]
    assert (tmp_path / "results" / "tables" / "tcav_intervals.csv").exists()
