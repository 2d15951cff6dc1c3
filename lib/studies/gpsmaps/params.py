"""Parameters of the gpsmaps study: the ``gpsmaps`` section of params.yaml.

Two stages read it, each only its own keys: ``gpsmaps_train@<variant>``
(:class:`GpsMapsTrainParams`: the data, the model, the losses and their
weights, the optimiser) and ``gpsmaps_eval`` (:class:`GpsMapsEvalParams`: the
data, the probes and the baselines).
"""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from lib.data.map_views import MultiCropConfig
from lib.params import Optimiser, Params, RunParams

#: The variants of the model: the full method, one auxiliary term removed at a time, and DINO alone.
VARIANTS = ("full", "no_geo", "no_reconstruction", "no_clustering", "dino")
N_MAP_CLASSES = 8  # lib.data.map_style's map classes


class GpsMapsData(Params):
    """Which maps, how they are cleaned and which generated-city maps the geo tasks never see."""

    places: list[str] = Field(min_length=1, description="datasets/maps/<place>.nc used for training")
    entropy_threshold: float = Field(
        ge=0, description="maps whose map-class entropy (nats) is below this are dropped; at most log 8"
    )
    block_m: float = Field(gt=0, description="side of the spatial blocks of the held-out split and the folds")
    gap_m: float = Field(ge=0, description="training maps closer than this to a test map are dropped")
    holdout_fraction: float = Field(
        gt=0, lt=1, description="share of each generated city's blocks whose labels no training step sees"
    )

    @model_validator(mode="after")
    def _threshold(self) -> GpsMapsData:
        if self.entropy_threshold > math.log(N_MAP_CLASSES):
            raise ValueError(
                f"entropy_threshold must lie in [0, log {N_MAP_CLASSES}] = [0, {math.log(N_MAP_CLASSES):.3f}], "
                f"got {self.entropy_threshold}"
            )
        return self


class GpsMapsModel(Params):
    width: int = Field(ge=4, multiple_of=2, description="channels of the first ResNet stage")
    embedding_dim: int = Field(ge=2)
    head_hidden: int = Field(ge=8, description="hidden width of the DINO projection head")
    head_bottleneck: int = Field(ge=2)
    head_out: int = Field(ge=2, description="prototypes of the DINO head's output")


class GpsMapsLoss(Params):
    """``L = L_dino + a L_geo + b L_rec + c L_clust`` and each term's settings."""

    geo_weight: float = Field(ge=0, description="a")
    reconstruction_weight: float = Field(ge=0, description="b")
    clustering_weight: float = Field(ge=0, description="c")
    student_temperature: float = Field(gt=0)
    teacher_temperature: float = Field(gt=0, description="after the warm-up")
    teacher_warmup_temperature: float = Field(gt=0)
    teacher_warmup_epochs: int = Field(ge=0)
    center_momentum: float = Field(ge=0, lt=1)
    teacher_momentum: float = Field(gt=0, le=1, description="EMA momentum at the start; a cosine takes it to 1")
    density_clusters: int = Field(ge=2, description="k-means clusters of population density (geo task)")
    n_centroids: int = Field(ge=2, description="m, the learnable centroids of the clustering term")
    cluster_temperature: float = Field(gt=0)
    hidden_fraction: float = Field(gt=0, lt=1, description="share of the map hidden from the decoder")

    @model_validator(mode="after")
    def _warmup(self) -> GpsMapsLoss:
        if self.teacher_warmup_temperature > self.teacher_temperature:
            raise ValueError(
                f"teacher_warmup_temperature ({self.teacher_warmup_temperature}) exceeds "
                f"teacher_temperature ({self.teacher_temperature})"
            )
        return self


class GpsMapsTrain(Optimiser):
    batch_size: int = Field(ge=2)


class GpsMapsProbe(Params):
    n_folds: int = Field(ge=2, description="spatial block folds of the probes")
    targets: list[str] = Field(min_length=1, description="regression targets (the maps' labels)")
    classification: str = Field(description="classification target (a label of integer classes)")
    rff_scales_m: list[float] = Field(min_length=1, description="sigmas of the random Fourier features, metres")
    rff_features: int = Field(ge=2, description="frequencies per scale")


class GpsMapsCommon(RunParams):
    inference_batch_size: int = Field(ge=1)
    data: GpsMapsData


class GpsMapsTrainParams(GpsMapsCommon):
    """Stage ``gpsmaps_train@<variant>``: one encoder per variant."""

    views: MultiCropConfig = Field(description="DINO's multi-crop views of a map (lib.data.map_views)")
    model: GpsMapsModel
    loss: GpsMapsLoss
    train: GpsMapsTrain


class GpsMapsEvalParams(GpsMapsCommon):
    """Stage ``gpsmaps_eval``: frozen embeddings, probes, baselines, ablations."""

    model: GpsMapsModel
    probe: GpsMapsProbe


class GpsMapsParams(GpsMapsTrainParams, GpsMapsEvalParams):
    """The ``gpsmaps`` section of params.yaml."""
