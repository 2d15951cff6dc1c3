"""The model-randomisation sanity check of the benchmark's attributions (Adebayo et al., NeurIPS 2018).

In each repetition the SimCLR encoder's weights are re-drawn at random
(:func:`lib.explain.sanity.randomised_copy`, the randomisation of COCOA's
reference code) and the first ``sanity.n_explicands`` explicands of every
benchmark task are explained again, end to end: the corpus and foil
representations come from the randomised encoder too, and the random draws
(RISE masks, GradientShap noise) are those the trained encoder's maps used. The
Spearman rank correlation between the trained and the randomised map, of the
signed maps and of their absolute values, measures how much of a map survives
the loss of everything the encoder learned. A method x target passes when the
upper end of the 95 % interval over seeds of both correlations stays below
``sanity.max_rank_correlation``, a bound fixed in advance.

Beside this full randomisation, the cascading form of Adebayo et al. (Sec. 3.1,
:func:`lib.explain.sanity.cascading_randomisation`) randomises the encoder's conv
blocks one after another from the top: step k has the top k blocks random and
the blocks below trained, and the last step is the full randomisation above. A
map that explains what the encoder learned loses its ranking already when the top
block goes; one that stays correlated until the lowest block goes reads the
input through the first filters (edges, ink).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lib.explain.sanity import cascading_randomisation, rank_correlation
from lib.models.convnet import conv_blocks
from lib.runtime import Runtime
from lib.studies.cocoa.benchmark import Benchmark, explain_task
from lib.studies.cocoa.data import derived_seed
from lib.studies.cocoa.params import CocoaEvalParams
from lib.studies.cocoa.stats import over_seeds
from lib.timing import phase

#: Key of the randomisation among a repetition's derived seeds.
STREAM = 4
CORRELATIONS = ("rank_correlation", "rank_correlation_abs")


def randomised_encoders(encoder: nn.Module, seed: int) -> list[nn.Module]:
    """Repetition ``seed``'s cascade of randomised copies of its conv encoder (eval mode): copy k has its top k
    conv blocks re-drawn; the last, every block, is the full randomisation."""
    generator = torch.Generator().manual_seed(derived_seed(seed, STREAM))
    return [copy.eval() for copy in cascading_randomisation(encoder, conv_blocks(encoder), generator)]


def compare_maps(trained: dict, randomised: dict) -> pd.DataFrame:
    """Rank correlations, signed and absolute, between two sets of maps {(target, method): (n, ...)}:
    one row per explicand x target x method.

    A constant map (a randomised encoder can be dead, with zero gradients) has no
    ranking and so nothing in common with the other map: its correlation counts as
    0, and ``constant_map`` says so."""
    frames = []
    for (target, method), maps in randomised.items():
        reference = trained[target, method]
        signed, absolute = rank_correlation(reference, maps), rank_correlation(reference, maps, absolute=True)
        frames.append(pd.DataFrame({
            "explicand": np.arange(len(maps)), "target": target, "method": method,
            "rank_correlation": np.nan_to_num(signed, nan=0.0),
            "rank_correlation_abs": np.nan_to_num(absolute, nan=0.0),
            "constant_map": np.isnan(signed) | np.isnan(absolute),
        }))
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class SanityCheck:
    """Rank correlations per cascade step x task x explicand x target x method (columns seed, randomised_blocks,
    setting, corpus_class, explicand, target, method, :data:`CORRELATIONS` and constant_map; ``randomised_blocks``
    counts the blocks re-drawn from the top, ``n_blocks`` of them in the full randomisation), and for a figure the
    first explicand of the first task with its trained and fully randomised maps {(target, method): (1, H, W)}."""

    correlations: pd.DataFrame
    n_blocks: int
    example: tuple[Tensor, dict[tuple[str, str], Tensor], dict[tuple[str, str], Tensor]]

    def full(self) -> pd.DataFrame:
        """The rows of the full randomisation (every block re-drawn)."""
        return self.correlations[self.correlations.randomised_blocks == self.n_blocks]


@phase("evaluate")
def model_randomisation(
    encoder: nn.Module, bench: Benchmark, cfg: CocoaEvalParams, seed: int, rt: Runtime, progress: bool = True
) -> SanityCheck:
    """Repetition ``seed``'s check, cascading and full, on its benchmark ``bench`` (of the same encoder and seed)."""
    cascade = [rt.prepare(random) for random in randomised_encoders(encoder, seed)]
    k = cfg.sanity.n_explicands
    frames, example = [], None
    for blocks, random_encoder in enumerate(cascade, start=1):
        for task in tqdm(bench.tasks, desc=f"sanity check, top {blocks} block(s), seed {seed}", disable=not progress):
            randomised = {key: m.cpu() for key, m in explain_task(random_encoder, task.head(k), cfg, rt).items()}
            trained = bench.first_maps[task.setting, task.corpus_class]
            frames.append(compare_maps(trained, randomised).assign(
                seed=seed, randomised_blocks=blocks, setting=task.setting, corpus_class=task.corpus_class))
            if example is None and blocks == len(cascade):
                example = (task.explicands[0].cpu(), {key: m[0] for key, m in trained.items()},
                           {key: m[0] for key, m in randomised.items()})
    return SanityCheck(pd.concat(frames, ignore_index=True), len(cascade), example)


def summarise_sanity(correlations: pd.DataFrame, max_rank_correlation: float) -> pd.DataFrame:
    """Per target x method x correlation: mean over seeds of the per-seed mean correlation and its 95 % interval
    (resampling seeds and their explicands; :func:`lib.studies.cocoa.stats.over_seeds`), and ``passes`` (the
    interval's upper end, or the mean for one seed, below ``max_rank_correlation``); ``method_passes`` holds
    when both correlations of the target x method pass."""
    long = correlations.melt(id_vars=["seed", "target", "method"], value_vars=list(CORRELATIONS),
                             var_name="correlation", value_name="value")
    summary = over_seeds(long, ["target", "method", "correlation"], "value", (-1.0, 1.0))
    upper = summary["high"].astype(float).fillna(summary["mean"])
    summary = summary.assign(upper=upper, passes=upper < max_rank_correlation)
    both = summary.groupby(["target", "method"], sort=False).passes.transform("all")
    return summary.assign(method_passes=both)


def summarise_cascade(correlations: pd.DataFrame) -> pd.DataFrame:
    """Per number of randomised blocks x target x method x correlation: the mean over seeds of the per-seed mean
    correlation and its 95 % interval (resampling seeds and their explicands)."""
    long = correlations.melt(id_vars=["seed", "randomised_blocks", "target", "method"], value_vars=list(CORRELATIONS),
                             var_name="correlation", value_name="value")
    return over_seeds(long, ["randomised_blocks", "target", "method", "correlation"], "value", (-1.0, 1.0))
