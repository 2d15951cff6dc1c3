"""Parameters of the gpsmaps study: the ``gpsmaps`` section of params.yaml.

Two stages read it, each only its own keys: ``gpsmaps_train@<variant>``
(:class:`GpsMapsTrainParams`: the data, the model, the losses and their
weights, the optimiser) and ``gpsmaps_eval`` (:class:`GpsMapsEvalParams`: the
data, the probes and the baselines).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from lib.data.multicrop import MultiCropConfig
from lib.params import Optimiser, Params, RunParams

#: The variants of the model: the full method, one auxiliary term removed at a time, and DINO alone.
VARIANTS = ("full", "no_geo", "no_reconstruction", "no_clustering", "dino")
#: Every training of the study: the variants, SimCLR on the same maps, the supervised bound (one shared trainer).
TRAININGS = (*VARIANTS, "simclr", "supervised")
N_MAP_CLASSES = 8  # lib.data.map_style's map classes


class GpsMapsData(Params):
    """Which maps, how they are cleaned and which generated-city maps the geo tasks never see."""

    places: list[str] = Field(min_length=1, description="datasets/maps/<place>.nc used for training")
    entropy_threshold: float = Field(
        ge=0, description="maps whose map-class entropy (nats) is below this are dropped; at most log 8"
    )
    block_m: float = Field(gt=0, description="side of the spatial blocks of the held-out split and the folds")
    gap_m: float = Field(ge=0, description="training maps closer than this to a test map are dropped; one map "
                                           "side with gap_metric chebyshev leaves no shared pixel")
    gap_metric: Literal["euclidean", "chebyshev"] = Field(
        "chebyshev", description="distance of the gap (lib.eval.spatial_cv): chebyshev = max(|dx|, |dy|)")
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
    head_bn: bool = Field(False, description="batch norm in the head's MLP (DINO's use_bn_in_head)")


class GpsMapsLoss(Params):
    """``L = L_dino + a L_geo + b L_rec + c L_clust`` and each term's settings."""

    geo_weight: float = Field(ge=0, description="a, or with weight_rule balanced its share of the DINO loss")
    reconstruction_weight: float = Field(ge=0, description="b (likewise)")
    clustering_weight: float = Field(ge=0, description="c (likewise)")
    weight_rule: Literal["balanced", "fixed"] = Field(
        "balanced", description="balanced: a, b, c are each term's share of the DINO loss at initialisation "
                                "(label-free, lib.studies.gpsmaps.model.balanced_weights); fixed: the weights")
    student_temperature: float = Field(gt=0)
    teacher_temperature: float = Field(gt=0, description="after the warm-up")
    teacher_warmup_temperature: float = Field(gt=0)
    teacher_warmup_epochs: int = Field(ge=0)
    center_momentum: float = Field(ge=0, lt=1)
    teacher_momentum: float | None = Field(
        None, gt=0, le=1, description="EMA momentum at the start (a cosine takes it to 1); null = by teacher_init_share")
    teacher_init_share: float = Field(
        0.01, gt=0, lt=1, description="share of its initialisation the teacher keeps at the end; sets the starting "
                                      "momentum for the run's number of steps (lib.losses.dino.momentum_for_share)")
    freeze_last_layer_epochs: int = Field(1, ge=0, description="epochs with the head's last layer frozen (DINO: 1)")
    simclr_temperature: float = Field(0.2, gt=0, description="NT-Xent temperature of the SimCLR training")
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
    seeds: list[int] = Field([0], min_length=1, description="training seeds of every training")
    warmup_epochs: int = Field(0, ge=0, description="linear learning-rate warm-up, then a cosine to 0")
    snapshot_epochs: list[int] = Field(
        [], description="epochs (from 1) after which every map is embedded too: the budget curve")


class GpsMapsProbe(Params):
    n_folds: int = Field(ge=2, description="spatial block folds of the probes")
    targets: list[str] = Field(min_length=1, description="outcomes no training sees: the self-supervised verdict")
    transfer_targets: list[str] = Field([], description="outcomes a geo task trains on: 'supervised transfer'")
    inner_folds: int = Field(3, ge=2, description="spatial inner splits that choose the ridge penalty")
    knn_k: int = Field(10, ge=1, description="neighbours of the kNN probe")
    pixels_side: int = Field(8, ge=1, description="raw-pixel baseline: the map averaged down to side x side")
    histogram_bins: int = Field(8, ge=2, description="colour-histogram baseline: bins per band")
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
    views: MultiCropConfig = Field(description="the maps are embedded at the global views' size")
    train: GpsMapsTrain
    probe: GpsMapsProbe


class GpsMapsParams(GpsMapsTrainParams, GpsMapsEvalParams):
    """The ``gpsmaps`` section of params.yaml."""
