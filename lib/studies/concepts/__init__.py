"""The concepts study: contrastive pretraining and visual concept explanations of an outcome.

Obadic et al., "Contrastive Pretraining for Visual Concept Explanations of
Socioeconomic Outcomes" (2024). A task-specific contrastive loss, Rank-N-Contrast
(:mod:`lib.losses.rnc`), orders an encoder's latent space by the outcome; TCAV
(:mod:`lib.explain.tcav`) then says which visual concepts the outcome is
sensitive to within each outcome interval.

Two variants of one encoder (a small timm ResNet from scratch) per dataset:

* ``rnc``      - RNC pretraining on two augmented views per tile, then a linear
                 probe (ridge regression) on the frozen encoder's embeddings;
* ``baseline`` - the same network trained end to end with an L1 regression loss.

Both train to their validation plateau, are selected on the validation split
only and evaluated on the test split (:mod:`.evaluate`), once per seed of
``seeds`` (each seed its own split of the inhabited tiles in whole spatial
blocks, :mod:`.data`). Every table is a ladder (:mod:`.rungs`): band statistics,
RNC, L1, the true land-cover fractions, the aerial oracle. TCAV is read on the
encoders only after its positive control (:mod:`.control`) shows whether it
finds an effect planted where a model certainly uses it. Tables give the mean
over seeds with a 95 % interval and compare the variants paired by seed. Stages:
``concepts_train@<city>`` trains both (:mod:`.train`), ``concepts_eval@<city>``
scores and explains them, and checks TCAV per outcome interval against the
city's interval-dependent truth.
"""

from lib.stage import Stage, committed
from lib.studies.concepts.params import ConceptsEvalParams, ConceptsParams, ConceptsTrainParams

TITLE = "Concepts: Rank-N-Contrast pretraining and TCAV per outcome interval"
QUESTION = (
    "Does Rank-N-Contrast pretraining order the latent space by a socioeconomic outcome, and "
    "which land-cover concepts drive each outcome interval?"
)
FIGURES = (  # under results/, for the front page
    "concepts/*/figures/ladder.png",
    "concepts/*/figures/positive_control.png",
    "concepts/*/figures/metrics.png",
    "concepts/*/figures/concept_sensitivity.png",
    "concepts/*/figures/ground_truth_agreement.png",
    "concepts/*/figures/interval_truth.png",
)
SECTIONS = {"concepts": ConceptsParams}
# The cities of params.yaml's cities section the pipeline runs the study on. The coastal city (task: income)
# runs as well when added here; it is out of the default run for its 60-minute budget (5 minutes).
CITIES = ("river_city",)
STAGES = (
    Stage("concepts_train", "concepts", "concepts", ConceptsTrainParams, {"city": "cities"}, each={"city": CITIES},
          deps=("datasets/{city}",), outs=("models/concepts/{city}", "results/concepts/{city}/training")),
    Stage("concepts_eval", "concepts", "concepts", ConceptsEvalParams, {"city": "cities"}, each={"city": CITIES},
          deps=("datasets/{city}", "models/concepts/{city}"),
          outs=("results/concepts/{city}/figures", "results/concepts/{city}/tables",
                "results/concepts/{city}/summary.json"),
          metrics=(committed("results/concepts/{city}/metrics.json"),),
          plots=(committed("results/concepts/{city}/plots"),)),
)
PAPER = ("results/concepts/*/summary.json", "results/concepts/river_city/figures")  # paper/sections/concepts.typ
PLOTS = tuple(
    {f"Concepts validation R^2 per epoch ({city.replace('_', ' ')})": {
        "template": "linear", "x": "epoch",
        "y": {f"results/concepts/{city}/plots/validation_r2.csv": ["rnc", "baseline"]}}}
    for city in CITIES
)
