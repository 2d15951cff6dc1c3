"""COCOA's benchmark (paper Sec. 4): insertion and deletion AUCs of four targets x three methods.

Sampling follows the reference code (``scripts/attribute.py`` of
suinleelab/cl-explainability): in every repetition *each* of the ten classes is
the corpus class in turn. For corpus class c:

* the corpus: ``corpus_size`` training images of class c;
* the foil pool: the training images outside the corpus, i.e. the rest of class c
  and the same share of every other class (so that class c keeps its share of the
  training set); the explanation foil and a disjoint evaluation foil are drawn from it;
* the explicands: held-out images of class c (``same_class``) or held-out images
  pooled over all other classes (``different_class``).

Four targets (label-free, contrastive label-free, corpus, COCOA) x three methods
(Integrated Gradients, GradientShap, RISE) and a random ranking are scored by
insertion and deletion AUCs of (i) the contrastive corpus similarity against the
evaluation foil and (ii) the *corpus majority probability*, the probe's probability
of the class it predicts most often on the corpus. A repetition's AUC is the mean
over its classes and explicands; tables give the mean over seeds with a 95 %
interval (resampling seeds and corpus classes), and COCOA's advantage over each
other target is a paired comparison by seed, the benchmark's comparisons
Holm-corrected as one family.
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
from lib.eval.intervals import comparison_cell
from lib.explain.attribute import METHODS, attribute_targets
from lib.explain.cocoa import (
    ContrastiveCorpusSimilarity,
    ContrastiveLabelFree,
    CorpusSimilarity,
    LabelFreeImportance,
)
from lib.explain.removal import (
    blur_baseline,
    insertion_deletion_curves,
    random_attribution,
)
from lib.runtime import Runtime
from lib.studies.cocoa.data import derived_seed, seed_global_draws
from lib.studies.cocoa.params import N_CLASSES, BenchmarkParams, CocoaEvalParams
from lib.studies.cocoa.simclr import majority_class, representations
from lib.studies.cocoa.stats import comparison_columns, over_seeds, per_seed
from lib.timing import phase

SETTINGS = ("same_class", "different_class")
TARGETS = ("label_free", "contrastive_label_free", "corpus", "cocoa")
METRICS = ("contrastive_corpus_similarity", "corpus_majority_probability")
CURVES = ("insertion", "deletion")
#: Key of the benchmark's draws among a repetition's derived seeds (:func:`lib.studies.cocoa.data.derived_seed`).
STREAM = 3
#: The range of an AUC of each score: the contrastive corpus similarity is a difference of two mean cosines.
AUC_BOUNDS = {"contrastive_corpus_similarity": (-2.0, 2.0), "corpus_majority_probability": (0.0, 1.0)}


def explicand_targets(
    encoder: nn.Module, explicand_repr: Tensor, foil_repr: Tensor, shared: dict[str, nn.Module]
) -> dict[str, nn.Module]:
    """The four targets for one explicand: its own representation (1, D) makes the label-free pair."""
    return {
        "label_free": LabelFreeImportance(encoder, explicand_repr),
        "contrastive_label_free": ContrastiveLabelFree(encoder, foil_repr, explicand_repr),
        **shared,
    }


def foil_pool(train_labels: np.ndarray, corpus_class: int, corpus: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of the training images a foil is drawn from once ``corpus`` (of ``corpus_class``) is taken out.

    As the reference code does: the corpus class's images outside the corpus, and a
    random share ``1 - |corpus| / |class c|`` of every other class's images, so that
    class c has the same share of the pool as of the training set.
    """
    target = np.flatnonzero(train_labels == corpus_class)
    others = np.flatnonzero(train_labels != corpus_class)
    kept = int(len(others) * (1 - len(corpus) / len(target)))
    return np.concatenate([rng.choice(others, kept, replace=False), np.setdiff1d(target, corpus)])


@dataclass(frozen=True)
class Task:
    """One seed x corpus class x setting: explicands (n, 1, H, W) with their labels, corpus, explanation foil
    and evaluation foil images."""

    seed: int
    setting: str
    corpus_class: int
    explicands: Tensor
    explicand_labels: Tensor
    corpus: Tensor
    foil: Tensor
    eval_foil: Tensor

    def draw_seed(self, i: int) -> int:
        """The seed of explicand ``i``'s random draws (RISE masks, GradientShap noise): new in every repetition,
        the same for every target and for the trained and the randomised encoder."""
        return derived_seed(self.seed, STREAM, SETTINGS.index(self.setting), self.corpus_class, i)

    def ranking_seed(self) -> int:
        """The seed of the task's random ranking."""
        return derived_seed(self.seed, STREAM, SETTINGS.index(self.setting), self.corpus_class)

    def head(self, n: int) -> Task:
        """The task restricted to its first ``n`` explicands."""
        return Task(self.seed, self.setting, self.corpus_class, self.explicands[:n], self.explicand_labels[:n],
                    self.corpus, self.foil, self.eval_foil)


def sample_tasks(digits: Split[MnistDataset], cfg: BenchmarkParams, seed: int) -> list[Task]:
    """Repetition ``seed``'s tasks: every class as the corpus class, each in both settings (see the module's
    docstring); the two settings of a class share its corpus and foils."""
    train_y, test_y = digits.fit.labels.numpy(), digits.test.labels.numpy()
    train, test = digits.fit.images, digits.test.images
    tasks = []
    for c in range(N_CLASSES):
        rng = np.random.default_rng(derived_seed(seed, STREAM, c))
        corpus = rng.choice(np.flatnonzero(train_y == c), cfg.corpus_size, replace=False)
        foils = rng.choice(foil_pool(train_y, c, corpus, rng), 2 * cfg.foil_size, replace=False)
        pools = {"same_class": np.flatnonzero(test_y == c), "different_class": np.flatnonzero(test_y != c)}
        for setting in SETTINGS:
            explicands = rng.choice(pools[setting], cfg.n_explicands, replace=False)
            tasks.append(Task(
                seed, setting, c, test[explicands], digits.test.labels[explicands], train[corpus],
                train[foils[: cfg.foil_size]], train[foils[cfg.foil_size :]],
            ))
    return tasks


@dataclass(frozen=True)
class TaskRepresentations:
    """One encoder's representations of a task's corpus, explanation foil and evaluation foil, (n, D) each.
    The two settings of a corpus class share them, so a class's sets are encoded once."""

    corpus: Tensor
    foil: Tensor
    eval_foil: Tensor


def encode_task(encoder: nn.Module, task: Task, rt: Runtime) -> TaskRepresentations:
    """h of the task's corpus, foil and evaluation foil."""
    return TaskRepresentations(*(representations(encoder, images, rt) for images in (task.corpus, task.foil, task.eval_foil)))


def explain_task(
    encoder: nn.Module, task: Task, cfg: CocoaEvalParams, rt: Runtime, encoded: TaskRepresentations | None = None,
) -> dict[tuple[str, str], Tensor]:
    """Attributions {(target, method): (n, 1, H, W)} of every explicand of a task.

    The corpus and foil representations come from ``encoder`` itself (``encoded``, or computed here), so a
    randomised encoder (:mod:`lib.studies.cocoa.sanity`) is explained end to end. The four targets of an
    explicand share one encoding of every perturbed image (:func:`lib.explain.attribute.attribute_targets`)."""
    corpus_repr = representations(encoder, task.corpus, rt) if encoded is None else encoded.corpus
    foil_repr = representations(encoder, task.foil, rt) if encoded is None else encoded.foil
    shared = {
        "corpus": CorpusSimilarity(encoder, corpus_repr),
        "cocoa": ContrastiveCorpusSimilarity(encoder, corpus_repr, foil_repr),
    }
    explicands = rt.batch(task.explicands)
    baselines = blur_baseline(explicands, cfg.benchmark.blur_sigma)
    own = representations(encoder, explicands, rt)
    maps: dict[tuple[str, str], list[Tensor]] = {}
    for i in range(len(explicands)):
        x, b = explicands[i : i + 1], baselines[i : i + 1]
        targets = explicand_targets(encoder, own[i : i + 1], foil_repr, shared)
        draw = task.draw_seed(i)
        seed_global_draws(draw)
        explained = {m: attribute_targets(targets, m, x, b, cfg.attribution, seed=draw) for m in cfg.benchmark.methods}
        for name, method in product(targets, cfg.benchmark.methods):
            maps.setdefault((name, method), []).append(explained[method][name].detach())
    return {key: torch.cat(values) for key, values in maps.items()}


class EvaluationScores(nn.Module):
    """The two scores the removal curves follow, from one encoding of each image: x -> (B, 2) with columns
    :data:`METRICS`, the contrastive corpus similarity against the evaluation foil (not the foil the
    attributions saw) and the probe's probability of the corpus's majority class."""

    def __init__(self, encoder: nn.Module, probe: nn.Module, encoded: TaskRepresentations, majority: int):
        super().__init__()
        self.similarity = ContrastiveCorpusSimilarity(encoder, encoded.corpus, encoded.eval_foil)
        self.probe, self.majority = probe, majority

    def forward(self, x: Tensor) -> Tensor:
        h = self.similarity.explicand_representation(x)
        return torch.stack([self.similarity.score(h), self.probe(h).softmax(dim=1)[:, self.majority]], dim=1)


def evaluate_task(
    encoder: nn.Module, probe: nn.Module, task: Task, maps: dict[tuple[str, str], Tensor], cfg: CocoaEvalParams,
    rt: Runtime, encoded: TaskRepresentations | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Insertion and deletion curves of every ranking (plus a random one), both metrics.

    Returns (AUCs, one row per target x method x metric x curve, averaged over the
    explicands; mean curves, one row per step). All rankings of all explicands go
    through :func:`insertion_deletion_curves` as one batch of repeated explicands,
    and both metrics read one encoding of each removed image (:class:`EvaluationScores`).
    The majority class is the probe's modal prediction on the corpus
    (:func:`~lib.studies.cocoa.simclr.majority_class`).
    """
    encoded = encode_task(encoder, task, rt) if encoded is None else encoded
    generator = torch.Generator().manual_seed(task.ranking_seed())
    explicands = rt.batch(task.explicands)
    rankings = {**maps, ("random", "random"): random_attribution(explicands.cpu(), generator).to(explicands)}
    keys, k, n = list(rankings), len(rankings), len(explicands)
    inputs, attributions = explicands.repeat(k, 1, 1, 1), torch.cat([rankings[key] for key in keys])
    baselines = blur_baseline(inputs, cfg.benchmark.blur_sigma)
    probe = probe.to(rt.device)
    majority = majority_class(probe, encoded.corpus)
    result = insertion_deletion_curves(EvaluationScores(encoder, probe, encoded, majority), inputs, attributions,
                                       baselines, cfg.benchmark.curve_steps, cfg.attribution.batch_size)
    fractions = result.fractions.cpu()
    aucs, curves = [], []
    for t, metric in enumerate(METRICS):
        for curve in CURVES:
            auc = getattr(result, f"{curve}_auc")[t].reshape(k, n).mean(dim=1).cpu()
            mean_curve = getattr(result, curve)[t].reshape(k, n, -1).mean(dim=1).cpu()
            for j, (target, method) in enumerate(keys):
                row = _task_row(task) | {"majority_class": majority, "target": target, "method": method,
                                         "metric": metric, "curve": curve}
                aucs.append(row | {"auc": float(auc[j])})
                curves += [row | {"fraction": float(f), "score": float(v)} for f, v in zip(fractions, mean_curve[j], strict=True)]
    return pd.DataFrame(aucs), pd.DataFrame(curves)


def _task_row(task: Task) -> dict:
    return {"seed": task.seed, "setting": task.setting, "corpus_class": task.corpus_class}


@dataclass(frozen=True)
class Benchmark:
    """AUCs and mean curves (tidy frames); the tasks; the attributions of the first ``sanity.n_explicands``
    explicands of every task, {(setting, corpus class): {(target, method): (k, 1, H, W)}}, for the sanity check;
    and one explicand per setting with its attributions, for a figure."""

    aucs: pd.DataFrame
    curves: pd.DataFrame
    tasks: list[Task]
    first_maps: dict[tuple[str, int], dict[tuple[str, str], Tensor]]
    examples: dict[str, tuple[Tensor, dict[tuple[str, str], Tensor]]]


@phase("evaluate")
def run_benchmark(
    encoder: nn.Module, probe: nn.Module, digits: Split[MnistDataset], cfg: CocoaEvalParams, seed: int, rt: Runtime,
    progress: bool = True,
) -> Benchmark:
    """Repetition ``seed`` (its encoder, probe and held-out digits): every class x setting, explain, then score
    the rankings (paper Sec. 4.1). The examples are of corpus class ``seed mod 10``."""
    encoder = rt.prepare(encoder).eval()
    tasks = sample_tasks(digits, cfg.benchmark, seed)
    aucs, curves, first, examples = [], [], {}, {}
    encoded: dict[int, TaskRepresentations] = {}  # per corpus class: both settings share its sets
    for task in tqdm(tasks, desc=f"benchmark, seed {seed}", disable=not progress):
        if task.corpus_class not in encoded:
            encoded[task.corpus_class] = encode_task(encoder, task, rt)
        maps = explain_task(encoder, task, cfg, rt, encoded[task.corpus_class])
        auc, curve = evaluate_task(encoder, probe, task, maps, cfg, rt, encoded[task.corpus_class])
        aucs.append(auc)
        curves.append(curve)
        first[task.setting, task.corpus_class] = {key: m[: cfg.sanity.n_explicands].cpu() for key, m in maps.items()}
        if task.corpus_class == seed % N_CLASSES:
            examples[task.setting] = (task.explicands[0].cpu(), {key: m[0].cpu() for key, m in maps.items()})
    return Benchmark(pd.concat(aucs, ignore_index=True), pd.concat(curves, ignore_index=True), tasks, first, examples)


def combine(benchmarks: list[Benchmark]) -> Benchmark:
    """The repetitions' benchmarks as one: frames and tasks concatenated, the examples of the first
    repetition; ``first_maps`` stay with each repetition (empty here)."""
    return Benchmark(
        pd.concat([b.aucs for b in benchmarks], ignore_index=True),
        pd.concat([b.curves for b in benchmarks], ignore_index=True),
        [t for b in benchmarks for t in b.tasks],
        {},
        benchmarks[0].examples,
    )


KEYS = ["setting", "metric", "target", "method", "curve"]


def seed_aucs(aucs: pd.DataFrame) -> pd.DataFrame:
    """A repetition's AUC per setting x metric x target x method x curve: the mean over its corpus classes."""
    return per_seed(aucs, KEYS, "auc")


def summarise(aucs: pd.DataFrame) -> pd.DataFrame:
    """Per setting x metric x target x method x curve: the mean AUC over seeds and its 95 % interval, resampling
    seeds and their corpus classes (:func:`lib.studies.cocoa.stats.over_seeds`)."""
    return pd.concat([over_seeds(rows, KEYS, "auc", AUC_BOUNDS[metric]) for metric, rows in aucs.groupby("metric", sort=False)],
                     ignore_index=True)


def _random_under_every_method(frame: pd.DataFrame) -> pd.DataFrame:
    """The random ranking's rows (method "random") repeated under each attribution method of ``frame``."""
    random = frame[frame.target == "random"]
    methods = [m for m in METHODS if m in set(frame.method)]
    return pd.concat([frame[frame.target != "random"], *(random.assign(method=m) for m in methods)], ignore_index=True)


def auc_table(summary: pd.DataFrame, setting: str, metric: str) -> pd.DataFrame:
    """The paper's table for one setting and metric: rows targets (and the random ranking, repeated under every
    method), columns method x curve, cells "mean [95 % interval]" over seeds."""
    rows = _random_under_every_method(summary[(summary.setting == setting) & (summary.metric == metric)])
    cells = rows.assign(text=[cell.format() for cell in rows["cell"]])
    table = cells.pivot(index="target", columns=["method", "curve"], values="text")
    methods = [m for m in METHODS if m in set(rows.method)]
    order = [t for t in (*TARGETS, "random") if t in table.index]
    return table.loc[order, [(m, c) for m in methods for c in CURVES]]


def cocoa_advantage(aucs: pd.DataFrame) -> pd.DataFrame:
    """COCOA's AUC against every other target's (and the random ranking's), paired by seed
    (:func:`lib.eval.intervals.comparison_cell` of the repetitions' AUCs), all of them one Holm family.

    The advantage is cocoa - other for insertion (higher is better) and
    other - cocoa for deletion (lower is better), so it is positive where COCOA
    wins; one row per setting x metric x method x curve x other target with the
    comparison ``cell`` and its columns (:func:`lib.studies.cocoa.stats.comparison_columns`:
    ``advantage``, its 95 % interval, the p-values before and after Holm's
    correction, ``supported`` by the corrected p and ``direction``).
    """
    by_seed = _random_under_every_method(seed_aucs(aucs))
    keys = ["setting", "metric", "method", "curve"]
    rows = []
    for key, group in by_seed.groupby(keys, sort=False):
        wide = group.pivot(index="seed", columns="target", values="auc").sort_index()
        for other in [t for t in (*TARGETS, "random") if t in wide.columns and t != "cocoa"]:
            a, b = ("cocoa", other) if key[-1] == "insertion" else (other, "cocoa")
            cell = comparison_cell(wide[a].to_numpy(), wide[b].to_numpy(), a=a, b=b, bounds=AUC_BOUNDS[key[1]])
            rows.append(dict(zip(keys, key, strict=True)) | {"other": other, "cell": cell})
    return comparison_columns(rows, difference="advantage")


def verdicts(advantage: pd.DataFrame) -> pd.DataFrame:
    """Per setting x metric: of the method x curve columns, in how many COCOA's mean is the best of all targets
    and the random ranking, in how many the paired comparison supports it against every one of them, and in how
    many some other target is supported as better than COCOA (supported: by the Holm-corrected paired test)."""
    rows = []
    for (setting, metric), group in advantage.groupby(["setting", "metric"], sort=False):
        columns = list(group.groupby(["method", "curve"], sort=False))
        rows.append({
            "setting": setting, "metric": metric, "n_columns": len(columns),
            "best_on_average": sum(bool((c.advantage > 0).all()) for _, c in columns),
            "supported_best": sum(bool((c.supported & (c.advantage > 0)).all()) for _, c in columns),
            "supported_worse": sum(bool((c.supported & (c.advantage < 0)).any()) for _, c in columns),
        })
    return pd.DataFrame(rows)


def benchmark_summary(aucs: pd.DataFrame) -> str:
    """One sentence per setting x metric from :func:`verdicts`."""
    lines = []
    n_seeds = aucs.seed.nunique()
    advantage = cocoa_advantage(aucs)
    for row in verdicts(advantage).itertuples():
        lines.append(
            f"{row.setting}, {row.metric.replace('_', ' ')}: COCOA's mean AUC beats every other target and the random "
            f"ranking in {row.best_on_average} of {row.n_columns} method x curve columns; a paired comparison over "
            f"{n_seeds} seeds (Holm-corrected over the benchmark's {len(advantage)} comparisons) supports it against "
            f"all of them in {row.supported_best}, and supports another target as better in {row.supported_worse}."
        )
    return "\n".join(lines)
