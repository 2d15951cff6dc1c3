"""The gpsmaps study's ``summary.json`` (what the paper's section reads) and ``metrics.json`` (``dvc metrics``).

:func:`summarise` builds a :class:`Summary` from the probe scores of every
feature set, (seeds, folds, targets) arrays of test R^2 (a feature set that
needs no training has one seed). Every table is a
:class:`lib.eval.claims.Ladder`: its cells are the mean R^2 over folds of the
per-fold values averaged over training seeds (the interval is Student-t over
the folds), and its comparisons are paired by fold, Holm-corrected over the
study's whole family (every ladder's comparisons; the budget curve is a
family of its own). The ladders: the mean over the outcomes no training sees
(the self-supervised verdict), each such outcome, and land price apart as
"supervised transfer" (a geo task trains on it). The paper's claims
(:class:`lib.eval.claims.Claim`) read the first ladder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from lib.eval.claims import Claim, Ladder, LadderRow, verdict_of
from lib.eval.intervals import (
    ComparisonCell,
    IntervalCell,
    comparison_cell,
    holm,
    interval_cell,
)
from lib.io import write_json

#: Ladder rows: feature set -> (rung, name as printed). Absent feature sets are left out.
ROWS = {
    "coordinates": ("trivial", "coordinates, linear"),
    "coordinates_mlp": ("trivial", "coordinates, MLP"),
    "rff": ("trivial", "random Fourier features"),
    "pixels": ("trivial", "raw pixels (downsampled)"),
    "histogram": ("trivial", "colour histograms"),
    "random_init": ("trivial", "random-weight encoder"),
    "full": ("method", "full method (teacher, linear)"),
    "full_student": ("variant", "full method (student, linear)"),
    "full_knn": ("variant", "full method (teacher, kNN)"),
    "no_geo": ("variant", "without geo tasks"),
    "no_reconstruction": ("variant", "without reconstruction"),
    "no_clustering": ("variant", "without clustering"),
    "dino": ("variant", "DINO alone"),
    "dino_knn": ("variant", "DINO alone (kNN)"),
    "simclr": ("variant", "SimCLR, same maps"),
    "supervised": ("bound", "supervised encoder (bound)"),
    "class_fractions": ("ceiling", "class fractions of the map"),
    "oracle": ("ceiling", "stored oracle R² (land cover)"),
}
#: The paired comparisons each ladder reads: (a, b), a - b.
COMPARISONS = (("full", "random_init"), ("full", "dino"), ("full", "pixels"), ("full", "rff"),
               ("full", "coordinates_mlp"), ("full", "no_geo"), ("full", "no_reconstruction"),
               ("full", "no_clustering"), ("dino", "random_init"), ("full", "simclr"))
POOLED = "mean over outcomes no training sees"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetPoint(_Strict):
    """One point of the budget curve: a training at ``step`` steps (``epoch`` epochs), its pooled R^2, and its
    paired comparison with the random-weight encoder."""

    training: str
    epoch: int
    step: int
    cell: IntervalCell
    versus_random: ComparisonCell


class Summary(_Strict):
    """``results/gpsmaps/summary.json``; ``paper/sections/gpsmaps.typ`` reads these keys."""

    n_maps: int = Field(ge=0, description="maps of every place")
    dropped_by_entropy: int = Field(ge=0, description="maps below the entropy threshold")
    n_heldout: int = Field(ge=0, description="maps whose labels no training step saw; every probe runs on them")
    n_folds: int = Field(ge=2, description="spatial block folds of the probes")
    seeds: list[int] = Field(description="training seeds of every training")
    targets: list[str] = Field(description="outcomes no training sees (the self-supervised verdict)")
    transfer_targets: list[str] = Field(description="outcomes a geo task trains on (supervised transfer)")
    ladders: list[Ladder]
    claims: list[Claim]
    budget: list[BudgetPoint]
    final_epoch: dict[str, dict[str, float]] = Field(description="training -> its last epoch's logged values")
    plateau: dict[str, float] = Field(description="training -> relative change of its total loss over the last "
                                                  "quarter of its epochs (a label-free plateau indicator)")

    def headline(self) -> dict[str, dict[str, float]]:
        """``metrics.json``: the first ladder's (the self-supervised verdict's) mean R^2 per row; the other
        ladders stay in ``summary.json`` (``dvc metrics`` shows a few headline numbers per study)."""
        first = self.ladders[0]
        return {first.title: {r.name: round(r.cell.mean, 4) for r in first.rows if r.cell is not None}}


def _per_fold(values: np.ndarray) -> np.ndarray:
    """(seeds, folds) -> (folds,): each fold's mean over seeds."""
    return np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1]).mean(axis=0)


def ladder(title: str, scores: Mapping[str, np.ndarray], oracle: Sequence[float] | None) -> Ladder:
    """One ladder from ``scores``: feature set -> (seeds, folds) R^2; ``oracle``: the stored R^2 per city."""
    rows = []
    for name, (rung, label) in ROWS.items():
        if name == "oracle":
            if oracle:
                rows.append(LadderRow(name=label, rung=rung, cell=interval_cell(list(oracle)),
                                      note="stored by the city generator, one value per city"))
            continue
        if name in scores:
            rows.append(LadderRow(name=label, rung=rung, cell=interval_cell(_per_fold(scores[name]))))
    comparisons = [comparison_cell(_per_fold(scores[a]), _per_fold(scores[b]), a=ROWS[a][1], b=ROWS[b][1])
                   for a, b in COMPARISONS if a in scores and b in scores]
    return Ladder(title=title, metric="R²", rows=rows, comparisons=comparisons)


def _holm_ladders(ladders: list[Ladder]) -> list[Ladder]:
    """Every ladder's comparisons Holm-corrected as one family."""
    corrected = holm([c for lad in ladders for c in lad.comparisons])
    out, k = [], 0
    for lad in ladders:
        n = len(lad.comparisons)
        out.append(lad.model_copy(update={"comparisons": corrected[k:k + n]}))
        k += n
    return out


def _find(lad: Ladder, a: str, b: str) -> ComparisonCell | None:
    return next((c for c in lad.comparisons if c.a == ROWS[a][1] and c.b == ROWS[b][1]), None)


def claims_of(pooled: Ladder) -> list[Claim]:
    """The paper's claims against the pooled ladder's Holm-corrected comparisons."""
    where = f"ladder '{pooled.title}'"
    original = ("Bougie et al. report gains on their downstream tasks (their map data; numbers not comparable "
                "with these generated cities)")
    specs = [("GPS embeddings learned from maps beat encodings of the coordinates", "full", "rff"),
             ("GPS embeddings learned from maps beat the same encoder with random weights", "full", "random_init"),
             ("The geo-predictive tasks add to self-distillation", "full", "no_geo"),
             ("The masked reconstruction adds to self-distillation", "full", "no_reconstruction"),
             ("The intermediate clustering adds to self-distillation", "full", "no_clustering"),
             ("The full method beats DINO alone", "full", "dino")]
    out = []
    for text, a, b in specs:
        evidence = _find(pooled, a, b)
        verdict = verdict_of(evidence, +1)
        reason = ""
        if verdict == "not reproduced":
            reason = ("the paired difference over spatial folds is not supported after Holm's correction"
                      if evidence.direction == 0 else "supported in the other direction")
        elif verdict == "not testable here":
            reason = "fewer than two folds or the row is missing"
        out.append(Claim(study="gpsmaps", claim=text, original=original, evidence=evidence, verdict=verdict,
                         reason=reason, where=where))
    return out


def budget_curve(points: Mapping[tuple[str, int, int], np.ndarray], random_init: np.ndarray) -> list[BudgetPoint]:
    """``points``: (training, epoch, step) -> (seeds, folds) pooled R^2; each against ``random_init`` (seeds,
    folds), paired by fold; Holm over the curve's comparisons."""
    keys = sorted(points, key=lambda k: (k[0], k[1]))
    cells = [comparison_cell(_per_fold(points[k]), _per_fold(random_init), a=f"{k[0]} at {k[2]} steps",
                             b="random-weight encoder") for k in keys]
    return [BudgetPoint(training=k[0], epoch=k[1], step=k[2], cell=interval_cell(_per_fold(points[k])),
                        versus_random=c) for k, c in zip(keys, holm(cells), strict=True)]


def summarise(scores: Mapping[str, np.ndarray], targets: Sequence[str], transfer: Sequence[str],
              oracle: Mapping[str, Sequence[float]], budget: Mapping[tuple[str, int, int], np.ndarray],
              histories: Mapping[str, pd.DataFrame], maps_table: pd.DataFrame, seeds: Sequence[int]) -> Summary:
    """The study's summary.

    Args:
        scores: feature set -> (seeds, folds, targets) test R^2, targets in the order ``[*targets, *transfer]``.
        targets / transfer: the self-supervised outcomes and the supervised-transfer ones.
        oracle: outcome -> the stored oracle R^2 of each city.
        budget: (training, epoch, step) -> (seeds, folds, len(targets)) R^2 at that snapshot.
        histories: training -> its per-epoch history (seed 0's).
        maps_table: the maps' table (``kept``, ``holdout``).
        seeds: the training seeds.
    """
    names = [*targets, *transfer]
    for name, values in scores.items():
        if values.ndim != 3 or values.shape[2] != len(names):
            raise ValueError(f"summarise: scores[{name!r}] must be (seeds, folds, {len(names)}), got {values.shape}")
    n_folds = next(iter(scores.values())).shape[1]
    k = len(targets)
    ladders = [ladder(POOLED, {n: v[..., :k].mean(-1) for n, v in scores.items()},
                      [float(np.mean(c)) for c in zip(*(oracle[t] for t in targets), strict=True)]
                      if all(t in oracle for t in targets) else None)]
    for t, name in enumerate(names):
        title = name.replace("_", " ") + (" (supervised transfer)" if name in transfer else "")
        ladders.append(ladder(title, {n: v[..., t] for n, v in scores.items()}, oracle.get(name)))
    ladders = _holm_ladders(ladders)
    final, plateau = {}, {}
    for training, h in histories.items():
        last = h.iloc[-1]
        final[training] = {c: round(float(last[c]), 4) for c in h.columns
                           if c.startswith(("loss_", "weight_")) or c in ("teacher_entropy", "batch_mean_entropy",
                                                                         "embedding_std", "kl_to_batch_mean")}
        quarter = max(1, len(h) // 4)
        loss = h["loss_total"].to_numpy()
        reference = loss[-1 - quarter] if len(loss) > quarter else loss[0]
        plateau[training] = round(float(abs(loss[-1] - reference) / max(abs(reference), 1e-12)), 4)
    random_init = scores["random_init"][..., :k].mean(-1) if "random_init" in scores else None
    curve = budget_curve({key: v[..., :k].mean(-1) for key, v in budget.items()}, random_init) \
        if random_init is not None and budget else []
    return Summary(
        n_maps=len(maps_table), dropped_by_entropy=int((~maps_table["kept"].astype(bool)).sum()),
        n_heldout=int(maps_table["holdout"].astype(bool).sum()), n_folds=n_folds, seeds=list(seeds),
        targets=list(targets), transfer_targets=list(transfer), ladders=ladders, claims=claims_of(ladders[0]),
        budget=curve, final_epoch=final, plateau=plateau)


def write_summary(summary: Summary, out_dir: str | Path = "results/gpsmaps") -> None:
    """``summary.json`` and ``metrics.json`` under ``out_dir``, each written atomically."""
    write_json(Path(out_dir) / "summary.json", summary.model_dump(mode="json"))
    write_json(Path(out_dir) / "metrics.json", summary.headline())
