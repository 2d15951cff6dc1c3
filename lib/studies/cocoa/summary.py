"""COCOA's ``summary.json``: its schema (:class:`Summary`) and the function that builds it from what ``cocoa_eval``
measured (:class:`lib.studies.cocoa.results.StudyResults`).

Every number is a mean over seeds with a 95 % interval in the range of its
quantity: where the per-seed value is a mean over items (corpus classes,
explicands, scenes, views) the interval resamples seeds and their items
(:func:`lib.studies.cocoa.stats.over_seeds`); the accuracies and the share of
corpora whose majority class is their own, one number per seed here, get the
percentile bootstrap over seeds. The comparisons of COCOA with the other targets
form two Holm families, the benchmark's and the localisation's
(:func:`lib.studies.cocoa.benchmark.cocoa_advantage`,
:func:`lib.studies.cocoa.localisation.compare_localisation`); ``supported`` is
the Holm-adjusted p below 0.05.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from lib.eval.claims import Claim, Ladder, TrainingRecord
from lib.eval.intervals import ComparisonCell, IntervalCell, interval_cell
from lib.studies.cocoa.augmentations import summarise_augmentation
from lib.studies.cocoa.benchmark import cocoa_advantage, summarise, verdicts
from lib.studies.cocoa.ladder import (
    benchmark_ladders,
    claims,
    classification_ladder,
    positive_control_ladders,
)
from lib.studies.cocoa.localisation import (
    compare_localisation,
    summarise_localisation,
    summarise_recovery,
)
from lib.studies.cocoa.params import CocoaEvalParams
from lib.studies.cocoa.sanity import summarise_cascade, summarise_sanity

if TYPE_CHECKING:
    from lib.studies.cocoa.results import StudyResults

#: The setting and metric of the plotted curves and the headline AUCs.
PLOTTED = ("same_class", "contrastive_corpus_similarity")


class Verdict(BaseModel):
    """Per setting x metric, of the method x curve columns: in how many COCOA's mean AUC is the best of all
    targets, in how many the (Holm-corrected) paired comparisons support it against every one, and in how many
    another target is supported as better."""

    model_config = ConfigDict(extra="forbid")

    n_columns: int
    best_on_average: int
    supported_best: int
    supported_worse: int


class SanityCell(IntervalCell):
    """A rank correlation between trained and randomised-encoder maps, with the bound it is judged by."""

    upper: float
    passes: bool


class Sanity(BaseModel):
    """The model-randomisation check: ``correlations[target][method][correlation]``, whether each target x
    method passes, and the share of randomised-encoder maps that were constant."""

    model_config = ConfigDict(extra="forbid")

    n_explicands: int
    max_rank_correlation: float
    correlations: dict[str, dict[str, dict[str, SanityCell]]]
    passes: dict[str, dict[str, bool]]
    constant_map_share: dict[str, dict[str, float]]


class Training(TrainingRecord):
    """One training of one seed: the epoch kept (best validation score), the last one run, the maximum, and
    whether early stopping ended it at its validation plateau (rather than the maximum)."""


class Summary(BaseModel):
    """``results/cocoa/summary.json``, read by ``paper/sections/cocoa.typ``.

    ``benchmark[setting][metric][target][method][curve]``: the AUC over seeds;
    ``comparisons[setting][metric][method][curve][other]``: COCOA's advantage
    over ``other`` (positive: COCOA better); ``localisation[scenes][method][target][score]``;
    ``localisation_comparisons[scenes][method][other][score]``: COCOA - other;
    ``holm_families``: the size of each Holm family; ``sanity_cascade[target][method][correlation]``: the rank
    correlation after randomising the top k conv blocks, one cell per k = 1 .. ``sanity_blocks`` (the last is the
    full randomisation); ``recovery[scenes][method][target]``: the positive control's share of scenes whose map
    puts more mass on the named digit's pixels than the ink map; ``trainings`` with ``n_stopped_at_plateau`` of
    ``n_trainings``; ``ladders`` (every results table, bottom to top) and ``claims`` (:mod:`lib.eval.claims`).
    """

    model_config = ConfigDict(extra="forbid")

    seeds: list[int]
    n_seeds: int
    n_classes: int
    n_explicands: int
    corpus_size: int
    foil_size: int
    n_scenes: int
    benchmark: dict[str, dict[str, dict[str, dict[str, dict[str, IntervalCell]]]]]
    comparisons: dict[str, dict[str, dict[str, dict[str, dict[str, ComparisonCell]]]]]
    holm_families: dict[str, int]
    verdicts: dict[str, dict[str, Verdict]]
    corpus_majority_is_corpus_class: IntervalCell
    localisation: dict[str, dict[str, dict[str, dict[str, IntervalCell]]]]
    localisation_comparisons: dict[str, dict[str, dict[str, dict[str, ComparisonCell]]]]
    box_share: dict[str, float]
    sanity: Sanity
    augmentation_similarity: dict[str, IntervalCell]
    probe_test_accuracy: IntervalCell
    caption_matching_accuracy: IntervalCell
    sanity_blocks: int
    sanity_cascade: dict[str, dict[str, dict[str, list[IntervalCell]]]]
    recovery: dict[str, dict[str, dict[str, IntervalCell]]]
    trainings: list[Training]
    n_trainings: int
    n_stopped_at_plateau: int
    ladders: list[Ladder]
    claims: list[Claim]

    def headline(self) -> dict:
        """``metrics.json``: the dozen numbers a reader compares between runs, each a mean over seeds rounded
        to 4 decimals.

        Per setting and curve, for the contrastive corpus similarity: COCOA's AUC and the
        best other target's (random included), each averaged over the attribution methods
        (insertion: higher is better, deletion: lower); the probe's test accuracy, the
        caption-matching accuracy, the pointing game of COCOA and of the corpus-only
        target on crowded scenes with Integrated Gradients, and COCOA's rank correlation
        between trained and randomised-encoder maps per method (the sanity check).
        """
        out: dict = {}
        for setting, by_metric in self.benchmark.items():
            by_target = by_metric[PLOTTED[1]]
            for curve in ("insertion", "deletion"):
                means = {target: float(np.mean([cells[curve].mean for cells in by_method.values()]))
                         for target, by_method in by_target.items()}
                others = [v for t, v in means.items() if t != "cocoa"]
                best = max(others) if curve == "insertion" else min(others)
                out[f"{setting}_{curve}"] = {"cocoa": round(means["cocoa"], 4), "best_other": round(best, 4)}
        out["probe_test_accuracy"] = round(self.probe_test_accuracy.mean, 4)
        out["caption_matching_accuracy"] = round(self.caption_matching_accuracy.mean, 4)
        crowded = self.localisation.get("crowded", {}).get("integrated_gradients", {})
        out["crowded_pointing_game"] = {t: round(crowded[t]["pointing_game"].mean, 4) for t in ("cocoa", "corpus")
                                        if t in crowded}
        cocoa = self.sanity.correlations.get("cocoa", {})
        out["sanity_rank_correlation_cocoa"] = {m: round(c["rank_correlation"].mean, 4) for m, c in cocoa.items()}
        out["classification_accuracy"] = {r.name: round(r.cell.mean, 4) for r in self.ladders[0].rows if r.cell}
        out["trainings_stopped_at_plateau"] = f"{self.n_stopped_at_plateau}/{self.n_trainings}"
        return out


def _nest(frame: pd.DataFrame, keys: list[str], column: str = "cell") -> dict:
    """``{row[keys[0]]: ... {row[keys[-1]]: row[column]}}`` of every row of ``frame``."""
    out: dict = {}
    for row in frame.to_dict("records"):
        node = out
        for key in keys[:-1]:
            node = node.setdefault(row[key], {})
        node[row[keys[-1]]] = row[column]
    return out


def _constant_share(sanity: pd.DataFrame) -> dict:
    """Per target and method, the share of randomised-encoder maps that were constant (no ranking at all)."""
    if "constant_map" not in sanity.columns:
        return {}
    share: dict = {}
    for (target, method), rows in sanity.groupby(["target", "method"], sort=False):
        share.setdefault(target, {})[method] = float(rows.constant_map.mean())
    return share


def build_summary(cfg: CocoaEvalParams, results: StudyResults) -> Summary:
    """The summary the paper reads, from every table ``cocoa_eval`` measured (module docstring)."""
    advantage = cocoa_advantage(results.aucs)
    local_comparisons = compare_localisation(results.localisation)
    sanity_rows = summarise_sanity(results.full_sanity(), cfg.sanity.max_rank_correlation)
    cascade: dict = {}
    for row in summarise_cascade(results.sanity).sort_values("randomised_blocks", kind="stable").itertuples():
        cascade.setdefault(row.target, {}).setdefault(row.method, {}).setdefault(row.correlation, []).append(row.cell)
    positive = positive_control_ladders(results.localisation)
    ladders = [classification_ladder(results.correct), *positive, *benchmark_ladders(summarise(results.aucs), advantage)]
    trainings = [Training(**row) for row in results.trainings.to_dict("records")]
    correlations: dict = {}
    passes: dict = {}
    for row in sanity_rows.itertuples():
        correlations.setdefault(row.target, {}).setdefault(row.method, {})[row.correlation] = SanityCell(
            **row.cell.model_dump(), upper=float(row.upper), passes=bool(row.passes))
        passes.setdefault(row.target, {})[row.method] = bool(row.method_passes)
    # Per seed, the share of corpora (one per class and setting) whose probe majority is the corpus class.
    majority = results.aucs.drop_duplicates(["seed", "setting", "corpus_class"]).sort_values("seed", kind="stable")
    own = (majority.majority_class == majority.corpus_class).astype(float)
    by_seed = own.groupby(majority.seed)
    acc = results.accuracies.sort_values("seed")
    verdict: dict = {}
    for row in verdicts(advantage).to_dict("records"):
        verdict.setdefault(row["setting"], {})[row["metric"]] = Verdict(**{k: int(row[k]) for k in Verdict.model_fields})
    return Summary(
        seeds=[int(s) for s in acc.seed],
        n_seeds=len(acc),
        n_classes=int(results.aucs.corpus_class.nunique()),
        n_explicands=cfg.benchmark.n_explicands,
        corpus_size=cfg.benchmark.corpus_size,
        foil_size=cfg.benchmark.foil_size,
        n_scenes=cfg.localisation.n_scenes,
        benchmark=_nest(summarise(results.aucs), ["setting", "metric", "target", "method", "curve"]),
        comparisons=_nest(advantage, ["setting", "metric", "method", "curve", "other"]),
        holm_families={"benchmark": len(advantage), "localisation": len(local_comparisons),
                       "classification": len(ladders[0].comparisons),
                       "positive_control": sum(len(ladder.comparisons) for ladder in positive)},
        verdicts=verdict,
        corpus_majority_is_corpus_class=interval_cell(by_seed.mean().to_numpy(), bounds=(0.0, 1.0),
                                                      items=[v.to_numpy() for _, v in by_seed]),
        localisation=_nest(summarise_localisation(results.localisation), ["scenes", "method", "target", "score"]),
        localisation_comparisons=_nest(local_comparisons, ["scenes", "method", "other", "score"]),
        box_share={k: float(v) for k, v in results.box_share.items()},
        sanity=Sanity(n_explicands=cfg.sanity.n_explicands, max_rank_correlation=cfg.sanity.max_rank_correlation,
                      correlations=correlations, passes=passes, constant_map_share=_constant_share(results.full_sanity())),
        augmentation_similarity=_nest(summarise_augmentation(results.augmentation), ["augmentation"]),
        probe_test_accuracy=interval_cell(acc.probe_test_accuracy.to_numpy(), bounds=(0.0, 1.0)),
        caption_matching_accuracy=interval_cell(acc.caption_matching_accuracy.to_numpy(), bounds=(0.0, 1.0)),
        sanity_blocks=results.n_blocks,
        sanity_cascade=cascade,
        recovery=_nest(summarise_recovery(results.localisation), ["scenes", "method", "target"]),
        trainings=trainings,
        n_trainings=len(trainings),
        n_stopped_at_plateau=sum(t.stopped_at_plateau for t in trainings),
        ladders=ladders,
        claims=claims(advantage, local_comparisons),
    )



def headlines(results: Path) -> list[tuple[str, str, str]]:
    """The front page's rows (what, value, meaning) from ``results/cocoa/summary.json``: the accuracies, COCOA's
    benchmark verdicts and its localisation against the corpus-only target."""
    s = Summary.model_validate_json((results / "cocoa" / "summary.json").read_text(encoding="utf-8"))
    rows = [("probe test accuracy (%)", s.probe_test_accuracy.format(1, 100),
             "linear probe on the SimCLR representation: how much class information it carries"),
            ("caption matching accuracy (%)", s.caption_matching_accuracy.format(1, 100),
             "the image encoder picks its scene's caption among ten (trained on these captions)")]
    for setting, by_metric in s.verdicts.items():
        v = by_metric.get(PLOTTED[1])
        if v is not None:
            rows.append((f"{setting}: COCOA best / supported best / another supported better",
                         f"{v.best_on_average} / {v.supported_best} / {v.supported_worse} of {v.n_columns}",
                         "insertion and deletion columns of the contrastive corpus similarity; paired by seed, "
                         f"Holm over {s.holm_families['benchmark']}"))
    crowded = s.localisation.get("crowded", {}).get("integrated_gradients", {})
    for target in ("cocoa", "corpus"):
        if target in crowded:
            rows.append((f"crowded scenes / {target}: pointing game (%)", crowded[target]["pointing_game"].format(1, 100),
                         "Integrated Gradients map's maximum in the named digit's box"))
    return rows
