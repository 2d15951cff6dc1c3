"""Tests of the COCOA study's pieces: digit scenes, augmentations, localisation scores, parameters, probe,
batching for the image-text loss, the benchmark's table shapes and the packaged text encoder."""

import json
import os

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lib.data import digit_augment as aug
from lib.data.digit_scenes import make_scenes
from lib.data.mnist import MnistDataset
from lib.data.splits import Split
from lib.explain import attribute as attribution
from lib.explain import cocoa as cocoa_targets
from lib.explain.localisation import box_masks, mass_in_box, pointing_game
from lib.models.convnet import conv_encoder
from lib.runtime import runtime
from lib.studies.cocoa import benchmark, image_text, simclr
from lib.studies.cocoa import params as P

# A tiny but complete configuration; every section is checked by CocoaParams.
SMALL = {
    "seed": 0,
    "device": "cpu",
    "data": {"test_fraction": 0.2},
    "simclr": {"width": 4, "projection_dim": 8, "temperature": 0.5, "epochs": 1, "batch_size": 8, "lr": 0.001,
               "weight_decay": 0.0, "max_steps_per_epoch": 1},
    "augment": {"crop_scale": [0.5, 1.0], "rotation_degrees": 15.0, "erase_prob": 0.5, "erase_scale": [0.05, 0.2],
                "contrast": 0.4, "brightness": 0.2, "noise_std": 0.05},
    "probe": {"regularisation": 1.0, "max_iter": 100},
    "attribution": {"ig_steps": 2, "gradshap_samples": 2, "gradshap_stdev": 0.1, "rise_masks": 8, "rise_grid": 4,
                    "rise_p": 0.5, "batch_size": 64},
    "benchmark": {"n_seeds": 2, "n_explicands": 2, "corpus_size": 3, "foil_size": 4,
                  "methods": ["integrated_gradients", "gradient_shap", "rise"], "blur_sigma": 2.0, "curve_steps": 3},
    "augmentation": {"n_images": 1, "foil_size": 4, "method": "rise"},
    "scenes": {"size": 40, "n_train": 20, "n_test": 4, "n_strokes": 2, "stroke_width": 1.5, "crowded_other_digits": 1},
    "clip": {"width": 4, "epochs": 1, "groups_per_batch": 1, "lr": 0.001, "weight_decay": 0.0, "init_temperature": 0.07,
             "max_steps_per_epoch": 1},
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


# ------------------------------------------------------------------ digit scenes
def test_scene_boxes_hold_exactly_the_digits_ink():
    digits, labels = blocks(30)
    scenes = make_scenes(digits, labels, n_scenes=12, size=48, n_strokes=0, seed=3)
    images = scenes.images[:, 0]
    inside = box_masks(scenes.boxes, 48, 48)
    assert scenes.images.shape == (12, 1, 48, 48) and scenes.other_boxes.shape == (12, 0, 4)
    assert not (images[~inside] > 0).any()  # no ink outside the box ...
    for image, (top, left, bottom, right) in zip(images, scenes.boxes.tolist(), strict=True):
        box = image[top:bottom, left:right]
        # ... and the box is tight: ink on each of its four edges.
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
    assert (images.flatten(1).amax(dim=1) > 0).all()


def test_crowded_scenes_keep_the_other_digit_apart_and_of_another_class():
    digits, labels = blocks(40)
    scenes = make_scenes(digits, labels, n_scenes=20, size=56, n_strokes=0, n_other_digits=1, seed=0)
    named = box_masks(scenes.boxes, 56, 56)
    other = box_masks(scenes.other_boxes[:, 0], 56, 56)
    assert not (named & other).any()
    assert (scenes.other_labels[:, 0] != scenes.labels).all()
    assert not (scenes.images[:, 0][~(named | other)] > 0).any()


def test_scenes_are_seeded():
    digits, labels = blocks(30)
    first, again = (make_scenes(digits, labels, 6, size=40, n_strokes=3, seed=7) for _ in range(2))
    other = make_scenes(digits, labels, 6, size=40, n_strokes=3, seed=8)
    torch.testing.assert_close(first.images, again.images)
    assert torch.equal(first.boxes, again.boxes) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)


# ------------------------------------------------------------------ augmentations
def test_crop_of_the_whole_image_is_the_identity():
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(aug.random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0)), x)


def test_views_are_seeded_in_range_and_differ_between_draws():
    x = torch.rand(4, 1, 28, 28)
    settings = P.AugmentParams.model_validate(SMALL["augment"]).model_dump()
    a = aug.simclr_view(x, **settings, generator=torch.Generator().manual_seed(1))
    b = aug.simclr_view(x, **settings, generator=torch.Generator().manual_seed(1))
    c = aug.simclr_view(x, **settings, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, c)


def test_erasing_sets_a_rectangle_to_the_background():
    x = torch.ones(5, 1, 20, 20)
    x[:, :, 0, 0] = 0.0  # the background level
    erased = aug.random_erasing(x, p=1.0, scale=(0.1, 0.1), generator=torch.Generator().manual_seed(0))
    zeros = (erased[:, 0] == 0).sum(dim=(1, 2)) - 1
    assert torch.all((zeros >= 20) & (zeros <= 60))  # about 10% of 400 pixels, rounded to a rectangle
    torch.testing.assert_close(aug.random_erasing(x, p=0.0), x)


# ------------------------------------------------------------------ localisation scores
def test_pointing_game_and_mass_in_box_on_hand_made_maps():
    boxes = torch.tensor([[2, 2, 5, 5], [2, 2, 5, 5], [0, 0, 2, 2]])
    maps = torch.zeros(3, 8, 8)
    maps[0, 3, 3], maps[0, 7, 7] = 3.0, 1.0  # peak inside; 3 of 4 units of mass inside
    maps[1, 3, 3], maps[1, 6, 6] = 1.0, 2.0  # peak outside; 1 of 3 inside
    maps[1, 0, 0] = -5.0  # negative attribution: ignored by the mass
    maps[2] = -1.0  # nothing positive
    assert pointing_game(maps, boxes).tolist() == [True, False, True]  # ties: the first pixel, (0, 0), is in box 3
    torch.testing.assert_close(mass_in_box(maps, boxes), torch.tensor([0.75, 1 / 3, 0.0]))
    channels = torch.stack([maps, torch.zeros_like(maps)], dim=1)  # (N, C, H, W) is summed over channels
    torch.testing.assert_close(mass_in_box(channels, boxes), mass_in_box(maps, boxes))
    assert box_masks(boxes, 8, 8).sum(dim=(1, 2)).tolist() == [9, 9, 4]


def test_uniform_maps_put_the_box_share_of_their_mass_in_the_box():
    boxes = torch.tensor([[0, 0, 4, 8]])
    torch.testing.assert_close(mass_in_box(torch.ones(1, 8, 8), boxes), torch.tensor([0.5]))


# ------------------------------------------------------------------ parameters
def test_params_accept_the_small_config_and_reject_unknown_keys():
    P.CocoaParams.model_validate(SMALL)
    with pytest.raises(ValidationError, match="extra"):
        P.CocoaParams.model_validate({**SMALL, "epochs": 3})
    with pytest.raises(ValidationError, match="n_step"):
        P.CocoaParams.model_validate({**SMALL, "attribution": {**SMALL["attribution"], "n_step": 3}})


def test_params_reject_sizes_mnist5k_cannot_supply():
    too_many = {**SMALL, "benchmark": {**SMALL["benchmark"], "n_explicands": 101}}  # 100 held-out images per digit
    with pytest.raises(ValidationError, match="n_explicands"):
        P.CocoaParams.model_validate(too_many)
    with pytest.raises(ValidationError, match="crop_scale"):
        P.CocoaParams.model_validate({**SMALL, "augment": {**SMALL["augment"], "crop_scale": [0.9, 0.5]}})


# ------------------------------------------------------------------ probe and batching
def test_grouped_batches_hold_one_scene_of_every_digit_per_group():
    labels = torch.tensor(np.random.default_rng(0).integers(0, 10, 300))
    batches = list(image_text.grouped_batches(labels, groups_per_batch=3, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == int(torch.bincount(labels).min()) // 3
    for batch in batches:
        assert torch.equal(labels[batch].reshape(3, 10), torch.arange(10).expand(3, 10))
    assert len(torch.cat(batches).unique()) == sum(len(b) for b in batches)


# ------------------------------------------------------------------ benchmark
def test_benchmark_on_a_tiny_random_encoder_fills_the_expected_tables():
    cfg = P.CocoaParams.model_validate(SMALL)
    torch.manual_seed(0)
    encoder = conv_encoder(1, width=4, n_blocks=3).eval()
    probe = torch.nn.Linear(encoder.out_dim, 10).eval()
    train, test = blocks(60, seed=1), blocks(40, seed=2)
    digits = Split(fit=MnistDataset(train[0] * 255, train[1]), val=None, test=MnistDataset(test[0] * 255, test[1]))
    result = benchmark.run_benchmark(encoder, probe, digits, cfg, runtime("cpu"), progress=False)

    rankings = len(benchmark.TARGETS) * 3 + 1  # every target x method, and the random ranking
    assert len(result.aucs) == 2 * len(benchmark.SETTINGS) * rankings * len(benchmark.METRICS) * 2
    assert len(result.curves) == len(result.aucs) * (cfg.benchmark.curve_steps + 1)
    assert result.aucs.auc.notna().all()
    summary = benchmark.summarise(result.aucs)
    assert (summary.n_seeds == 2).all()
    table = benchmark.auc_table(summary, "same_class", "corpus_majority_probability")
    assert table.shape == (len(benchmark.TARGETS) + 1, 3 * 2)
    assert list(table.index) == [*benchmark.TARGETS, "random"]
    assert len(benchmark.cocoa_advantage(result.aucs)) == len(benchmark.SETTINGS) * len(benchmark.METRICS) * 3 * 2 * len(benchmark.TARGETS)
    assert set(result.examples) == set(benchmark.SETTINGS)


@pytest.mark.parametrize("method", ["rise", "integrated_gradients"])
def test_attributions_of_all_targets_at_once_equal_one_target_at_a_time(method):
    cfg = P.CocoaParams.model_validate(SMALL).attribution
    torch.manual_seed(1)
    encoder = conv_encoder(1, width=4, n_blocks=3).eval()
    images = torch.from_numpy(blocks(12, seed=3)[0])[:, None]
    x, corpus, foil = images[:1], images[1:5], images[5:]
    reps = {name: simclr.representations(encoder, part, runtime("cpu")) for name, part in
            {"x": x, "corpus": corpus, "foil": foil}.items()}
    shared = {"corpus": cocoa_targets.CorpusSimilarity(encoder, reps["corpus"]),
              "cocoa": cocoa_targets.ContrastiveCorpusSimilarity(encoder, reps["corpus"], reps["foil"])}
    targets = benchmark.explicand_targets(encoder, reps["x"], reps["foil"], shared)
    baseline = torch.zeros_like(x)
    together = attribution.attribute_targets(targets, method, x, baseline, cfg, seed=4)
    assert list(together) == list(targets)
    for name, target in targets.items():
        torch.testing.assert_close(together[name], attribution.attribute(target, method, x, baseline, cfg, seed=4),
                                   rtol=1e-4, atol=1e-6)


def test_rise_of_targets_without_a_shared_encoder_runs_one_target_at_a_time():
    cfg = P.CocoaParams.model_validate(SMALL).attribution
    torch.manual_seed(2)
    encoder = conv_encoder(1, width=4, n_blocks=3).eval()
    probe = torch.nn.Linear(encoder.out_dim, 10).eval()
    targets = {f"class {c}": simclr.ClassProbability(encoder, probe, c) for c in (0, 1)}
    x = torch.from_numpy(blocks(1, seed=5)[0])[:, None]
    together = attribution.attribute_targets(targets, "rise", x, torch.zeros_like(x), cfg, seed=6)
    for name, target in targets.items():
        torch.testing.assert_close(together[name], attribution.attribute(target, "rise", x, torch.zeros_like(x), cfg, seed=6))


# ------------------------------------------------------------------ text encoder
def test_packaged_text_encoder_loads_offline_and_embeds_in_384_dimensions():
    from lib.models import text

    try:
        text.text_encoder_path()
    except FileNotFoundError as err:
        pytest.skip(f"packaged MiniLM not available: {err}")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    embeddings = text.embed_texts(text.digit_captions())
    assert embeddings.shape == (10, 384)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(10))
    similarity = embeddings @ embeddings.T
    assert similarity.fill_diagonal_(0).max() < 0.99  # ten different captions, ten different embeddings


def test_headline_compares_cocoa_with_the_best_other_target():
    import pandas as pd

    from lib.studies.cocoa.results import headline

    rows = []
    for target, ins, dele in (("cocoa", 0.8, 0.2), ("corpus", 0.7, 0.1), ("label_free", 0.9, 0.4), ("random", 0.5, 0.5)):
        for method in ("integrated_gradients", "rise"):
            for curve, value in (("insertion", ins), ("deletion", dele)):
                rows.append({"setting": "same_class", "metric": "contrastive_corpus_similarity", "target": target,
                             "method": method, "curve": curve, "mean": value, "ci95": 0.01, "n_seeds": 2})
                rows.append({"setting": "same_class", "metric": "corpus_majority_probability", "target": target,
                             "method": method, "curve": curve, "mean": 0.0, "ci95": 0.0, "n_seeds": 2})
    localisation = pd.DataFrame([
        {"scenes": "crowded", "method": "integrated_gradients", "target": t, "pointing_game": p}
        for t, p in (("cocoa", 0.74), ("corpus", 0.7), ("random", 0.1))
    ])
    out = headline(pd.DataFrame(rows), localisation, {"probe_test_accuracy": 0.94, "zero_shot_accuracy": 0.85})
    assert out["same_class_insertion"] == {"cocoa": 0.8, "best_other": 0.9}  # higher is better
    assert out["same_class_deletion"] == {"cocoa": 0.2, "best_other": 0.1}  # lower is better
    assert out["crowded_pointing_game"] == {"cocoa": 0.74, "corpus": 0.7}
    assert out["probe_test_accuracy"] == 0.94 and out["caption_accuracy"] == 0.85


def test_plot_data_has_one_file_per_method_and_curve_with_the_random_ranking_in_each(tmp_path):
    import pandas as pd

    from lib.studies.cocoa import results

    rows = [{"seed": seed, "setting": "same_class", "metric": "contrastive_corpus_similarity", "target": target,
             "method": method, "curve": curve, "fraction": f, "score": f * (2 if target == "cocoa" else 1) + seed}
            for seed in (0, 1) for target, method in (("cocoa", "rise"), ("corpus", "rise"), ("random", "random"))
            for curve in ("insertion", "deletion") for f in (0.0, 0.5, 1.0)]
    curves = pd.DataFrame(rows)
    aucs = curves.groupby(["seed", "setting", "metric", "target", "method", "curve"], as_index=False).score.mean()
    aucs = aucs.rename(columns={"score": "auc"})
    localisation = pd.DataFrame([{"scenes": "crowded", "method": "integrated_gradients", "target": "cocoa",
                                  "n_scenes": 2, **{s: 0.5 for s in ("pointing_game", "mass_in_box", "points_at_other_digit")},
                                  **{f"{s}_ci95": 0.1 for s in ("pointing_game", "mass_in_box", "points_at_other_digit")}}])
    augmentation = pd.DataFrame({"image": [0], "augmentation": ["crop"], "similarity": [0.3]})
    cfg = P.CocoaParams.model_validate(SMALL)
    results.save_results(tmp_path, cfg, aucs, curves, localisation, augmentation,
                         {"probe_test_accuracy": 0.9, "zero_shot_accuracy": 0.8})
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["deletion_rise.csv", "insertion_rise.csv"]
    wide = pd.read_csv(tmp_path / "plots" / "insertion_rise.csv")
    assert list(wide.columns) == ["fraction", "cocoa", "corpus", "random"]
    assert wide["cocoa"].tolist() == [0.5, 1.5, 2.5] and wide["random"].tolist() == [0.5, 1.0, 1.5]  # means over seeds
    assert {"same_class_insertion", "probe_test_accuracy"} <= set(json.loads((tmp_path / "metrics.json").read_text()))
