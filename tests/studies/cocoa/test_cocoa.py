"""Tests of the COCOA study's pieces: parameters, batching for the image-text loss, task sampling, the
benchmark's tables, the sanity check, localisation comparisons and results. The shared layers it uses are
tested where they live (tests/data/, tests/explain/, tests/models/)."""

import json
from itertools import product

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from lib.data.mnist import MnistDataset
from lib.data.splits import Split
from lib.models.convnet import conv_encoder
from lib.runtime import runtime
from lib.studies.cocoa import benchmark, image_text, simclr
from lib.studies.cocoa import params as P

# A tiny but complete configuration; every section is checked by CocoaParams.
SMALL = {
    "seeds": [0, 1],
    "device": "cpu",
    "data": {"test_fraction": 0.2, "val_fraction": 0.1},
    "simclr": {"width": 4, "projection_dim": 8, "temperature": 0.5, "epochs": 1, "batch_size": 8, "lr": 0.001,
               "weight_decay": 0.0, "max_steps_per_epoch": 1, "patience": 1, "min_delta": 0.0, "knn_k": 3},
    "supervised": {"epochs": 1, "batch_size": 8, "lr": 0.001, "weight_decay": 0.0, "max_steps_per_epoch": 1,
                   "patience": 1, "min_delta": 0.0},
    "augment": {"crop_scale": [0.5, 1.0], "rotation_degrees": 15.0, "erase_prob": 0.5, "erase_scale": [0.05, 0.2],
                "contrast": 0.4, "brightness": 0.2, "noise_std": 0.05},
    "probe": {"regularisation": 1.0, "max_iter": 100},
    "attribution": {"ig_steps": 2, "gradshap_samples": 2, "gradshap_stdev": 0.1, "rise_masks": 8, "rise_grid": 4,
                    "rise_p": 0.5, "batch_size": 64},
    "benchmark": {"n_explicands": 2, "corpus_size": 3, "foil_size": 4,
                  "methods": ["integrated_gradients", "gradient_shap", "rise"], "blur_sigma": 2.0, "curve_steps": 3},
    "sanity": {"n_explicands": 1, "max_rank_correlation": 0.5},
    "augmentation": {"n_images": 1, "foil_size": 4, "method": "rise"},
    "scenes": {"size": 40, "n_train": 20, "n_val": 4, "n_test": 4, "n_strokes": 2, "stroke_width": 1.5, "crowded_other_digits": 1},
    "clip": {"width": 4, "epochs": 1, "groups_per_batch": 1, "lr": 0.001, "weight_decay": 0.0, "init_temperature": 0.07,
             "max_steps_per_epoch": 1, "patience": 1, "min_delta": 0.0},
    "localisation": {"n_scenes": 2, "methods": ["rise"], "blur_sigma": 3.0},
}


def blocks(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28 x 28 "digits": a random filled rectangle each, grey levels in (0, 1], labels 0..9 in turn."""
    rng = np.random.default_rng(seed)
    digits = np.zeros((n, 28, 28), np.float32)
    for d in digits:
        top, left = rng.integers(2, 12, 2)
        d[top : top + rng.integers(5, 14), left : left + rng.integers(3, 14)] = rng.uniform(0.3, 1.0)
    return digits, np.arange(n) % 10


# ------------------------------------------------------------------ parameters
def test_params_accept_the_small_config_and_reject_unknown_keys():
    P.CocoaParams.model_validate(SMALL)
    with pytest.raises(ValidationError, match="extra"):
        P.CocoaParams.model_validate({**SMALL, "epochs": 3})
    with pytest.raises(ValidationError, match="n_step"):
        P.CocoaParams.model_validate({**SMALL, "attribution": {**SMALL["attribution"], "n_step": 3}})


def test_params_reject_sizes_mnist5k_cannot_supply():
    too_many = {**SMALL, "benchmark": {**SMALL["benchmark"], "n_explicands": 101}}  # 100 held-out images per digit
    with pytest.raises(ValidationError, match="corpus_size"):  # 360 fit digits per class once 40 are validation
        P.CocoaParams.model_validate({**SMALL, "benchmark": {**SMALL["benchmark"], "corpus_size": 360}})
    with pytest.raises(ValidationError, match="n_explicands"):
        P.CocoaParams.model_validate(too_many)
    with pytest.raises(ValidationError, match="crop_scale"):
        P.CocoaParams.model_validate({**SMALL, "augment": {**SMALL["augment"], "crop_scale": [0.9, 0.5]}})


# ------------------------------------------------------------------ batching for the image-text loss
def test_grouped_batches_hold_one_scene_of_every_digit_per_group():
    labels = torch.tensor(np.random.default_rng(0).integers(0, 10, 300))
    batches = list(image_text.grouped_batches(labels, groups_per_batch=3, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == int(torch.bincount(labels).min()) // 3
    for batch in batches:
        assert torch.equal(labels[batch].reshape(3, 10), torch.arange(10).expand(3, 10))
    assert len(torch.cat(batches).unique()) == sum(len(b) for b in batches)


# ------------------------------------------------------------------ seeds and sampling
def tiny_digits(train_n: int = 60, test_n: int = 40) -> Split:
    train, test = blocks(train_n, seed=1), blocks(test_n, seed=2)
    return Split(fit=MnistDataset(train[0] * 255, train[1]), val=None, test=MnistDataset(test[0] * 255, test[1]))


def test_derived_seeds_differ_between_repetitions_keys_and_key_counts():
    from lib.studies.cocoa.data import derived_seed

    seeds = [derived_seed(0, 1), derived_seed(1, 0), derived_seed(0, 1, 0), derived_seed(0, 1, 0, 0), derived_seed(0, 0, 1)]
    assert len(set(seeds)) == len(seeds)  # numpy's SeedSequence alone maps [0, 1] and [0, 1, 0] to one state
    assert derived_seed(3, 2, 5) == derived_seed(3, 2, 5)


def test_every_class_is_the_corpus_class_with_the_reference_sampling():
    cfg = P.CocoaParams.model_validate(SMALL).benchmark
    digits = tiny_digits(200, 60)
    train_y = digits.fit.labels.numpy()
    tasks = benchmark.sample_tasks(digits, cfg, seed=0)
    assert sorted((t.corpus_class, t.setting) for t in tasks) == sorted(
        (c, s) for c in range(10) for s in benchmark.SETTINGS)
    images = digits.fit.images.flatten(1)

    def rows(x):  # indices of training images by content (the blocks are all distinct)
        return {int((images == r).all(dim=1).nonzero()[0, 0]) for r in x.flatten(1)}

    others = set()
    for task in tasks:
        c = task.corpus_class
        corpus, foil, eval_foil = rows(task.corpus), rows(task.foil), rows(task.eval_foil)
        assert len(corpus) == cfg.corpus_size and (train_y[list(corpus)] == c).all()
        assert len(foil) == len(eval_foil) == cfg.foil_size and not (foil & eval_foil) and not (corpus & (foil | eval_foil))
        labels = task.explicand_labels.numpy()
        assert len(labels) == cfg.n_explicands
        assert (labels == c).all() if task.setting == "same_class" else (labels != c).all()
        if task.setting == "different_class":
            others |= set(labels.tolist())
    assert len(others) > 2  # different-class explicands come from the pool of all other classes


def test_foil_pool_keeps_the_corpus_class_share_of_the_training_set():
    labels = np.repeat(np.arange(10), 40)
    rng = np.random.default_rng(0)
    corpus = rng.choice(np.flatnonzero(labels == 4), 10, replace=False)
    pool = benchmark.foil_pool(labels, 4, corpus, rng)
    assert len(set(pool)) == len(pool) and not set(corpus) & set(pool)
    assert (labels[pool] == 4).sum() == 30 and len(pool) == 30 + int(360 * 0.75)  # class 4 keeps its 10 % share
    np.testing.assert_allclose((labels[pool] == 4).mean(), 0.1)


def test_draws_change_with_the_seed_and_not_with_the_target():
    cfg = P.CocoaParams.model_validate(SMALL).benchmark
    digits = tiny_digits()
    first, second = benchmark.sample_tasks(digits, cfg, 0), benchmark.sample_tasks(digits, cfg, 1)
    again = benchmark.sample_tasks(digits, cfg, 0)
    assert first[0].draw_seed(0) != second[0].draw_seed(0)  # RISE masks are drawn per seed
    assert first[0].draw_seed(0) != first[0].draw_seed(1) != first[1].draw_seed(0)
    assert first[0].draw_seed(0) == again[0].draw_seed(0)
    torch.testing.assert_close(first[3].corpus, again[3].corpus)
    assert not torch.equal(first[3].corpus, second[3].corpus)


def test_corpus_majority_class_is_the_modal_probe_prediction_not_the_label():
    from collections import Counter

    encoder = torch.nn.Flatten()  # h(x) = the pixels
    probe = torch.nn.Linear(4, 10, bias=False)
    with torch.no_grad():
        probe.weight.zero_()
        probe.weight[3, 0] = probe.weight[7, 1] = probe.weight[1, 2] = 1.0
    corpus = torch.zeros(7, 1, 2, 2)  # pixel 0 -> class 3, pixel 1 -> class 7, pixel 2 -> class 1
    for i, pixel in enumerate([0, 0, 1, 0, 2, 1, 0]):
        corpus[i].view(-1)[pixel] = 1.0
    predicted = probe(encoder(corpus)).argmax(dim=1).tolist()
    expected = Counter(predicted).most_common(1)[0][0]
    assert simclr.corpus_majority_class(encoder, probe, corpus, runtime("cpu")) == expected == 3
    tie = corpus[[0, 2]]  # one vote each for 3 and 7: the lower class
    assert simclr.corpus_majority_class(encoder, probe, tie, runtime("cpu")) == 3


# ------------------------------------------------------------------ benchmark and its summaries
@pytest.fixture(scope="module")
def tiny_benchmark():
    cfg = P.CocoaParams.model_validate(SMALL)
    torch.manual_seed(0)
    encoder = conv_encoder(1, width=4, n_blocks=3).eval()
    probe = torch.nn.Linear(encoder.out_dim, 10).eval()
    result = benchmark.run_benchmark(encoder, probe, tiny_digits(), cfg, 1, runtime("cpu"), progress=False)
    return cfg, encoder, probe, result


def test_benchmark_on_a_tiny_random_encoder_fills_the_expected_tables(tiny_benchmark):
    cfg, _, _, result = tiny_benchmark
    rankings = len(benchmark.TARGETS) * 3 + 1  # every target x method, and the random ranking
    tasks = 10 * len(benchmark.SETTINGS)
    assert len(result.aucs) == tasks * rankings * len(benchmark.METRICS) * 2
    assert len(result.curves) == len(result.aucs) * (cfg.benchmark.curve_steps + 1)
    assert result.aucs.auc.notna().all() and set(result.aucs.seed) == {1}
    assert result.aucs.majority_class.between(0, 9).all()
    summary = benchmark.summarise(result.aucs)
    assert (summary.n_seeds == 1).all() and summary.low.isna().all() and summary.high.isna().all()  # one seed: no interval
    table = benchmark.auc_table(summary, "same_class", "corpus_majority_probability")
    assert table.shape == (len(benchmark.TARGETS) + 1, 3 * 2)
    assert list(table.index) == [*benchmark.TARGETS, "random"]
    assert set(result.examples) == set(benchmark.SETTINGS)
    assert len(result.first_maps) == tasks
    assert all(m.shape[0] == cfg.sanity.n_explicands for maps in result.first_maps.values() for m in maps.values())


def fake_aucs(n_seeds: int = 3) -> pd.DataFrame:
    """AUCs of two classes per seed, COCOA a bit better than the corpus target, with seed-to-seed noise."""

    rng = np.random.default_rng(0)
    rows = []
    for seed, c, target, curve in product(range(n_seeds), (0, 1), ("cocoa", "corpus", "random"), ("insertion", "deletion")):
        base = {"cocoa": 0.6, "corpus": 0.5, "random": 0.3}[target]
        value = base if curve == "insertion" else 1 - base
        method = "random" if target == "random" else "rise"
        rows.append({"seed": seed, "setting": "same_class", "corpus_class": c, "majority_class": c, "target": target,
                     "method": method, "metric": "contrastive_corpus_similarity", "curve": curve,
                     "auc": value + rng.normal(0, 0.02)})
    return pd.DataFrame(rows)


def test_summary_is_the_interval_over_seeds_and_classes_of_the_class_means():
    from lib.eval.intervals import interval_cell

    aucs = fake_aucs()
    summary = benchmark.summarise(aucs)
    row = summary[(summary.target == "cocoa") & (summary.curve == "insertion")].iloc[0]
    chosen = aucs[(aucs.target == "cocoa") & (aucs.curve == "insertion")]
    per_seed = [chosen[chosen.seed == s].auc.mean() for s in range(3)]
    per_class = [chosen[chosen.seed == s].auc.to_numpy() for s in range(3)]
    cell = row["cell"]
    assert cell == interval_cell(per_seed, bounds=(-2.0, 2.0), items=per_class)
    assert cell.method == "bootstrap_items" and cell.values == pytest.approx(per_seed)
    assert row["mean"] == pytest.approx(np.mean(per_seed)) and row["low"] < row["mean"] < row["high"]


def test_cocoa_advantage_is_the_holm_corrected_paired_comparison_of_seed_means_signed_by_curve():
    from lib.eval.intervals import comparison_cell

    aucs = fake_aucs()
    advantage = benchmark.cocoa_advantage(aucs).set_index(["curve", "other"])
    assert set(advantage.index) == {(c, o) for c in ("insertion", "deletion") for o in ("corpus", "random")}
    seed_mean = aucs.groupby(["target", "curve", "seed"]).auc.mean()
    for curve in ("insertion", "deletion"):
        cocoa, corpus = seed_mean["cocoa", curve].to_numpy(), seed_mean["corpus", curve].to_numpy()
        a, b = ("cocoa", "corpus") if curve == "insertion" else ("corpus", "cocoa")
        expected = comparison_cell(seed_mean[a, curve].to_numpy(), seed_mean[b, curve].to_numpy(), a=a, b=b,
                                   bounds=(-2.0, 2.0))  # a difference of two cosine similarities
        row = advantage.loc[(curve, "corpus")]
        assert row.advantage == pytest.approx(expected.difference) and row.advantage > 0
        assert (row.low, row.high, row.p_value) == (pytest.approx(expected.low), pytest.approx(expected.high),
                                                   pytest.approx(expected.p_value))
        assert (row.cell.a, row.cell.b) == (a, b) and (cocoa > corpus).all() == (curve == "insertion")
    # one Holm family of the four comparisons: the smallest p is multiplied by four
    assert advantage.p_holm.min() == pytest.approx(min(1.0, 4 * advantage.p_value.min()))
    assert (advantage.p_holm >= advantage.p_value).all() and (advantage.supported == (advantage.p_holm < 0.05)).all()
    verdict = benchmark.verdicts(benchmark.cocoa_advantage(aucs)).iloc[0]
    assert verdict.n_columns == 2 and verdict.best_on_average == 2
    one_seed = benchmark.cocoa_advantage(fake_aucs(1))
    assert not one_seed.supported.any() and one_seed.low.isna().all()  # one seed never supports a difference


# ------------------------------------------------------------------ sanity check
def test_sanity_check_gives_one_for_a_copy_and_less_for_a_randomised_encoder(tiny_benchmark, monkeypatch):
    import copy

    from lib.studies.cocoa import sanity

    cfg, encoder, _, result = tiny_benchmark
    check = sanity.model_randomisation(encoder, result, cfg, 1, runtime("cpu"), progress=False)
    assert check.n_blocks == 3 and sorted(check.correlations.randomised_blocks.unique()) == [1, 2, 3]
    randomised = check.full()
    assert len(randomised) == 10 * 2 * cfg.sanity.n_explicands * len(benchmark.TARGETS) * 3
    cascade = sanity.summarise_cascade(check.correlations)
    assert len(cascade) == 3 * len(benchmark.TARGETS) * 3 * 2
    monkeypatch.setattr(sanity, "randomised_encoders", lambda module, seed: [copy.deepcopy(module)])
    copied = sanity.model_randomisation(encoder, result, cfg, 1, runtime("cpu"), progress=False).full()
    for column in sanity.CORRELATIONS:
        np.testing.assert_allclose(copied[column], 1.0, atol=1e-6)  # same weights, same draws: the same maps
        assert randomised[column].mean() < 0.9
    summary = sanity.summarise_sanity(copied, cfg.sanity.max_rank_correlation)
    assert not summary.passes.any() and not summary.method_passes.any()


def test_sanity_summary_passes_a_method_only_when_both_upper_bounds_are_below_the_bound():
    import pandas as pd

    from lib.studies.cocoa import sanity

    rows = []
    for seed, method, signed, absolute in (
        (0, "rise", 0.1, 0.2), (1, "rise", 0.15, 0.25), (2, "rise", 0.05, 0.3),
        (0, "integrated_gradients", 0.1, 0.9), (1, "integrated_gradients", 0.2, 0.8), (2, "integrated_gradients", 0.1, 0.85),
    ):
        rows += [{"seed": seed, "target": "cocoa", "method": method, "rank_correlation": signed + d,
                  "rank_correlation_abs": absolute + d} for d in (-0.01, 0.01)]
    summary = sanity.summarise_sanity(pd.DataFrame(rows), 0.5).set_index(["method", "correlation"])
    assert summary.loc[("rise", "rank_correlation_abs"), "mean"] == pytest.approx(0.25)
    assert summary.loc[("rise", "rank_correlation_abs"), "upper"] > 0.25
    assert summary.loc[("rise", "rank_correlation"), "method_passes"]
    assert summary.loc[("integrated_gradients", "rank_correlation"), "passes"]  # the signed maps pass ...
    assert not summary.loc[("integrated_gradients", "rank_correlation"), "method_passes"]  # ... the absolute do not


# ------------------------------------------------------------------ localisation comparisons
def test_localisation_compares_cocoa_with_the_corpus_target_paired_by_seed():
    import pandas as pd

    from lib.eval.intervals import comparison_cell
    from lib.studies.cocoa import localisation

    rng = np.random.default_rng(1)
    rows = []
    for seed, scene, (target, method) in product(range(3), range(4), (("cocoa", "rise"), ("corpus", "rise"),
                                                                        ("random", "random"))):
        p = {"cocoa": 0.8, "corpus": 0.5, "random": 0.1}[target]
        rows.append({"seed": seed, "scene": scene, "scenes": "crowded", "target": target, "method": method,
                     "pointing_game": float(rng.random() < p), "mass_in_box": p + rng.normal(0, 0.05),
                     "points_at_other_digit": 0.0})
    rows = [r | {"mass_on_digit": r["mass_in_box"]} for r in rows]
    scores = pd.DataFrame(rows)
    comparisons = localisation.compare_localisation(scores).set_index(["score", "other"])
    assert set(comparisons.index) == {(s, o) for s in ("pointing_game", "mass_in_box") for o in ("corpus", "random")}
    mass = scores.groupby(["target", "seed"]).mass_in_box.mean()
    expected = comparison_cell(mass["cocoa"].to_numpy(), mass["corpus"].to_numpy(), a="cocoa", b="corpus",
                               bounds=(0.0, 1.0))
    row = comparisons.loc[("mass_in_box", "corpus")]
    assert row.difference == pytest.approx(expected.difference) and row.high == pytest.approx(expected.high)
    assert row.p_holm >= row.p_value == pytest.approx(expected.p_value) and row.direction == 1
    summary = localisation.summarise_localisation(scores)
    assert set(summary.score) == set(localisation.LOCALISATION_SCORES) and (summary.n_seeds == 3).all()
    # a share of scenes: its interval resamples seeds and scenes, and stays in [0, 1]
    pointing = summary[summary.score == "pointing_game"]
    assert all(c.method == "bootstrap_items" and 0.0 <= c.low <= c.mean <= c.high <= 1.0 for c in pointing["cell"])


# ------------------------------------------------------------------ results
def fake_results(n_seeds: int = 2):
    import pandas as pd

    from lib.studies.cocoa.results import StudyResults

    aucs = fake_aucs(n_seeds)
    curves = pd.concat([aucs.drop(columns="auc").assign(fraction=f, score=aucs.auc * f) for f in (0.0, 0.5, 1.0)])
    localisation = pd.DataFrame([
        {"seed": s, "scene": i, "scenes": name, "target": t, "method": m, "pointing_game": float(i % 2),
         "mass_in_box": 0.3 + 0.1 * i, "mass_on_digit": {"cocoa": 0.5, "corpus": 0.4, "ink": 0.3, "random": 0.1}[t]
         + 0.01 * s + 0.02 * i, "points_at_other_digit": 0.0}
        for s in range(n_seeds) for i in range(2) for name in ("single", "crowded")
        for t, m in (("cocoa", "integrated_gradients"), ("corpus", "integrated_gradients"), ("random", "random"),
                     ("ink", "ink"))])
    augmentation = pd.DataFrame({"seed": list(range(n_seeds)), "image": 0, "augmentation": "crop", "similarity": 0.3})
    sanity = pd.DataFrame([{"seed": s, "randomised_blocks": k, "setting": "same_class", "corpus_class": 0,
                            "explicand": 0, "target": "cocoa", "method": "rise",
                            "rank_correlation": 0.1 + 0.01 * s + 0.1 * (3 - k), "rank_correlation_abs": 0.2}
                           for s in range(n_seeds) for k in (1, 2, 3)])
    accuracies = pd.DataFrame({"seed": list(range(n_seeds)), "probe_test_accuracy": 0.9,
                               "caption_matching_accuracy": [0.8 + 0.01 * s for s in range(n_seeds)]})
    correct = pd.DataFrame([{"seed": s, "rung": rung, "item": i, "correct": float(i < cut + s)}
                            for s in range(n_seeds) for rung, cut in (("pixel_logistic", 6), ("pixel_1nn", 7),
                                                                      ("simclr_probe", 8), ("supervised", 9))
                            for i in range(10)])
    trainings = pd.DataFrame([{"model": m, "seed": s, "selected_epoch": 3, "last_epoch": 8 if m != "image_text" else 9,
                               "max_epochs": 10, "stopped_at_plateau": m != "image_text"}
                              for s in range(n_seeds) for m in ("simclr", "supervised", "image_text")])
    return StudyResults(aucs, curves, localisation, augmentation, sanity, accuracies, {"single": 0.1, "crowded": 0.1},
                        correct, trainings, 3)


def test_results_write_summary_metrics_tables_and_plot_data(tmp_path):
    import pandas as pd

    from lib.studies.cocoa import results
    from lib.studies.cocoa.summary import Summary

    cfg = P.CocoaParams.model_validate(SMALL)
    summary = results.save_results(tmp_path, cfg, fake_results())
    assert Summary.model_validate_json((tmp_path / "summary.json").read_text()) == summary
    cell = summary.benchmark["same_class"]["contrastive_corpus_similarity"]["cocoa"]["rise"]["insertion"]
    assert cell.n == 2 and cell.method == "bootstrap_items" and -2.0 <= cell.low <= cell.high <= 2.0
    assert summary.benchmark["same_class"]["contrastive_corpus_similarity"]["random"]["random"]["deletion"].mean > 0
    comparison = summary.comparisons["same_class"]["contrastive_corpus_similarity"]["rise"]["insertion"]["corpus"]
    assert (comparison.a, comparison.b, comparison.n) == ("cocoa", "corpus", 2) and comparison.p_holm is not None
    assert summary.holm_families == {"benchmark": 4, "localisation": 2 * 2 * 3, "classification": 3,
                                     "positive_control": 2 * 2}
    assert (summary.n_trainings, summary.n_stopped_at_plateau) == (6, 4)
    classification = summary.ladders[0]
    assert [r.rung for r in classification.rows] == ["trivial", "trivial", "method", "bound"]
    assert classification.rows[2].cell.mean == pytest.approx(0.85) and classification.comparisons[0].difference > 0
    control = [lad for lad in summary.ladders if lad.title.startswith("Positive control")]
    assert len(control) == 2 and [r.name for r in control[0].rows][:2] == ["random", "ink (the image itself)"]
    assert summary.recovery["crowded"]["integrated_gradients"]["cocoa"].mean == 1.0  # above the ink on every scene
    assert len(summary.sanity_cascade["cocoa"]["rise"]["rank_correlation"]) == 3
    assert summary.sanity_cascade["cocoa"]["rise"]["rank_correlation"][0].mean > \
        summary.sanity_cascade["cocoa"]["rise"]["rank_correlation"][2].mean
    assert all(c.verdict in ("reproduced", "not reproduced", "not testable here") for c in summary.claims)
    assert summary.localisation_comparisons["crowded"]["integrated_gradients"]["corpus"]["mass_in_box"].n == 2
    assert summary.sanity.passes == {"cocoa": {"rise": True}}
    assert summary.sanity.correlations["cocoa"]["rise"]["rank_correlation"].upper < cfg.sanity.max_rank_correlation
    assert summary.caption_matching_accuracy.mean == pytest.approx(0.805)
    assert summary.caption_matching_accuracy.high <= 1.0 and summary.corpus_majority_is_corpus_class.mean == 1.0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["same_class_insertion"]["cocoa"] > metrics["same_class_insertion"]["best_other"]
    assert metrics["caption_matching_accuracy"] == 0.805 and "zero_shot_accuracy" not in metrics
    assert metrics["crowded_pointing_game"] == {"cocoa": 0.5, "corpus": 0.5}
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["deletion_rise.csv", "insertion_rise.csv"]
    wide = pd.read_csv(tmp_path / "plots" / "insertion_rise.csv")
    assert list(wide.columns) == ["fraction", "cocoa", "corpus", "random"]
    from lib.studies.cocoa.summary import build_summary, headlines

    (tmp_path / "cocoa").mkdir()
    (tmp_path / "cocoa" / "summary.json").write_text(summary.model_dump_json())
    rows = {what: value for what, value, _ in headlines(tmp_path)}
    assert rows["caption matching accuracy (%)"] == summary.caption_matching_accuracy.format(1, 100)
    assert rows["same_class: COCOA best / supported best / another supported better"].endswith("of 2")
    one = build_summary(cfg, fake_results(1))  # one seed: means without intervals
    assert one.caption_matching_accuracy.low is None
    assert not one.comparisons["same_class"]["contrastive_corpus_similarity"]["rise"]["insertion"]["corpus"].supported


def test_the_figures_draw_the_summary_tables():
    import matplotlib.pyplot as plt

    from lib.studies.cocoa import figures, localisation, sanity

    study = fake_results(3)
    fig = figures.localisation_scores(localisation.summarise_localisation(study.localisation), study.box_share)
    assert len(fig.axes) >= 4
    plt.close(fig)
    fig = figures.sanity_correlations(sanity.summarise_sanity(study.full_sanity(), 0.5), 0.5)
    assert len(fig.axes[0].patches) == 1  # one target x method
    plt.close(fig)
    fig = figures.sanity_cascade(sanity.summarise_cascade(study.sanity))
    assert len(fig.axes[0].lines) == 2  # the method's line and the zero line
    plt.close(fig)


def test_a_constant_randomised_map_shares_no_ranking_with_the_trained_one():
    from lib.studies.cocoa import sanity

    trained = {("cocoa", "rise"): torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))}
    randomised = {("cocoa", "rise"): torch.stack([torch.zeros(1, 4, 4), trained["cocoa", "rise"][1]])}
    rows = sanity.compare_maps(trained, randomised)
    assert rows.rank_correlation.tolist() == pytest.approx([0.0, 1.0])
    assert rows.constant_map.tolist() == [True, False]


def test_augmentation_summary_states_a_difference_only_when_the_seeds_support_it():
    import pandas as pd

    from lib.studies.cocoa.augmentations import augmentation_summary

    clear = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "image": 0, "augmentation": ["crop", "noise"] * 3,
                          "similarity": [0.30, 0.10, 0.31, 0.12, 0.29, 0.11]})
    assert "support crop keeping views closer than noise" in augmentation_summary(clear)
    noisy = clear.assign(similarity=[0.30, 0.10, 0.10, 0.31, 0.2, 0.21])
    assert "do not tell" in augmentation_summary(noisy)
    assert "do not tell" in augmentation_summary(clear[clear.seed == 0])  # one seed: no interval, no claim


# ------------------------------------------------------------------ the classification ladder and the plateau
def test_pixel_rungs_equal_scikit_learn_on_the_same_pixels():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lib.studies.cocoa.probes import pixel_predictions

    digits = tiny_digits(200, 60)
    cfg = P.CocoaParams.model_validate(SMALL).probe
    predicted = pixel_predictions(digits.fit, digits.test, cfg)
    x, y = digits.fit.images.flatten(1).double().numpy(), digits.fit.labels.numpy()
    test = digits.test.images.flatten(1).double().numpy()
    logistic = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.regularisation, max_iter=cfg.max_iter)).fit(x, y)
    assert (predicted["pixel_logistic"].numpy() == logistic.predict(test)).mean() >= 0.98
    nearest = KNeighborsClassifier(n_neighbors=1).fit(x, y).predict(test)
    np.testing.assert_array_equal(predicted["pixel_1nn"].numpy(), nearest)


def test_knn_vote_equals_scikit_learn_with_the_cosine():
    from sklearn.neighbors import KNeighborsClassifier

    from lib.studies.cocoa.probes import knn_predict

    rng = np.random.default_rng(0)
    references, labels, queries = rng.normal(size=(80, 6)), rng.integers(0, 4, 80), rng.normal(size=(30, 6))
    ours = knn_predict(torch.tensor(references), torch.tensor(labels), torch.tensor(queries), k=5)
    theirs = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute").fit(references, labels)
    np.testing.assert_array_equal(ours.numpy(), theirs.predict(queries))
    with pytest.raises(ValueError, match="k must"):
        knn_predict(torch.tensor(references), torch.tensor(labels), torch.tensor(queries), k=0)


def test_the_digits_split_into_fit_validation_and_test_without_overlap(monkeypatch):
    from lib.studies.cocoa import data

    images = np.zeros((5000, 28, 28))
    images[:, 0, 0], images[:, 0, 1] = np.arange(5000) % 250, np.arange(5000) // 250  # a unique pair per image
    labels = np.repeat(np.arange(10), 500)
    monkeypatch.setattr(data, "load_mnist5k", lambda data_dir: (images, labels))
    cfg = P.CocoaParams.model_validate(SMALL)
    split = data.load_digits(cfg, 0)
    assert (len(split.fit), len(split.val), len(split.test)) == (3600, 400, 1000)
    keys = [{tuple(row) for row in part.images.flatten(1)[:, :2].tolist()} for part in (split.fit, split.val, split.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert (torch.bincount(split.val.labels) == 40).all()


def test_named_digit_masks_are_the_digit_ink_inside_its_box():
    from lib.explain.localisation import box_masks
    from lib.studies.cocoa import data

    cfg = P.CocoaParams.model_validate(SMALL)
    digits = tiny_digits(60, 40)
    digits = Split(fit=digits.fit, val=digits.fit, test=digits.test)
    scenes = data.make_scene_sets(digits, cfg, 0)
    masks = data.named_digit_masks(digits, cfg, 0)
    for name, tested in (("single", scenes.test), ("crowded", scenes.crowded)):
        mask = masks[name]
        size = cfg.scenes.size
        assert mask.shape == (cfg.scenes.n_test, size, size) and mask.any(dim=(1, 2)).all()
        assert not (mask & ~box_masks(tested.boxes, size, size)).any()  # only inside the named digit's box
        assert (tested.images[:, 0][mask] > 0).all()  # and only on ink
    other = box_masks(scenes.crowded.other_boxes[:, 0], cfg.scenes.size, cfg.scenes.size)
    assert not (masks["crowded"] & other).any()


def test_recovery_counts_scenes_where_a_map_beats_the_ink():
    import pandas as pd

    from lib.studies.cocoa import localisation

    rows = [{"seed": 0, "scenes": "single", "scene": i, "target": t, "method": m, "mass_on_digit": v}
            for i, values in enumerate(((0.5, 0.3), (0.2, 0.4), (0.6, 0.1)))
            for (t, m), v in zip((("cocoa", "rise"), ("ink", "ink")), values, strict=True)]
    recovered = localisation.recovery(pd.DataFrame(rows))
    assert recovered.recovered.tolist() == [1.0, 0.0, 1.0]
