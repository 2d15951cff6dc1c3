"""Parameters of the concepts study: the ``concepts`` section of params.yaml.

Two stages read it, each only its own keys (:class:`ConceptsTrainParams`,
:class:`ConceptsEvalParams`), so an evaluation setting reruns the evaluation
and not the training.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lib.params import Optimiser, Params, Repeated


class ConceptsSplit(Params):
    """Spatial blocks: whole square blocks of tiles go to the test, validation and fit parts (:mod:`.data`)."""

    val_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)
    block_m: float = Field(gt=0, description="side of the square spatial blocks in metres (tiles of one block "
                           "never straddle two parts)")


class ConceptsModel(Params):
    width: int = Field(ge=4, multiple_of=2, description="channels of the first ResNet stage")
    embedding_dim: int = Field(ge=2)


class ConceptsAugment(Params):
    crop_min: float = Field(gt=0, le=1, description="smallest crop side, as a share of the tile side")
    jitter: float = Field(ge=0, lt=1, description="brightness and contrast factors drawn from U(1 - j, 1 + j)")


class ConceptsTrain(Optimiser):
    """One training; ``epochs`` is its maximum: it stops at its validation plateau (``patience``)."""

    batch_size: int = Field(ge=2)
    patience: int = Field(ge=1, description="stop after this many epochs without a validation R^2 gain > min_delta")
    min_delta: float = Field(ge=0, description="smallest validation R^2 gain that counts as an improvement")
    warmup_epochs: int = Field(ge=0, description="linear learning-rate warm-up, then cosine decay to 0 over "
                               "`epochs` (chosen on validation R^2; 0 and cosine: no warm-up)")
    schedule: Literal["constant", "warmup_cosine"] = Field(description="learning-rate schedule")


class RncTrain(ConceptsTrain):
    temperature: float = Field(gt=0, description="tau of the RNC similarity -||v_i - v_j|| / tau")


class ConceptsProbe(Params):
    ridge_alphas: list[float] = Field(min_length=1, description="ridge penalties tried; validation R^2 picks one")

    @model_validator(mode="after")
    def _positive(self) -> ConceptsProbe:
        if min(self.ridge_alphas) <= 0:
            raise ValueError(f"ridge_alphas must be > 0, got {self.ridge_alphas}")
        return self


class ConceptsEval(Params):
    knn_k: int = Field(ge=1, description="neighbours of the kNN regression on embeddings")
    tsne_perplexity: float = Field(gt=0)


class ConceptsControl(Params):
    """The positive control of TCAV (:mod:`lib.studies.concepts.control`): a fraction encoder with a planted head."""

    width: int = Field(ge=2, description="channels of the fraction encoder's convolutions")
    epochs: int = Field(ge=1, description="maximum epochs of the fraction encoder (it stops at its plateau)")
    patience: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    concept: str = Field(description="the concept whose effect is planted in the upper interval only")
    threshold_quantile: float = Field(gt=0, lt=1, description="the planted threshold t: this quantile of the "
                                      "base b on the fit tiles")
    effect: float = Field(gt=0, description="the planted effect of the concept above t, per unit of its fraction, "
                          "in standard deviations of b")
    delta: float = Field(gt=0, lt=1, description="step of the finite difference on the concept's fraction")


class ConceptsTcav(Params):
    layer: str = Field(description="module of OutcomeRegressor whose activations get CAVs")
    threshold: float = Field(gt=0, le=1, description="a tile joins a concept when its fraction is >= this")
    set_size: int = Field(ge=2, description="examples per concept and per random set, at most")
    min_concept_size: int = Field(ge=2, description="concepts with fewer qualifying tiles are skipped")
    n_random: list[int] = Field(
        min_length=1, description="candidate numbers of random negatives (CAVs per concept, each >= 10, Kim et al.); "
        "the smallest whose significance decisions on the validation tiles agree with the largest's in at least "
        "n_random_agreement of the cells is used on the test tiles; one candidate fixes it in advance")
    n_random_agreement: float = Field(gt=0, le=1, description="share of (variant, seed, concept, interval) "
                                      "significance decisions a candidate must share with the largest candidate")
    n_intervals: int = Field(ge=1, description="outcome quantile intervals of the test tiles")
    alpha: float = Field(gt=0, lt=1)
    bonferroni: bool
    statistic: Literal["score", "magnitude"] = Field(description="TCAV statistic of the heat maps and the agreement")
    concept_table: str | None = Field(
        default=None, description="CSV/Parquet of concept fractions per tile id, for data without 'fractions'"
    )

    @model_validator(mode="after")
    def _sizes(self) -> ConceptsTcav:
        if self.min_concept_size > self.set_size:
            raise ValueError(f"min_concept_size ({self.min_concept_size}) exceeds set_size ({self.set_size})")
        if min(self.n_random) < 10 or len(set(self.n_random)) != len(self.n_random):
            raise ValueError(f"n_random candidates must be distinct and >= 10 (Kim et al.), got {self.n_random}")
        return self


class ConceptsData(Repeated):
    """What both stages read: the tiles, the outcome, the split and the seeds.

    Repetition ``s`` of ``seeds`` is the split drawn with seed ``s``, both
    variants trained with seed ``s`` on it, and the evaluation draws (concept
    and random sets, kNN ties, t-SNE) seeded ``s``.
    """

    inference_batch_size: int = Field(ge=1, description="tiles per forward pass when embedding or predicting")
    outcome: str | None = Field(description="outcome variable; null = the dataset's task attribute")
    split: ConceptsSplit


class ConceptsTrainParams(ConceptsData):
    """Stage ``concepts_train``: the two encoders and the probe."""

    model: ConceptsModel
    augment: ConceptsAugment
    rnc: RncTrain
    probe: ConceptsProbe
    baseline: ConceptsTrain


class ConceptsEvalParams(ConceptsData):
    """Stage ``concepts_eval``: the ladder, latent ordering, TCAV's positive control, TCAV per outcome interval."""

    probe: ConceptsProbe
    eval: ConceptsEval
    tcav: ConceptsTcav
    control: ConceptsControl


class ConceptsParams(ConceptsTrainParams, ConceptsEvalParams):
    """The ``concepts`` section of params.yaml: every key one of its stages reads."""
