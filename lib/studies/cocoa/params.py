"""Parameters of the COCOA study: the ``cocoa`` section of params.yaml.

``cocoa_train`` reads :class:`CocoaTrainParams`, ``cocoa_eval`` reads
:class:`CocoaEvalParams`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lib.params import Optimiser, Params, Repeated

N_CLASSES = 10
PER_CLASS = 500  # MNIST-5k holds 500 images of each digit

Method = Literal["integrated_gradients", "gradient_shap", "rise"]


class CocoaData(Params):
    test_fraction: float = Field(gt=0, lt=1, description="stratified share of MNIST-5k held out: explicands, probe test")
    val_fraction: float = Field(
        gt=0, lt=1, description="stratified share of the training part held out for validation: the plateau of every "
        "training (early stopping) is judged there, never on the test part")


class Plateau(Params):
    """Early stopping at the validation plateau (:func:`lib.training.fit`): stop when the validation score has not
    improved on its best by more than ``min_delta`` for ``patience`` epochs; ``epochs`` is the maximum."""

    patience: int = Field(ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(ge=0, description="the least gain of the validation score that counts as improvement")


class SimclrParams(Optimiser, Plateau):
    width: int = Field(ge=2, description="channels of the first of three conv blocks (doubled per block)")
    projection_dim: int = Field(ge=2)
    temperature: float = Field(gt=0, description="NT-Xent temperature tau")
    batch_size: int = Field(ge=2, description="images per step; NT-Xent sees two views of each")
    knn_k: int = Field(ge=1, description="validation score: accuracy of a k-nearest-neighbour vote (cosine on h) of "
                       "the validation digits among the training digits")


class SupervisedParams(Optimiser, Plateau):
    """The supervised bound: SimCLR's encoder architecture and views, trained with labels (cross-entropy); the
    validation score is its accuracy on the validation digits."""

    batch_size: int = Field(ge=1)


def _check_range(values: list[float], name: str) -> None:
    if not 0 < values[0] <= values[1] <= 1:
        raise ValueError(f"{name} must be [low, high] with 0 < low <= high <= 1, got {values}")


class AugmentParams(Params):
    crop_scale: list[float] = Field(min_length=2, max_length=2, description="area fraction of the resized crop")
    rotation_degrees: float = Field(ge=0, le=180)
    erase_prob: float = Field(ge=0, le=1)
    erase_scale: list[float] = Field(min_length=2, max_length=2, description="area fraction of the erased rectangle")
    contrast: float = Field(ge=0, le=1)
    brightness: float = Field(ge=0, le=1)
    noise_std: float = Field(ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentParams:
        _check_range(self.crop_scale, "crop_scale")
        _check_range(self.erase_scale, "erase_scale")
        return self


class ProbeParams(Params):
    regularisation: float = Field(gt=0, description="inverse L2 strength, scikit-learn's C")
    max_iter: int = Field(ge=10)


class AttributionParams(Params):
    ig_steps: int = Field(ge=2, description="Integrated Gradients: integration steps")
    gradshap_samples: int = Field(ge=1, description="GradientShap: samples per explicand")
    gradshap_stdev: float = Field(ge=0, description="GradientShap: input noise, pixels in [0, 1]")
    rise_masks: int = Field(ge=1)
    rise_grid: int = Field(ge=2, description="RISE: coarse mask grid s x s")
    rise_p: float = Field(gt=0, le=1, description="RISE: probability a grid cell is kept")
    batch_size: int = Field(ge=1, description="images per encoder call in RISE and the removal curves")


class BenchmarkParams(Params):
    n_explicands: int = Field(ge=1, description="per corpus class, seed and setting")
    corpus_size: int = Field(ge=1, description="training images of the corpus class")
    foil_size: int = Field(
        ge=1, description="explanation foil, from the training images outside the corpus; the evaluation foil is a "
        "second, disjoint draw of this size")
    methods: list[Method] = Field(min_length=1)
    blur_sigma: float = Field(gt=0, description="removal baseline: Gaussian blur of the explicand, pixels")
    curve_steps: int = Field(ge=2, description="steps of the insertion and deletion curves")


class SanityParams(Params):
    """The model-randomisation sanity check (Adebayo et al. 2018) on the benchmark's explicands."""

    n_explicands: int = Field(
        ge=1, description="per corpus class, seed and setting: the first benchmark explicands, explained again "
        "with a randomised encoder")
    max_rank_correlation: float = Field(
        gt=0, le=1, description="a method passes when the upper 95% bound of its mean rank correlation (signed and "
        "absolute) between trained and randomised maps stays below this; fixed in advance")


class AugmentationStudyParams(Params):
    n_images: int = Field(ge=1)
    foil_size: int = Field(ge=1)
    method: Method


class SceneParams(Params):
    size: int = Field(ge=28, description="canvas side in pixels")
    n_train: int = Field(ge=N_CLASSES)
    n_val: int = Field(ge=1, description="single-digit scenes of the validation digits: the image-text model's plateau")
    n_test: int = Field(ge=1)
    n_strokes: int = Field(ge=0, description="distractor strokes per scene")
    stroke_width: float = Field(gt=0)
    crowded_other_digits: int = Field(ge=1, description="digits of other classes added to the crowded test scenes")


class ClipParams(Optimiser, Plateau):
    """The image-text model; its validation score is the caption matching accuracy on the validation scenes."""

    width: int = Field(ge=2, description="channels of the first of four conv blocks")
    groups_per_batch: int = Field(ge=1, description="a batch holds this many groups of the ten digits")
    init_temperature: float = Field(gt=0, description="initial CLIP temperature (learned)")


class LocalisationParams(Params):
    n_scenes: int = Field(ge=1, description="test scenes explained")
    methods: list[Method] = Field(min_length=1)
    blur_sigma: float = Field(gt=0)


class CocoaCommon(Repeated):
    data: CocoaData
    augment: AugmentParams
    scenes: SceneParams


class CocoaTrainParams(CocoaCommon):
    """Stage ``cocoa_train``: the SimCLR encoder, its linear probe, the supervised bound, the image-text model."""

    simclr: SimclrParams
    probe: ProbeParams
    supervised: SupervisedParams
    clip: ClipParams


class CocoaEvalParams(CocoaCommon):
    """Stage ``cocoa_eval``: the classification ladder, the attribution benchmark, its sanity checks, the
    augmentation study, localisation and its positive control."""

    probe: ProbeParams  # the raw-pixel rung is the same logistic probe on pixels
    attribution: AttributionParams
    benchmark: BenchmarkParams
    sanity: SanityParams
    augmentation: AugmentationStudyParams
    localisation: LocalisationParams

    @model_validator(mode="after")
    def _sizes_fit_mnist5k(self) -> CocoaEvalParams:
        test_per_class = round(self.data.test_fraction * PER_CLASS)
        train_per_class = PER_CLASS - test_per_class
        train_per_class -= round(self.data.val_fraction * train_per_class)  # the validation digits are no corpus
        b = self.benchmark
        if b.n_explicands > test_per_class or b.corpus_size >= train_per_class:
            raise ValueError(
                f"benchmark.n_explicands ({b.n_explicands}) must be at most {test_per_class} and corpus_size "
                f"({b.corpus_size}) below {train_per_class} with data.test_fraction {self.data.test_fraction}"
            )
        if 2 * b.foil_size > foil_pool_size(train_per_class, b.corpus_size):
            raise ValueError(
                f"benchmark.foil_size ({b.foil_size}) x 2 exceeds the {foil_pool_size(train_per_class, b.corpus_size)} "
                "training images left outside the corpus")
        if self.sanity.n_explicands > b.n_explicands:
            raise ValueError(f"sanity.n_explicands ({self.sanity.n_explicands}) exceeds benchmark.n_explicands")
        if self.localisation.n_scenes > self.scenes.n_test:
            raise ValueError(f"localisation.n_scenes ({self.localisation.n_scenes}) exceeds scenes.n_test")
        return self


def foil_pool_size(train_per_class: int, corpus_size: int) -> int:
    """Training images a foil is drawn from once a corpus of one class is taken out (see
    :func:`lib.studies.cocoa.benchmark.foil_pool`): the corpus class's rest and the same share of the others."""
    others = (N_CLASSES - 1) * train_per_class
    return int(others * (1 - corpus_size / train_per_class)) + train_per_class - corpus_size


class CocoaParams(CocoaTrainParams, CocoaEvalParams):
    """The ``cocoa`` section of params.yaml: every key one of its stages reads."""
