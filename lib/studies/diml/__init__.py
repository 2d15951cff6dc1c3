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
the re-ranking depth K.

Stages: ``diml_train@<loss>-<objective>`` and, for the ablations,
``diml_ablation@<loss>-<objective>`` (both run the notebook of stage
``diml_train``, :mod:`.train`; ``python -m lib.studies.diml.train`` under
torchrun) and ``diml_eval`` (:mod:`.evaluate`).
"""

from typing import get_args

from lib.stage import Stage
from lib.studies.diml.params import DimlEvalParams, DimlParams, DimlTrainParams, Loss, Objective

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
)
SECTIONS = {"diml": DimlParams}
STAGES = (
    Stage("diml_train", "diml", "diml", DimlTrainParams, {"loss": get_args(Loss), "objective": get_args(Objective)}),
    Stage("diml_eval", "diml", "diml", DimlEvalParams),
)
