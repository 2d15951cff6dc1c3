"""The DIML study: deep metric learning with structural matching, end to end.

Zhao, Wang, Lu, Zhou, "Towards Interpretable Deep Metric Learning with
Structural Matching", ICCV 2021. Two images are compared location by location:
the structural similarity of their feature maps (:mod:`lib.explain.structural`)
is an optimal-transport matching whose per-location contributions explain it.

The compendium's three variants of each baseline loss (margin loss,
multi-similarity loss, from pytorch-metric-learning; :mod:`.loss`):

* ``baseline``   - trained and retrieved with the global embedding;
* ``rerank``     - the same model, top-K re-ranked by structural + global similarity;
* ``structural`` - trained with the structural similarity inside the loss,
                   retrieved like ``rerank``.

Stages: ``diml_train@<loss>-<objective>`` (:mod:`.train`; ``python -m
lib.studies.diml.train`` under torchrun) and ``diml_eval`` (:mod:`.evaluate`).
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
    "diml/figures/structural_matches.png",
    "diml/figures/training_curves.png",
)
SECTIONS = {"diml": DimlParams}
STAGES = (
    Stage("diml_train", "diml", "diml", DimlTrainParams, {"loss": get_args(Loss), "objective": get_args(Objective)}),
    Stage("diml_eval", "diml", "diml", DimlEvalParams),
)
