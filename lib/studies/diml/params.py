"""Parameters of the DIML study: the ``diml`` section of params.yaml.

``diml_train`` reads :class:`DimlTrainParams`, ``diml_eval`` reads
:class:`DimlEvalParams`; the model selection during training has its own
re-ranking settings (``selection``), so an evaluation setting such as
``eval.rerank_k`` reruns the evaluation and not the trainings. Every
(loss, objective) is trained once per seed of ``seeds`` (:class:`~lib.params.Repeated`).

The objectives (:mod:`.loss`): ``global``; ``structural``, DIML as the
reference code trains it, (1 - w) structural + w global similarity with
``structural.global_weight`` w = 1/2; and two ablations of it,
``structural_pure`` (w = 0) and ``structural_uniform`` (uniform transport
marginals in training and re-ranking).

Every training stops at its validation plateau (``train.patience``,
``train.min_delta``) within ``train.epochs``. Besides MNIST-5k (the easy set)
the ``diml_fit`` stages train on the embedded set (``scenes``: the digits moved,
scaled and rotated in clutter, :func:`lib.data.digit_scenes.make_embedded_scenes`),
and ``diml_bound`` trains the supervised bound of each set: the same encoder
under cross-entropy on the train classes (``cross_entropy`` / ``classifier``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lib.params import Optimiser, Params, Repeated

Loss = Literal["margin", "multi_similarity"]
Objective = Literal["global", "structural", "structural_pure", "structural_uniform"]
#: The supervised bound's loss and objective (a classifier on the train classes), for ``diml_bound``.
BoundLoss = Literal["cross_entropy"]
BoundObjective = Literal["classifier"]
#: The retrieval sets: MNIST-5k (the easy set) and the embedded scenes.
Dataset = Literal["mnist5k", "scenes"]


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
    global_weight: float = Field(ge=0, le=1, description="w of the training mix (1 - w) structural + w global (reference: 1/2)")
    n_iters: int = Field(ge=1, description="Sinkhorn iterations at most")
    tol: float = Field(gt=0, description="stop a pair's iterations when its marginals are this close")


class DimlTrain(Optimiser):
    beta_lr: float = Field(gt=0, description="learning rate of the margin loss's learned beta (reference: 0.0005)")
    patience: int = Field(ge=1, description="stop after this many epochs without a validation MAP@R gain > min_delta")
    min_delta: float = Field(ge=0, description="the smallest validation MAP@R gain that counts as progress")
    batch_size: int = Field(ge=4)
    samples_per_class: int = Field(ge=2)
    world_size: int = Field(ge=1, description="processes for torchrun (DDP); 1 = in the kernel")


class Reranking(Params):
    rerank_k: int = Field(ge=1, description="length of the global top-K that is re-ranked structurally")
    rerank_weight: float = Field(ge=0, description="weight of the global similarity added to the structural one")


class DimlEval(Reranking):
    n_examples: int = Field(ge=1)
    n_queries: int = Field(ge=1, description="test queries per seed, drawn with the seed (the gallery is every test image)")
    rerank_depths: list[int] = Field(min_length=1, description="the depth sweep: K of the re-ranking figure (0 = none)")

    @model_validator(mode="after")
    def _depths(self) -> DimlEval:
        d = self.rerank_depths
        if min(d) < 0 or sorted(set(d)) != d:
            raise ValueError(f"rerank_depths must be distinct non-negative integers in increasing order, got {d}")
        return self


class DimlScenes(Params):
    """The embedded retrieval set: every MNIST-5k digit in a scene of its own (train digits for training,
    test digits for retrieval), placed with the repetition's seed."""

    size: int = Field(ge=28, description="scene side in pixels")
    scale: list[float] = Field(min_length=2, max_length=2, description="digit scale drawn uniformly from [low, high]")
    degrees: float = Field(ge=0, le=180, description="rotation drawn uniformly from [-degrees, degrees]")
    n_strokes: int = Field(ge=0, description="distractor strokes per scene")
    losses: list[Loss] = Field(min_length=1, description="losses trained on the scenes (stage diml_fit)")
    objectives: list[Objective] = Field(min_length=1, description="objectives trained on the scenes")
    n_control: int = Field(ge=1, description="pairs of the positive control: the same test digit in two scenes")

    @model_validator(mode="after")
    def _scales(self) -> DimlScenes:
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {list(self.scale)}")
        return self


class DimlAblation(Params):
    """Ablations of the structural objective, trained (stage ``diml_ablation``) for some losses only."""

    losses: list[Loss] = Field(min_length=1)
    objectives: list[Objective] = Field(min_length=1)


class DimlCommon(Repeated):
    inference_batch_size: int = Field(ge=1, description="images per forward pass when embedding")
    data: DimlData
    scenes: DimlScenes
    model: DimlModel
    structural: StructuralParams


class DimlTrainParams(DimlCommon):
    """Stage ``diml_train``: one encoder per (loss, objective) and seed, its epoch selected on validation data."""

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
    """Stage ``diml_eval``: retrieval of the unseen classes with every trained model, per seed."""

    losses: list[Loss] = Field(min_length=1)
    objectives: list[Objective] = Field(min_length=1)
    ablation: DimlAblation
    eval: DimlEval

    def trained(self) -> list[tuple[str, str]]:
        """Every trained (loss, objective): losses x objectives, then the ablations' pairs, without repeats."""
        pairs = [(loss, o) for loss in self.losses for o in self.objectives]
        pairs += [(loss, o) for loss in self.ablation.losses for o in self.ablation.objectives]
        return list(dict.fromkeys(pairs))

    def trained_scenes(self) -> list[tuple[str, str]]:
        """Every (loss, objective) trained on the scenes (stage ``diml_fit``)."""
        return [(loss, o) for loss in self.scenes.losses for o in self.scenes.objectives]


class DimlParams(DimlTrainParams, DimlEvalParams):
    """The ``diml`` section of params.yaml: every key one of its stages reads."""
