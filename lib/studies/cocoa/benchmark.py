"""COCOA's benchmark (paper Sec. 4): insertion and deletion AUCs of four targets x three methods.

A SimCLR encoder; explicands from one class, corpus from the same class
(``same_class``) or explicands from another class (``different_class``), foil
from the classes other than the corpus's. Four targets (label-free,
contrastive label-free, corpus, COCOA) x three methods (Integrated Gradients,
GradientShap, RISE) and a random ranking are scored by insertion and deletion
AUCs of (i) the contrastive corpus similarity against a *fresh* foil and (ii)
the linear probe's probability of the corpus class, over several seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lib.data.mnist import MnistDataset
from lib.data.splits import Split
from lib.eval.intervals import mean_ci
from lib.explain.attribute import METHODS, attribute_targets
from lib.explain.cocoa import ContrastiveCorpusSimilarity, ContrastiveLabelFree, CorpusSimilarity, LabelFreeImportance
from lib.explain.removal import blur_baseline, insertion_deletion_curves, random_attribution
from lib.runtime import Runtime
from lib.studies.cocoa.params import N_CLASSES, BenchmarkParams, CocoaEvalParams
from lib.studies.cocoa.simclr import ClassProbability, representations

SETTINGS = ("same_class", "different_class")
TARGETS = ("label_free", "contrastive_label_free", "corpus", "cocoa")
METRICS = ("contrastive_corpus_similarity", "corpus_majority_probability")


def explicand_targets(
    encoder: nn.Module, explicand_repr: Tensor, foil_repr: Tensor, shared: dict[str, nn.Module]
) -> dict[str, nn.Module]:
    """The four targets for one explicand: its own representation (1, D) makes the label-free pair."""
    return {
        "label_free": LabelFreeImportance(encoder, explicand_repr),
        "contrastive_label_free": ContrastiveLabelFree(encoder, foil_repr, explicand_repr),
        **shared,
    }


@dataclass(frozen=True)
class Task:
    """One seed x setting: explicands (n, 1, H, W), corpus, explanation foil and evaluation foil images."""

    seed: int
    setting: str
    corpus_class: int
    explicand_class: int
    explicands: Tensor
    corpus: Tensor
    foil: Tensor
    eval_foil: Tensor


def sample_tasks(digits: Split[MnistDataset], cfg: BenchmarkParams, seed: int, base_seed: int = 0) -> list[Task]:
    """The two settings of one seed: a random corpus class c (training images), foils from the other classes,
    explicands (test images) of class c (``same_class``) or of a random other class (``different_class``)."""
    rng = np.random.default_rng([base_seed, seed])
    train_y, test_y = digits.fit.labels.numpy(), digits.test.labels.numpy()
    corpus_class = int(rng.integers(N_CLASSES))
    other_class = int(rng.choice(np.setdiff1d(np.arange(N_CLASSES), [corpus_class])))
    corpus = rng.choice(np.flatnonzero(train_y == corpus_class), cfg.corpus_size, replace=False)
    foils = rng.choice(np.flatnonzero(train_y != corpus_class), 2 * cfg.foil_size, replace=False)
    train = digits.fit.images
    tasks = []
    for setting, cls in zip(SETTINGS, (corpus_class, other_class), strict=True):
        explicands = rng.choice(np.flatnonzero(test_y == cls), cfg.n_explicands, replace=False)
        tasks.append(Task(
            seed, setting, corpus_class, cls, digits.test.images[explicands], train[corpus],
            train[foils[: cfg.foil_size]], train[foils[cfg.foil_size :]],
        ))
    return tasks


def explain_task(encoder: nn.Module, task: Task, cfg: CocoaEvalParams, rt: Runtime) -> dict[tuple[str, str], Tensor]:
    """Attributions {(target, method): (n, 1, H, W)} of every explicand of a task."""
    corpus_repr = representations(encoder, task.corpus, rt)
    foil_repr = representations(encoder, task.foil, rt)
    shared = {
        "corpus": CorpusSimilarity(encoder, corpus_repr),
        "cocoa": ContrastiveCorpusSimilarity(encoder, corpus_repr, foil_repr),
    }
    explicands = rt.batch(task.explicands)
    baselines = blur_baseline(explicands, cfg.benchmark.blur_sigma)
    maps: dict[tuple[str, str], list[Tensor]] = {}
    for i in range(len(explicands)):
        x, b = explicands[i : i + 1], baselines[i : i + 1]
        targets = explicand_targets(encoder, representations(encoder, x, rt), foil_repr, shared)
        explained = {m: attribute_targets(targets, m, x, b, cfg.attribution, seed=i) for m in cfg.benchmark.methods}
        for name, method in product(targets, cfg.benchmark.methods):
            maps.setdefault((name, method), []).append(explained[method][name].detach())
    return {key: torch.cat(values) for key, values in maps.items()}


def evaluation_metrics(encoder: nn.Module, probe: nn.Module, task: Task, rt: Runtime) -> dict[str, nn.Module]:
    """The two scores the removal curves follow: contrastive corpus similarity against the evaluation foil
    (not the foil the attributions saw) and the probe's probability of the corpus class."""
    corpus_repr = representations(encoder, task.corpus, rt)
    eval_foil_repr = representations(encoder, task.eval_foil, rt)
    return {
        "contrastive_corpus_similarity": ContrastiveCorpusSimilarity(encoder, corpus_repr, eval_foil_repr),
        "corpus_majority_probability": ClassProbability(encoder, probe.to(rt.device), task.corpus_class),
    }


def evaluate_task(
    encoder: nn.Module, probe: nn.Module, task: Task, maps: dict[tuple[str, str], Tensor], cfg: CocoaEvalParams, rt: Runtime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Insertion and deletion curves of every ranking (plus a random one), both metrics.

    Returns (AUCs, one row per target x method x metric x curve, averaged over the
    explicands; mean curves, one row per step). All rankings of all explicands go
    through :func:`insertion_deletion_curves` as one batch of repeated explicands.
    """
    generator = torch.Generator().manual_seed(2 * task.seed + SETTINGS.index(task.setting))
    explicands = rt.batch(task.explicands)
    rankings = {**maps, ("random", "random"): random_attribution(explicands, generator)}
    keys, k, n = list(rankings), len(rankings), len(explicands)
    inputs, attributions = explicands.repeat(k, 1, 1, 1), torch.cat([rankings[key] for key in keys])
    baselines = blur_baseline(inputs, cfg.benchmark.blur_sigma)
    aucs, curves = [], []
    for metric, score in evaluation_metrics(encoder, probe, task, rt).items():
        result = insertion_deletion_curves(
            score, inputs, attributions, baselines, cfg.benchmark.curve_steps, cfg.attribution.batch_size
        )
        fractions = result.fractions.cpu()
        for curve in ("insertion", "deletion"):
            auc = getattr(result, f"{curve}_auc").reshape(k, n).mean(dim=1).cpu()
            mean_curve = getattr(result, curve).reshape(k, n, -1).mean(dim=1).cpu()
            for j, (target, method) in enumerate(keys):
                row = _task_row(task) | {"target": target, "method": method, "metric": metric, "curve": curve}
                aucs.append(row | {"auc": float(auc[j])})
                curves += [row | {"fraction": float(f), "score": float(v)} for f, v in zip(fractions, mean_curve[j], strict=True)]
    return pd.DataFrame(aucs), pd.DataFrame(curves)


def _task_row(task: Task) -> dict:
    return {
        "seed": task.seed, "setting": task.setting,
        "corpus_class": task.corpus_class, "explicand_class": task.explicand_class,
    }


@dataclass(frozen=True)
class Benchmark:
    """AUCs and mean curves (tidy frames), and the first explicand's attributions of each task of seed 0."""

    aucs: pd.DataFrame
    curves: pd.DataFrame
    examples: dict[str, tuple[Tensor, dict[tuple[str, str], Tensor]]]


def run_benchmark(
    encoder: nn.Module, probe: nn.Module, digits: Split[MnistDataset], cfg: CocoaEvalParams, rt: Runtime, progress: bool = True
) -> Benchmark:
    """Every seed x setting: explain, then score the rankings (paper Sec. 4.1)."""
    encoder = rt.prepare(encoder).eval()
    tasks = [t for s in range(cfg.benchmark.n_seeds) for t in sample_tasks(digits, cfg.benchmark, s, cfg.seed)]
    aucs, curves, examples = [], [], {}
    for task in tqdm(tasks, desc="benchmark", disable=not progress):
        maps = explain_task(encoder, task, cfg, rt)
        auc, curve = evaluate_task(encoder, probe, task, maps, cfg, rt)
        aucs.append(auc)
        curves.append(curve)
        if task.seed == 0:
            examples[task.setting] = (task.explicands[0].cpu(), {key: m[0].cpu() for key, m in maps.items()})
    return Benchmark(pd.concat(aucs, ignore_index=True), pd.concat(curves, ignore_index=True), examples)


def summarise(aucs: pd.DataFrame) -> pd.DataFrame:
    """Mean AUC over seeds and the half-width of its 95% Student-t interval,
    per setting x metric x target x method x curve."""
    keys = ["setting", "metric", "target", "method", "curve"]
    rows = []
    for key, group in aucs.groupby(keys, sort=False):
        mean, half = mean_ci(group.sort_values("seed")["auc"].to_numpy())
        rows.append(dict(zip(keys, key, strict=True)) | {"mean": float(mean), "ci95": float(half), "n_seeds": len(group)})
    return pd.DataFrame(rows)


def _random_under_every_method(frame: pd.DataFrame) -> pd.DataFrame:
    """The random ranking's rows (method "random") repeated under each attribution method of ``frame``."""
    random = frame[frame.target == "random"]
    methods = [m for m in METHODS if m in set(frame.method)]
    return pd.concat([frame[frame.target != "random"], *(random.assign(method=m) for m in methods)], ignore_index=True)


def auc_table(summary: pd.DataFrame, setting: str, metric: str) -> pd.DataFrame:
    """The paper's table for one setting and metric: rows targets (and the random ranking, repeated under every
    method), columns method x curve, cells "mean ± 95% half-width" over seeds."""
    rows = _random_under_every_method(summary[(summary.setting == setting) & (summary.metric == metric)])
    cells = rows.assign(cell=[f"{m:.3f} ± {h:.3f}" for m, h in zip(rows["mean"], rows["ci95"], strict=True)])
    table = cells.pivot(index="target", columns=["method", "curve"], values="cell")
    methods = [m for m in METHODS if m in set(rows.method)]
    order = [t for t in (*TARGETS, "random") if t in table.index]
    return table.loc[order, [(m, c) for m in methods for c in ("insertion", "deletion")]]


def cocoa_advantage(aucs: pd.DataFrame) -> pd.DataFrame:
    """COCOA's AUC against every other target's, paired by seed: mean and 95% half-width of the advantage.

    The advantage is cocoa - other for insertion (higher is better) and
    other - cocoa for deletion (lower is better), so it is positive where COCOA
    wins; one row per setting x metric x method x curve x other target.
    """
    keys = ["seed", "setting", "metric", "method", "curve"]
    aucs = _random_under_every_method(aucs)
    paired = aucs[aucs.target == "cocoa"].merge(aucs[aucs.target != "cocoa"], on=keys, suffixes=("_cocoa", ""))
    sign = np.where(paired.curve == "insertion", 1.0, -1.0)
    paired = paired.assign(advantage=sign * (paired.auc_cocoa - paired.auc))
    rows = []
    for key, group in paired.groupby(["setting", "metric", "method", "curve", "target"], sort=False):
        mean, half = mean_ci(group.sort_values("seed").advantage.to_numpy())
        names = dict(zip(["setting", "metric", "method", "curve", "other"], key, strict=True))
        rows.append(names | {"advantage": float(mean), "ci95": float(half)})
    return pd.DataFrame(rows)


def benchmark_summary(aucs: pd.DataFrame) -> str:
    """One sentence per setting x metric: in how many method x curve columns COCOA beats every other target
    and the random ranking on average, and in how many the paired 95% interval of every advantage excludes 0."""
    lines = []
    for (setting, metric), rows in cocoa_advantage(aucs).groupby(["setting", "metric"], sort=False):
        columns = rows.groupby(["method", "curve"])
        wins = sum(bool((c.advantage > 0).all()) for _, c in columns)
        clear = sum(bool((c.advantage - c.ci95 > 0).all()) for _, c in columns)
        lines.append(
            f"{setting}, {metric.replace('_', ' ')}: COCOA beats every other target and the random ranking in {wins} "
            f"of {columns.ngroups} method x curve columns, by a margin whose paired 95% interval excludes zero in {clear}."
        )
    return "\n".join(lines)
