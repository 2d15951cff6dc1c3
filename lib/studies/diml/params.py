"""Parameters of the DIML study: the ``diml`` section of params.yaml.

``diml_train`` reads :class:`DimlTrainParams`, ``diml_eval`` reads
:class:`DimlEvalParams`; the model selection during training has its own
re-ranking settings (``selection``), so an evaluation setting such as
``eval.rerank_k`` reruns the evaluation and not the four trainings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lib.params import Optimiser, Params, RunParams

Loss = Literal["margin", "multi_similarity"]
Objective = Literal["global", "structural"]


class DimlData(Params):
    train_classes: list[int] = Field(min_length=2)
    test_classes: list[int] = Field(min_length=2)
    val_fraction: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _disjoint(self) -> DimlData:
        overlap = set(self.train_classes) & set(self.test_classes)
        if overlap:
            raise ValueError(f"train_classes and test_classes overlap in {sorted(overlap)}")
        if not set(self.train_classes + self.test_classes) <= set(range(10)):
            raise ValueError("digit classes must lie in 0..9")
        return self


class DimlModel(Params):
    width: int = Field(ge=4, description="channels of the first ResNet stage")
    embedding_dim: int = Field(ge=2)
    grid: int = Field(ge=1, le=7, description="feature map kept at grid x grid locations")


class StructuralParams(Params):
    epsilon: float = Field(gt=0, description="entropic regularisation of Sinkhorn")
    marginals: Literal["cross_correlation", "uniform"]
    n_iters: int = Field(ge=1, description="Sinkhorn iterations at most")
    tol: float = Field(gt=0, description="stop a pair's iterations when its marginals are this close")


class DimlTrain(Optimiser):
    batch_size: int = Field(ge=4)
    samples_per_class: int = Field(ge=2)
    world_size: int = Field(ge=1, description="processes for torchrun (DDP); 1 = in the kernel")


class Reranking(Params):
    rerank_k: int = Field(ge=1, description="length of the global top-K that is re-ranked structurally")
    rerank_weight: float = Field(ge=0, description="weight of the global similarity added to the structural one")


class DimlEval(Reranking):
    n_examples: int = Field(ge=1)


class DimlCommon(RunParams):
    inference_batch_size: int = Field(ge=1, description="images per forward pass when embedding")
    data: DimlData
    model: DimlModel
    structural: StructuralParams


class DimlTrainParams(DimlCommon):
    """Stage ``diml_train``: one encoder per (loss, objective), its epoch selected on validation data."""

    train: DimlTrain
    selection: Reranking = Field(description="how structural models are ranked for model selection")

    @model_validator(mode="after")
    def _class_balanced_batches(self) -> DimlTrainParams:
        m, batch = self.train.samples_per_class, self.train.batch_size
        if batch % m or batch > m * len(self.data.train_classes):
            raise ValueError(
                f"train.batch_size ({batch}) must be a multiple of train.samples_per_class ({m}) "
                f"and at most samples_per_class x {len(self.data.train_classes)} train classes"
            )
        return self


class DimlEvalParams(DimlCommon):
    """Stage ``diml_eval``: retrieval of the unseen classes with every trained model."""

    losses: list[Loss] = Field(min_length=1)
    objectives: list[Objective] = Field(min_length=1)
    eval: DimlEval


class DimlParams(DimlTrainParams, DimlEvalParams):
    """The ``diml`` section of params.yaml: every key one of its stages reads."""
