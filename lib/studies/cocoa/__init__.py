"""The COCOA study: contrastive corpus attributions of SimCLR and image-text encoders, end to end.

Lin, Chen, Kim, Lee, "Contrastive Corpus Attribution for Explaining
Representations", ICLR 2023. An encoder h maps images to vectors; COCOA explains
the scalar *contrastive corpus similarity* (Sec. 3)

    f(x) = 1/|C| sum_{c in C} cos(h(x), h(c)) - 1/|F| sum_{g in F} cos(h(x), h(g))

with a feature-attribution method, so the attribution answers "which pixels make
x look like the corpus C rather than the foil F" (:mod:`lib.explain.cocoa`).

Three experiments on MNIST-5k: the benchmark of targets and methods
(:mod:`.benchmark`, paper Sec. 4) with the model-randomisation sanity check
(:mod:`.sanity`), the augmentation study (:mod:`.augmentations`, Sec. 5.1) and
localisation with an image-text model (:mod:`.image_text`, :mod:`.localisation`,
Sec. 5.2). The encoders are small strided CNNs (:mod:`lib.models.convnet`) so
that the default parameters, several hundred thousand encoder calls, run in
minutes on two CPU cores.

Every model is trained once per seed (``cocoa.seeds``, :mod:`.models`);
repetition s explains the models of seed s with draws of seed s, and the tables
give means over seeds with 95 % intervals (:mod:`.stats`).

Stages: ``cocoa_train`` (SimCLR, probe, image-text model, per seed) and ``cocoa_eval``.
"""

from lib.stage import Stage, committed
from lib.studies.cocoa.params import CocoaEvalParams, CocoaParams, CocoaTrainParams

TITLE = "COCOA: contrastive corpus attributions"
QUESTION = (
    "Which pixels make an image similar to a corpus and unlike a foil, and do contrastive "
    "corpus attributions beat their baselines?"
)
FIGURES = (  # under results/, for the front page
    "cocoa/figures/removal_curves_integrated_gradients.png",
    "cocoa/figures/attribution_examples.png",
    "cocoa/figures/localisation_scores.png",
    "cocoa/figures/sanity_rank_correlation.png",
)
SECTIONS = {"cocoa": CocoaParams}
STAGES = (
    Stage("cocoa_train", "cocoa", "cocoa", CocoaTrainParams, deps=("data/mnist",), outs=("models/cocoa",)),
    Stage("cocoa_eval", "cocoa", "cocoa", CocoaEvalParams, deps=("data/mnist", "models/cocoa"),
          outs=("results/cocoa/figures", "results/cocoa/tables", "results/cocoa/summary.json"),
          metrics=(committed("results/cocoa/metrics.json"),),
          plots=(committed("results/cocoa/plots"),)),
)
PAPER = ("results/cocoa/summary.json", "results/cocoa/figures")  # what paper/sections/cocoa.typ reads
# Mean removal curves per explanation target (same class, contrastive corpus similarity), written by cocoa_eval.
_TARGETS = ["cocoa", "corpus", "contrastive_label_free", "label_free", "random"]
PLOTS = tuple(
    {f"COCOA {curve} curve, {title} (same class, contrastive corpus similarity)": {
        "template": "linear", "x": "fraction", "y": {f"results/cocoa/plots/{curve}_{method}.csv": _TARGETS}}}
    for method, title in (("integrated_gradients", "Integrated Gradients"), ("rise", "RISE"))
    for curve in ("insertion", "deletion")
)
