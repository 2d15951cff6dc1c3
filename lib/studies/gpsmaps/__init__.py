"""The gpsmaps study: self-supervised embeddings of GPS coordinates from map images.

Bougie, Vazhenina and Watanabe, "Lost and Found: How Self-Supervised Learning
Helps GPS Coordinates Find Their Way" (ACML 2023); no public code exists, this
is a first implementation. A coordinate is embedded by encoding the map
centred on it (``datasets/maps``, :mod:`lib.data.map_dataset`): DINO
self-distillation (:mod:`lib.losses.dino`) plus geo-predictive tasks, a
masked reconstruction and an intermediate clustering term (:mod:`.model`).

Stages: ``gpsmaps_train@<variant>`` trains the full method, each ablation,
DINO alone, SimCLR and the supervised bound, each for every training seed
(:mod:`.train`); ``gpsmaps_eval`` probes their frozen embeddings on a ladder
of baselines under spatial block cross-validation (:mod:`.evaluate`,
:mod:`.summary`).
"""

from lib.stage import Stage, committed
from lib.studies.gpsmaps.params import (
    TRAININGS,
    GpsMapsEvalParams,
    GpsMapsParams,
    GpsMapsTrainParams,
)

TITLE = "GPS maps: self-supervised coordinate embeddings from map images"
QUESTION = (
    "Do embeddings of the map around a coordinate, learned by self-distillation with geo tasks, "
    "predict what a place is like better than encodings of the coordinates themselves?"
)
FIGURES = (  # under results/, for the front page
    "gpsmaps/figures/ladder.png",
    "gpsmaps/figures/budget.png",
    "gpsmaps/figures/embedding_maps.png",
    "gpsmaps/figures/training_curves.png",
)
SECTIONS = {"gpsmaps": GpsMapsParams}
STAGES = (
    Stage("gpsmaps_train", "gpsmaps", "gpsmaps", GpsMapsTrainParams, {"variant": TRAININGS},
          each={"variant": TRAININGS},
          deps=("datasets/maps",), outs=("models/gpsmaps/{variant}", "results/gpsmaps/training/{variant}")),
    Stage("gpsmaps_eval", "gpsmaps", "gpsmaps", GpsMapsEvalParams,
          deps=("datasets/maps", "datasets/{maps.cities}/city.json",
                *(f"models/gpsmaps/{variant}" for variant in TRAININGS)),
          outs=("results/gpsmaps/figures", "results/gpsmaps/tables", "results/gpsmaps/summary.json"),
          metrics=(committed("results/gpsmaps/metrics.json"),)),
)
PAPER = ("results/gpsmaps/summary.json", "results/gpsmaps/figures")  # what paper/sections/gpsmaps.typ reads
