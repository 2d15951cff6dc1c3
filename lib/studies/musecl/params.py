"""Parameters of the musecl study: the ``musecl`` section of params.yaml.

Three stages read it, each only its own keys: ``musecl_text``
(:class:`MuseclTextParams`: which cities' POI texts to embed),
``musecl_train@<city>`` (:class:`MuseclTrainParams`: pairs, encoders,
baselines, fusion, the supervised bound on the spatial folds) and ``musecl_eval`` (:class:`MuseclEvalParams`: the
downstream probes).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lib.params import Optimiser, Params, RunParams, Seeded

OUTCOMES = ("population_density", "land_price", "income", "liveability", "environment_index")
FUSION_OBJECTIVES = ("infonce", "mse")


class MuseclData(Params):
    image_px: int = Field(ge=16, le=512, multiple_of=8,
                          description="aerial tiles and street views are resampled to this size (area average)")


class MuseclPairs(Params):
    top_k: int = Field(ge=1, description="a positive is drawn from the k most similar regions (the reference: 1)")
    tile2vec_neighbours: int = Field(ge=1, description="Tile2Vec's positives: one of the k nearest regions")
    volume_weight: float = Field(ge=0, description="weight of the trip volumes in the mobility similarity "
                                 "(0: the paper's normalised profiles only)")
    variants: list[str] = Field(description="the cities whose image encoders are also trained on neighbour, random and "
                                "oracle pairs (what the pairs are worth); [] for none")


class MuseclModel(Params):
    width: int = Field(ge=4, multiple_of=2, description="channels of the first ResNet stage")
    embedding_dim: int = Field(ge=2)


class VisualTrain(Optimiser):
    """The image encoders (aerial, street-level, Tile2Vec): triplets of regions."""

    loss: Literal["triplet", "infonce"] = Field(description="triplet margin loss (the paper) or InfoNCE")
    margin: float = Field(gt=0, description="triplet margin (the reference uses 5)")
    temperature: float = Field(gt=0, description="InfoNCE temperature, with loss: infonce")
    batch_size: int = Field(ge=3, description="anchors per step")
    patience: int = Field(ge=1, description="stop after this many epochs without a held-out ranking gain")
    min_delta: float = Field(ge=0, description="the least gain in held-out triplets ranked that counts")


class SimclrTrain(Optimiser):
    """The plain SimCLR baseline on aerial tiles: two augmented views per region, NT-Xent."""

    temperature: float = Field(gt=0)
    batch_size: int = Field(ge=2)
    crop_min: float = Field(gt=0, le=1)
    jitter: float = Field(ge=0, lt=1)


class FusionTrain(Optimiser):
    """Attentional fusion of the aerial and street-level embeddings, aligned with the POI-text embedding."""

    objectives: list[Literal["infonce", "mse"]] = Field(
        min_length=1, description="infonce (the paper) and/or mse (the reference code)")
    temperature: float = Field(gt=0, description="InfoNCE temperature")
    batch_size: int = Field(ge=2)
    hidden: int = Field(ge=1, description="width of the attention's tanh layer")
    finetune_epochs: int = Field(ge=0, description="epochs of the variant that fine-tunes the encoders through the "
                                 "InfoNCE alignment (0: not trained); the last is kept")
    finetune_lr: float = Field(gt=0, description="its learning rate, encoders and fusion alike")

    @model_validator(mode="after")
    def _distinct(self) -> FusionTrain:
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives must be distinct, got {self.objectives}")
        return self


class MuseclSplit(Params):
    """The spatial block folds every probe and the supervised bound share (:func:`lib.eval.spatial_cv.folds_for`)."""

    n_folds: int = Field(ge=2, description="spatial block folds")
    block_m: float = Field(gt=0, description="side of the spatial blocks, metres")
    gap_m: float = Field(ge=0, description="training regions closer than this to a test region are dropped")


class SupervisedTrain(Optimiser):
    """The supervised bound: MuseCL's two image encoders and the reduced text embedding, trained on the outcomes
    of each fold's training regions (a spatial quarter of them held out for the plateau)."""

    n_seeds: int = Field(ge=1, description="trained for the first n training seeds, once per spatial fold")
    batch_size: int = Field(ge=2, description="regions per step")
    patience: int = Field(ge=1, description="stop after this many epochs without a held-out R^2 gain")
    min_delta: float = Field(ge=0, description="the least gain in held-out R^2 (mean over outcomes) that counts")


class MuseclProbe(Params):
    inner_folds: int = Field(ge=2, description="spatial inner folds (grouped by block) that choose the penalty")
    reference_hidden: list[int] = Field(min_length=1, description="the reference protocol's MLP (512-256-128-64)")
    reference_max_iter: int = Field(ge=1, description="most epochs of the reference MLP (it stops early)")


class MuseclTextParams(Seeded):
    """Stage ``musecl_text``: MiniLM embeddings of every city's POI texts, cached."""

    cities: list[str] = Field(min_length=1, description="entries of the cities section")


class MuseclTrainParams(RunParams):
    """Stage ``musecl_train@<city>``: the encoders, the baselines and the fusion of one city, per training seed."""

    n_seeds: int = Field(ge=1, description="training seeds seed, seed + 1, ...: every model trained once each")
    inference_batch_size: int = Field(ge=1)
    data: MuseclData
    pairs: MuseclPairs
    model: MuseclModel
    visual: VisualTrain
    simclr: SimclrTrain
    fusion: FusionTrain
    split: MuseclSplit
    targets: list[str] = Field(min_length=1, description="outcome columns of regions.parquet the probes and the "
                               "supervised bound predict (a generated city's: " + ", ".join(OUTCOMES) + ")")
    supervised: SupervisedTrain


class MuseclEvalParams(RunParams):
    """Stage ``musecl_eval``: probes of every embedding of every city, against the cities' stored truth."""

    cities: list[str] = Field(min_length=1)
    n_seeds: int = Field(ge=1, description="the training seeds musecl_train stored")
    split: MuseclSplit
    targets: list[str] = Field(min_length=1, description="as musecl_train's")
    probe: MuseclProbe


class MuseclParams(MuseclTrainParams, MuseclEvalParams):
    """The ``musecl`` section of params.yaml."""

    @model_validator(mode="after")
    def _variants_in_cities(self) -> MuseclParams:
        unknown = [c for c in self.pairs.variants if c not in self.cities]
        if unknown:
            raise ValueError(f"pairs.variants names {unknown}, which are not in cities {self.cities}")
        return self
