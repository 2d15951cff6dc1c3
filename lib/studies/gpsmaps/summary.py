"""The gpsmaps study's ``summary.json`` (what the paper's section reads) and ``metrics.json`` (``dvc metrics``).

:func:`summarise` builds a :class:`Summary` from the probe table of
:func:`lib.studies.gpsmaps.evaluate.probe_all`, the maps and each variant's
training history; :func:`write_summary` validates it and writes both files.
Every score is the mean and sample sd (ddof = 1) over the spatial block folds
of one training seed, rounded to four decimals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lib.io import write_json
from lib.studies.gpsmaps.params import VARIANTS

#: The baselines that encode the coordinates alone (lib.studies.gpsmaps.evaluate).
COORDINATE_ENCODINGS = ("coordinates", "rff", "coordinates_mlp")
#: The feature sets of ``metrics.json``: the method, DINO alone and two baselines.
HEADLINE = ("full", "dino", "random_init", "rff")
#: The metric each task is read by.
METRIC_OF = {"regression": "r2", "classification": "accuracy"}
#: The last epoch's label-free indicators kept per variant.
FINAL_EPOCH_KEYS = ("teacher_entropy", "embedding_std", "loss_dino")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeScore(_Strict):
    """One feature set on one target: its metric's mean and sd over the folds."""

    metric: str
    mean: float
    sd: float


class FinalEpoch(_Strict):
    """A variant's label-free indicators after its last training epoch."""

    teacher_entropy: float
    embedding_std: float
    loss_dino: float


class Summary(_Strict):
    """``results/gpsmaps/summary.json``; ``paper/sections/gpsmaps.typ`` reads these keys."""

    n_maps: int = Field(ge=0, description="maps of every place")
    dropped_by_entropy: int = Field(ge=0, description="maps below the entropy threshold")
    n_heldout: int = Field(ge=0, description="maps whose labels no training step saw; every probe runs on them")
    n_folds: int = Field(ge=2, description="spatial block folds of the probes")
    metric: dict[str, str] = Field(description="target -> the metric it is read by (r2 or accuracy)")
    scores: dict[str, dict[str, ProbeScore]] = Field(description="feature set -> target -> score")
    best_map_variant: dict[str, str] = Field(description="target -> the trained variant with the best mean")
    best_coordinate_encoding: dict[str, str] = Field(description="target -> the best coordinate encoding")
    final_epoch: dict[str, FinalEpoch] = Field(description="variant -> its last epoch's indicators")

    @model_validator(mode="after")
    def _consistent(self) -> Summary:
        targets = set(self.metric)
        for name, row in self.scores.items():
            if set(row) != targets:
                raise ValueError(f"scores[{name!r}] has targets {sorted(row)}, expected {sorted(targets)}")
            for target, score in row.items():
                if score.metric != self.metric[target]:
                    raise ValueError(f"scores[{name!r}][{target!r}] is {score.metric}, metric says "
                                     f"{self.metric[target]}")
        for field, allowed in (("best_map_variant", VARIANTS), ("best_coordinate_encoding", COORDINATE_ENCODINGS)):
            choice = getattr(self, field)
            if set(choice) != targets or not all(v in allowed and v in self.scores for v in choice.values()):
                raise ValueError(f"{field} must name, for each of {sorted(targets)}, one scored feature set of "
                                 f"{allowed}, got {choice}")
        if self.dropped_by_entropy > self.n_maps or self.n_heldout > self.n_maps:
            raise ValueError(f"dropped_by_entropy ({self.dropped_by_entropy}) and n_heldout ({self.n_heldout}) "
                             f"cannot exceed n_maps ({self.n_maps})")
        return self

    def headline(self) -> dict[str, dict[str, float]]:
        """``metrics.json``: the mean score of the method, DINO alone and two baselines per target."""
        return {name: {t: s.mean for t, s in self.scores[name].items()} for name in HEADLINE if name in self.scores}


def summarise(results: pd.DataFrame, maps_table: pd.DataFrame, n_folds: int,
              histories: Mapping[str, pd.DataFrame], order: Sequence[str]) -> Summary:
    """The study's summary.

    Args:
        results: :func:`~lib.studies.gpsmaps.evaluate.probe_all`'s table (features, target, task,
            ``<metric>_mean``, ``<metric>_sd``).
        maps_table: :class:`~lib.studies.gpsmaps.data.MapSet`'s table of every map (``kept``, ``holdout``).
        n_folds: the folds of the probes.
        histories: variant -> its training history (one row per epoch, :data:`FINAL_EPOCH_KEYS` among the columns).
        order: the feature sets to report, each present in ``results`` for every target.
    """
    missing = [c for c in ("features", "target", "task") if c not in results]
    if missing:
        raise ValueError(f"summarise: the probe table lacks columns {missing}")
    tasks = dict(zip(results["target"], results["task"], strict=True))
    metric = {target: METRIC_OF[task] for target, task in tasks.items()}
    indexed = results.set_index(["features", "target"])
    scores = {}
    for name in order:
        scores[name] = {}
        for target, m in metric.items():
            if (name, target) not in indexed.index:
                raise ValueError(f"summarise: no probe result for features {name!r} on target {target!r}")
            row = indexed.loc[(name, target)]
            scores[name][target] = ProbeScore(metric=m, mean=round(float(row[f"{m}_mean"]), 4),
                                              sd=round(float(row[f"{m}_sd"]), 4))

    def best(candidates: Sequence[str], target: str) -> str:
        return max((c for c in candidates if c in scores), key=lambda c: scores[c][target].mean)

    final_epoch = {}
    for variant, history in histories.items():
        absent = [k for k in FINAL_EPOCH_KEYS if k not in history]
        if absent or history.empty:
            raise ValueError(f"summarise: the history of {variant!r} lacks {absent or 'rows'}")
        last = history.iloc[-1]
        final_epoch[variant] = FinalEpoch(**{k: round(float(last[k]), 4) for k in FINAL_EPOCH_KEYS})
    return Summary(
        n_maps=len(maps_table), dropped_by_entropy=int((~maps_table["kept"].astype(bool)).sum()),
        n_heldout=int(maps_table["holdout"].astype(bool).sum()), n_folds=n_folds, metric=metric, scores=scores,
        best_map_variant={t: best(VARIANTS, t) for t in metric},
        best_coordinate_encoding={t: best(COORDINATE_ENCODINGS, t) for t in metric},
        final_epoch=final_epoch,
    )


def write_summary(summary: Summary, out_dir: str | Path = "results/gpsmaps") -> None:
    """``summary.json`` and ``metrics.json`` under ``out_dir``, each written atomically."""
    write_json(Path(out_dir) / "summary.json", summary.model_dump(mode="json"))
    write_json(Path(out_dir) / "metrics.json", summary.headline())
