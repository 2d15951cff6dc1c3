"""The DIML study: deep metric learning with structural matching, end to end.

Zhao, Wang, Lu, Zhou, "Towards Interpretable Deep Metric Learning with
Structural Matching", ICCV 2021. Two images are compared location by location:
the structural similarity of their feature maps (:mod:`lib.explain.structural`)
is an optimal-transport matching whose per-location contributions explain it.

Each baseline loss (margin loss with a distance-weighted miner and learned
beta, multi-similarity loss, from pytorch-metric-learning; :mod:`.loss`) is
trained with the global similarity and with DIML's ``structural`` objective
(the reference code's mix of structural and global similarity), and, for
the losses of ``ablation``, with the ablations ``structural_pure`` and
``structural_uniform``; every model once per seed. The variants compared
(:mod:`.evaluate`): ``baseline`` (global model, global retrieval), ``rerank``
(its global top K re-ranked by structural + global similarity),
``structural_global`` (structural model, global retrieval), ``structural``
(structural model, re-ranked) and the ablations, re-ranked; plus a sweep of
the re-ranking depth K. Each results table is a ladder: raw pixels (trivial),
the method and its variants, a classifier of the same encoder (bound), and on
the embedded set (digits moved, scaled and rotated in clutter) the clean
digits' retrieval (ceiling); a positive control checks that the transport
plan finds the known correspondences of one digit in two scenes.

Stages: ``diml_train@<loss>-<objective>`` and, for the ablations,
``diml_ablation@<loss>-<objective>`` (both run the notebook of stage
``diml_train``, :mod:`.train`; ``python -m lib.studies.diml.train`` under
torchrun), ``diml_fit@<dataset>-<loss>-<objective>`` (the embedded set) and
``diml_bound@<dataset>-cross_entropy-classifier`` (both run the notebook of
``diml_fit``), and ``diml_eval`` (:mod:`.evaluate`).
"""

from typing import get_args

from lib.stage import Stage, committed
from lib.studies.diml.params import (
                                     BoundLoss,
                                     BoundObjective,
                                     Dataset,
                                     DimlEvalParams,
                                     DimlParams,
                                     DimlTrainParams,
                                     Loss,
                                     Objective,
)

TITLE = "DIML: structural matching for deep metric learning"
QUESTION = (
    "Does structural matching (optimal transport between feature maps) improve metric learning "
    "on unseen classes, and which parts of two images make them similar?"
)
FIGURES = (  # under results/, for the front page
    "diml/figures/retrieval.png",
    "diml/figures/rerank_depth.png",
    "diml/figures/structural_matches.png",
    "diml/figures/training_curves.png",
    "diml/figures/validation_curves.png",
    "diml/figures/retrieval_scenes.png",
)
SECTIONS = {"diml": DimlParams}
_OPTIONS = {"loss": get_args(Loss), "objective": get_args(Objective)}
_TRAINING = {"deps": ("data/mnist",), "outs": ("models/diml/{loss}_{objective}",)}
_FIT_OPTIONS = {"dataset": get_args(Dataset), "loss": get_args(Loss) + get_args(BoundLoss),
                "objective": get_args(Objective) + get_args(BoundObjective)}
_FIT = {"deps": ("data/mnist",), "outs": ("models/diml/{dataset}/{loss}_{objective}",)}
STAGES = (
    Stage("diml_train", "diml", "diml", DimlTrainParams, _OPTIONS,
          each={"loss": "diml.losses", "objective": "diml.objectives"}, **_TRAINING),
    Stage("diml_ablation", "diml", "diml", DimlTrainParams, _OPTIONS,
          each={"loss": "diml.ablation.losses", "objective": "diml.ablation.objectives"}, runs="diml_train",
          comment="The ablations of the structural objective, for the losses of diml.ablation only (budget);\n"
                  "the same notebook, parameters and deps as diml_train.", **_TRAINING),
    Stage("diml_fit", "diml", "diml", DimlTrainParams, _FIT_OPTIONS,
          each={"dataset": ("scenes",), "loss": "diml.scenes.losses", "objective": "diml.scenes.objectives"},
          comment="The embedded set: the digits moved, scaled and rotated in clutter (diml.scenes).", **_FIT),
    Stage("diml_bound", "diml", "diml", DimlTrainParams, _FIT_OPTIONS,
          each={"dataset": get_args(Dataset), "loss": get_args(BoundLoss), "objective": get_args(BoundObjective)},
          runs="diml_fit", comment="The supervised bound of each set: the same encoder, cross-entropy on the train classes.",
          **_FIT),
    Stage("diml_eval", "diml", "diml", DimlEvalParams, deps=("data/mnist", "models/diml"),
          outs=("results/diml/tables", "results/diml/summary.json"),
          metrics=(committed("results/diml/metrics.json"),),
          plots=("results/diml/figures", committed("results/diml/plots"))),
)
PAPER = ("results/diml/summary.json", "results/diml/figures")  # what paper/sections/diml.typ reads
# The plot data diml_eval writes: one column per trained model of the default run (params.yaml's losses x objectives,
# and the ablations); models trained on other settings are in the CSV files but not in these plots.
_MODELS = ["margin_global", "margin_structural", "margin_structural_uniform",
           "cross_entropy_classifier", "scenes_margin_global", "scenes_margin_structural",
           "scenes_cross_entropy_classifier"]
PLOTS = (
    {"DIML validation MAP@R per epoch": {
        "template": "linear", "x": "epoch", "y": {"results/diml/plots/validation_map_at_r.csv": _MODELS}}},
    {"DIML training loss per epoch": {
        "template": "linear", "x": "epoch", "y": {"results/diml/plots/training_loss.csv": _MODELS}}},
    {"DIML Recall@1 on unseen digits": {
        "template": "bar_horizontal", "x": "recall_at_1", "y": {"results/diml/plots/retrieval.csv": "model"}}},
)
