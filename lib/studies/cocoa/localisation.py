"""COCOA's localisation with the image-text model (paper Sec. 5.2, "zero-shot object localisation": no box
is seen in training).

COCOA with corpus = the caption of the scene's digit and foil = the other
captions, scored by the pointing game and the attribution mass inside the
digit's box, on held-out single-digit scenes and on *crowded* ones where a
digit of another class shares the canvas (there, "where is a digit" no longer
answers "where is the digit the caption names"). Every target is explained with
every method; COCOA is compared with the corpus-only target (the caption's
similarity without the foil), with a random map and with the *ink* map (the
scene's own intensity as attribution, which points wherever the strokes are
brightest), paired by seed.

The positive control: the named digit's pixels are known
(:func:`lib.studies.cocoa.data.named_digit_masks`), and they hold all the evidence
for its caption (the strokes and the other digit hold none). Every map's share of
positive mass on those pixels (``mass_on_digit``,
:func:`lib.explain.localisation.mass_in_mask`) is set against the random map's
(about the digit's share of the canvas) and the ink map's (the digit's share of
the scene's ink); a method that follows what the model uses must beat both.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lib.data.digit_scenes import DigitScenes
from lib.eval.intervals import comparison_cell
from lib.explain.attribute import attribute_targets
from lib.explain.cocoa import ContrastiveCorpusSimilarity, CorpusSimilarity
from lib.explain.localisation import box_masks, mass_in_box, mass_in_mask, pointing_game
from lib.explain.removal import blur_baseline, random_attribution
from lib.runtime import Runtime
from lib.studies.cocoa.benchmark import explicand_targets
from lib.studies.cocoa.data import derived_seed, seed_global_draws
from lib.studies.cocoa.params import N_CLASSES, CocoaEvalParams
from lib.studies.cocoa.simclr import representations
from lib.studies.cocoa.stats import comparison_columns, over_seeds, per_seed
from lib.timing import phase

#: Key of the localisation's draws among a repetition's derived seeds.
STREAM = 5


def caption_targets(encoder: nn.Module, captions: Tensor, label: int, explicand_repr: Tensor) -> dict[str, nn.Module]:
    """Targets for one scene: corpus = its digit's caption, foil = the other nine captions.

    The corpus and foil are text embeddings; the explicands go through the image
    encoder (the ``explicand_encoder`` of COCOA's targets, Sec. 5.2).
    """
    corpus, foil = captions[label : label + 1], captions[torch.arange(N_CLASSES) != label]
    shared = {
        "corpus": CorpusSimilarity(encoder, corpus, explicand_encoder=encoder),
        "cocoa": ContrastiveCorpusSimilarity(encoder, corpus, foil, explicand_encoder=encoder),
    }
    return explicand_targets(encoder, explicand_repr, foil, shared)


@dataclass(frozen=True)
class Localisation:
    """Scores per scene x target x method (tidy, with the scene set's name) and the maps {(target, method): (n, 1, S, S)}."""

    scores: pd.DataFrame
    maps: dict[tuple[str, str], Tensor]


@phase("evaluate")
def localise(
    encoder: nn.Module, caption_embeddings: Tensor, scenes: DigitScenes, digit_masks: Tensor, name: str,
    cfg: CocoaEvalParams, seed: int, rt: Runtime, progress: bool = True,
) -> Localisation:
    """Explain the first ``localisation.n_scenes`` scenes of a set with repetition ``seed``'s image encoder
    (RISE masks, GradientShap noise and the random map drawn from ``seed``); score every map, the random one and
    the ink map (the scenes themselves) against the named digit's box and its pixels ``digit_masks`` (N, S, S)."""
    encoder = rt.prepare(encoder).eval()
    captions = caption_embeddings.to(rt.device)
    n = cfg.localisation.n_scenes
    images = rt.batch(scenes.images[:n])
    baselines = blur_baseline(images, cfg.localisation.blur_sigma)
    part = SCENE_SETS.index(name) if name in SCENE_SETS else len(SCENE_SETS)
    maps: dict[tuple[str, str], list[Tensor]] = {}
    for i in tqdm(range(n), desc=f"localisation ({name}), seed {seed}", disable=not progress):
        x, b = images[i : i + 1], baselines[i : i + 1]
        targets = caption_targets(encoder, captions, int(scenes.labels[i]), representations(encoder, x, rt))
        draw = derived_seed(seed, STREAM, part, i)
        seed_global_draws(draw)
        explained = {m: attribute_targets(targets, m, x, b, cfg.attribution, seed=draw) for m in cfg.localisation.methods}
        for target_name, method in product(targets, cfg.localisation.methods):
            maps.setdefault((target_name, method), []).append(explained[method][target_name].detach().cpu())
    stacked = {key: torch.cat(values) for key, values in maps.items()}
    generator = torch.Generator().manual_seed(derived_seed(seed, STREAM, part))
    stacked["random", "random"] = random_attribution(images.cpu(), generator)
    stacked["ink", "ink"] = images.cpu()
    return Localisation(localisation_scores(stacked, scenes, digit_masks, n).assign(scenes=name, seed=seed), stacked)


#: The scene sets explained, in order.
SCENE_SETS = ("single", "crowded")


def localisation_scores(maps: dict[tuple[str, str], Tensor], scenes: DigitScenes, digit_masks: Tensor, n: int) -> pd.DataFrame:
    """Per scene x (target, method): pointing-game hit, mass in the named digit's box and on its pixels, and
    whether the map's maximum lies on another digit instead (never, in single-digit scenes)."""
    boxes, others = scenes.boxes[:n], scenes.other_boxes[:n]
    frames = []
    for (target, method), m in maps.items():
        on_other = torch.zeros(n, dtype=torch.bool)
        for k in range(others.shape[1]):
            on_other |= pointing_game(m, others[:, k])
        frames.append(pd.DataFrame({
            "scene": np.arange(n), "target": target, "method": method,
            "pointing_game": pointing_game(m, boxes).float().numpy(), "mass_in_box": mass_in_box(m, boxes).numpy(),
            "mass_on_digit": mass_in_mask(m, digit_masks[:n]).numpy(), "points_at_other_digit": on_other.float().numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def box_share(scenes: DigitScenes, n: int) -> float:
    """Mean share of the canvas inside the named digit's box: a uniform random map's expected mass in the box."""
    size = scenes.images.shape[-1]
    return float(box_masks(scenes.boxes[:n], size, size).float().mean())


def mean_box_share(tested: dict[int, dict[str, DigitScenes]], n: int) -> dict[str, float]:
    """Per scene set, :func:`box_share` averaged over the seeds' scenes ({seed: {name: scenes}})."""
    names = dict.fromkeys(name for by_name in tested.values() for name in by_name)
    return {name: float(np.mean([box_share(by_name[name], n) for by_name in tested.values()])) for name in names}


LOCALISATION_SCORES = ("pointing_game", "mass_in_box", "mass_on_digit", "points_at_other_digit")
#: The scores COCOA is compared on (higher is better).
COMPARED_SCORES = ("pointing_game", "mass_in_box")
#: The maps COCOA is compared with.
COMPARED_WITH = ("corpus", "random", "ink")
#: The maps that need no model: the floor of the positive control.
REFERENCE_MAPS = ("random", "ink")


def summarise_localisation(scores: pd.DataFrame) -> pd.DataFrame:
    """Per scene set x target x method x score: the mean over seeds of the per-seed mean over scenes and its 95 %
    interval, resampling seeds and their scenes (every score is a share in [0, 1];
    :func:`lib.studies.cocoa.stats.over_seeds`)."""
    long = scores.melt(id_vars=["seed", "scenes", "target", "method"], value_vars=list(LOCALISATION_SCORES),
                       var_name="score", value_name="value")
    return over_seeds(long, ["scenes", "target", "method", "score"], "value", (0.0, 1.0))


def _random_under_every_method(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the maps that need no model (random, ink) repeated under every attribution method."""
    fixed = frame[frame.target.isin(REFERENCE_MAPS)]
    methods = [m for m in dict.fromkeys(frame.method) if m not in REFERENCE_MAPS]
    return pd.concat([frame[~frame.target.isin(REFERENCE_MAPS)], *(fixed.assign(method=m) for m in methods)],
                     ignore_index=True)


def compare_localisation(scores: pd.DataFrame) -> pd.DataFrame:
    """COCOA - other target (corpus-only, random, ink), paired by seed, per scene set x method x score (pointing
    game, mass in box; positive: COCOA localises better), all of them one Holm family: the
    :class:`~lib.eval.intervals.ComparisonCell` ``cell`` and its columns (``difference``, ``low``, ``high``,
    ``p_value``, ``p_holm``, ``n_seeds``, ``supported``, ``direction``; :func:`lib.studies.cocoa.stats.comparison_columns`)."""
    by_seed = _random_under_every_method(per_seed(
        scores.melt(id_vars=["seed", "scenes", "target", "method"], value_vars=list(COMPARED_SCORES),
                    var_name="score", value_name="value"),
        ["scenes", "target", "method", "score"], "value"))
    rows = []
    for (scenes, method, score), group in by_seed.groupby(["scenes", "method", "score"], sort=False):
        wide = group.pivot(index="seed", columns="target", values="value").sort_index()
        for other in [t for t in COMPARED_WITH if t in wide.columns]:
            rows.append({"scenes": scenes, "method": method, "score": score, "other": other,
                         "cell": comparison_cell(wide["cocoa"].to_numpy(), wide[other].to_numpy(), a="cocoa", b=other,
                                                 bounds=(0.0, 1.0))})
    return comparison_columns(rows)


def localisation_summary(summary: pd.DataFrame, comparisons: pd.DataFrame, shares: dict[str, float]) -> str:
    """A sentence per scene set x method: COCOA's pointing game and mass in box, the corpus-only target's, and
    whether the paired comparison over seeds tells them apart."""
    lines = []
    means = summary.set_index(["scenes", "method", "target", "score"])["mean"]
    for (scenes, method), rows in comparisons[comparisons.other == "corpus"].groupby(["scenes", "method"], sort=False):
        verdict = []
        for row in rows.itertuples():
            word = {1: "higher", -1: "lower", 0: "not distinguishable"}[row.direction]
            verdict.append(f"{row.score.replace('_', ' ')} {word}")
        lines.append(
            f"{scenes} scenes, {method}: COCOA's maximum lies in the named digit's box in "
            f"{100 * means[scenes, method, 'cocoa', 'pointing_game']:.0f}% of scenes (corpus only: "
            f"{100 * means[scenes, method, 'corpus', 'pointing_game']:.0f}%), with "
            f"{100 * means[scenes, method, 'cocoa', 'mass_in_box']:.0f}% of its positive mass in the box (corpus "
            f"only: {100 * means[scenes, method, 'corpus', 'mass_in_box']:.0f}%, chance: {100 * shares[scenes]:.0f}%); "
            f"against the corpus-only target, paired by seed (Holm-corrected): {', '.join(verdict)}."
        )
    return "\n".join(lines)


def recovery(scores: pd.DataFrame) -> pd.DataFrame:
    """The positive control's recovery per scene: for every target x method, whether its mass on the named digit's
    pixels exceeds the ink map's on the same scene (columns seed, scenes, scene, target, method, recovered)."""
    keys = ["seed", "scenes", "scene"]
    ink = scores[scores.target == "ink"].set_index(keys)["mass_on_digit"]
    explained = scores[~scores.target.isin(REFERENCE_MAPS)]
    floor = ink.reindex(pd.MultiIndex.from_frame(explained[keys])).to_numpy()
    return explained[[*keys, "target", "method"]].assign(recovered=(explained.mass_on_digit.to_numpy() > floor).astype(float))


def summarise_recovery(scores: pd.DataFrame) -> pd.DataFrame:
    """Per scene set x target x method: the share of scenes whose map puts more mass on the named digit than the
    ink map does, mean over seeds with its 95 % interval (resampling seeds and scenes)."""
    return over_seeds(recovery(scores), ["scenes", "target", "method"], "recovered", (0.0, 1.0))
