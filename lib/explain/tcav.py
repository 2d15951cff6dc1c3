"""Testing with Concept Activation Vectors (TCAV; Kim et al., ICML 2018) for
regression models, as a thin layer over captum's ``captum.concept`` API.

Method (Kim et al., Sec. 3). For a layer ``l`` with flattened activations
``f_l(x)`` of size ``F``:

* CAV (Sec. 3.2): a linear classifier separates the activations of concept
  examples from those of a random (negative) set; its weight vector, oriented
  towards the concept, is the CAV ``v_C`` of shape ``(F,)``.
* Conceptual sensitivity (Sec. 3.3): ``S_C(x) = grad_{f_l} h(f_l(x)) . v_C / ||v_C||``,
  the directional derivative of the model output ``h`` (here the scalar
  regression output, ``target=0`` of an ``(n, 1)`` output) along the unit CAV.
  For ``n`` inputs: gradients ``(n, F)`` -> sensitivities ``(n,)``.
* TCAV score (Sec. 3.4): ``TCAV_C = |{x : S_C(x) > 0}| / n``; the magnitude
  variant ``sum_x max(S_C(x), 0) / sum_x |S_C(x)|`` also weighs how strongly.
* Significance (Sec. 3.5): CAVs are retrained against ``R`` different random
  sets; the ``R`` scores of a concept are compared by a two-sided t-test with
  the ``R`` scores of a random set treated as a concept (random vs random).
  Only concepts rejecting that null at ``alpha`` (optionally Bonferroni
  corrected) are reported.

Experimental design used here: ``randoms[1:]`` are the ``R = len(randoms) - 1``
negatives; every concept is paired with every negative, giving ``R`` runs.
The *null concept* (random vs random) has ``R`` runs too: run ``k`` is
``randoms[k]`` against run ``k``'s negative ``randoms[k + 1]``, so each null
run has its own positive set and, as random sets are exchangeable, the null
scores spread symmetrically around 0.5 (a score ``s`` along ``v`` is
``1 - s`` along ``-v``). Its runs are labelled with the name of ``randoms[0]``.
A single fixed random set as the positive of every null run would instead
carry that one set's chance direction into all ``R`` runs: their scores then
cluster on one side of 0.5, and the t-test tends to miss concepts on that side.

What captum does and what is done here. captum trains and caches the CAVs
(``TCAV.compute_cavs``: concept activations via ``LayerActivation``, one
classifier per experimental set, pickles under ``save_path``) and supplies the
layer gradients (``LayerGradientXActivation(multiply_by_inputs=False)``, the
sensitivity captum's ``TCAV.interpret`` uses). The scores are computed here
from those CAVs and gradients, because captum 0.9's ``interpret`` reports as
``magnitude`` the *mean* directional derivative, not the ratio above.
The default classifier is a seeded scikit-learn logistic regression, so CPU
runs are bit-for-bit repeatable; CAVs go to a fresh temporary directory per
call unless ``save_path`` is given, so no cached CAV of another model is reused.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from captum.attr import LayerGradientXActivation
from captum.concept import TCAV, Concept
from captum.concept._utils.classifier import Classifier
from captum.concept._utils.common import concepts_to_str
from scipy import stats
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = [
    "LogisticCAVClassifier",
    "compute_cavs",
    "concept_sensitivity",
    "experimental_sets",
    "first_runs",
    "layer_gradients",
    "make_concept",
    "outcome_intervals",
    "random_concepts",
    "score_by_interval",
    "score_runs",
    "significance_table",
    "significant_concepts",
    "tcav_by_interval",
    "tcav_magnitude",
    "tcav_score",
]

# captum stores activations under directories named after the concept and globs
# them, so concept names must not contain path separators or glob patterns.
_FORBIDDEN_NAME_CHARS = set("/\\*?[]")


# --------------------------------------------------------------------------
# Concepts and experimental sets
# --------------------------------------------------------------------------


def _stack_images(batch: list) -> Tensor:
    """Collate dataset items into an image batch, dropping labels if present."""
    images = [item[0] if isinstance(item, (tuple, list)) else item for item in batch]
    return torch.stack(images)


def make_concept(
    concept_id: int, name: str, data: Tensor | Dataset, batch_size: int = 64
) -> Concept:
    """Wrap concept examples as a captum ``Concept`` (Kim et al., Sec. 3.1).

    Args:
        concept_id: unique integer id (captum uses it as the classifier label).
        name: unique name, used in captum's on-disk paths and in result tables.
        data: images ``(m, ...)`` as a tensor, or a map-style dataset whose items
            are images or ``(image, ...)`` tuples.
        batch_size: batch size for computing the concept activations.

    Returns:
        A ``Concept`` iterating, in order, over image batches ``(b, ...)``.
    """
    if _FORBIDDEN_NAME_CHARS & set(name) or not name:
        raise ValueError(f"concept name {name!r} must be non-empty without / \\ * ? [ ]")
    if len(data) == 0:
        raise ValueError(f"concept {name!r} has no examples")
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=_stack_images)
    return Concept(id=concept_id, name=name, data_iter=loader)


def random_concepts(
    pool: Tensor | Dataset,
    n_runs: int = 10,
    set_size: int = 50,
    seed: int = 0,
    first_id: int = 10_000,
    prefix: str = "random",
    batch_size: int = 64,
) -> list[Concept]:
    """Draw ``n_runs + 1`` random concepts from a pool of images (Kim et al., Sec. 3.5).

    Each set is ``set_size`` distinct pool items drawn with a seeded generator;
    sets are drawn independently. The last ``n_runs`` serve as negatives, and
    all but the last as the positives of the null (random vs random) runs, see
    :func:`experimental_sets`.

    Args:
        pool: images ``(m, ...)`` or a map-style dataset, ``m >= set_size``.
        n_runs: number of negatives, i.e. of CAVs trained per concept (>= 2).
        set_size: examples per random set.
        seed: seed of the draw.
        first_id: id of the first set; the others follow consecutively.
        prefix: name prefix; set ``k`` is named ``f"{prefix}_{k}"``.
        batch_size: batch size for the activations.
    """
    if n_runs < 2:
        raise ValueError(f"need n_runs >= 2 random runs for a t-test, got {n_runs}")
    if set_size > len(pool):
        raise ValueError(f"set_size {set_size} exceeds the pool size {len(pool)}")
    gen = torch.Generator().manual_seed(seed)
    concepts = []
    for k in range(n_runs + 1):
        chosen = torch.randperm(len(pool), generator=gen)[:set_size].sort().values
        if isinstance(pool, Tensor):
            subset = pool[chosen]
        else:
            subset = Subset(pool, chosen.tolist())
        concepts.append(make_concept(first_id + k, f"{prefix}_{k}", subset, batch_size))
    return concepts


def experimental_sets(
    concepts: Sequence[Concept], randoms: Sequence[Concept]
) -> list[list[Concept]]:
    """Pair every concept with every negative, and each random set with the next one.

    Returns ``[[c, r] for c in concepts for r in randoms[1:]]`` followed by
    the null runs ``[[randoms[k], randoms[k + 1]] for k in 0 .. R-1]``:
    ``R = len(randoms) - 1`` experimental sets per concept and for the null
    concept, captum's format.
    """
    if len(randoms) < 3:
        raise ValueError(
            "need at least 3 random concepts (a null concept and >= 2 negatives), "
            f"got {len(randoms)}"
        )
    everything = [*concepts, *randoms]
    for attribute in ("id", "name"):
        values = [getattr(c, attribute) for c in everything]
        if len(set(values)) != len(values):
            raise ValueError(f"concept {attribute}s must be unique, got {values}")
    negatives = randoms[1:]
    null_runs = [[positive, negative] for positive, negative in zip(randoms[:-1], negatives, strict=True)]
    return [[concept, negative] for concept in concepts for negative in negatives] + null_runs


# --------------------------------------------------------------------------
# CAVs
# --------------------------------------------------------------------------


class LogisticCAVClassifier(Classifier):
    """Seeded L2-regularised logistic regression as captum's CAV ``Classifier``.

    ``train_and_eval`` gathers all activations ``(m, F)`` with their concept-id
    labels, holds out a seeded ``test_split_ratio`` share to report accuracy and
    fits ``sklearn.linear_model.LogisticRegression`` (lbfgs, deterministic) on
    the rest. ``weights()`` is ``(C, F)`` in the order of ``classes()``; for two
    concepts it is ``[-w, w]`` with ``w`` pointing to the larger id, so each row
    points towards its own concept (captum's convention).
    """

    def __init__(
        self, C: float = 1.0, test_split_ratio: float = 0.33, seed: int = 0, max_iter: int = 1000
    ) -> None:
        self.C = C
        self.test_split_ratio = test_split_ratio
        self.seed = seed
        self.max_iter = max_iter
        self.model: LogisticRegression | None = None

    def train_and_eval(self, dataloader: DataLoader, **kwargs) -> dict[str, Tensor]:
        batches = list(dataloader)
        x = torch.cat([inputs for inputs, _ in batches]).detach().cpu().double().numpy()
        y = torch.cat([labels for _, labels in batches]).cpu().numpy()
        order = np.random.default_rng(self.seed).permutation(len(y))
        n_test = int(self.test_split_ratio * len(y))
        test, train = order[:n_test], order[n_test:]
        self.model = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        # A small fit: extra BLAS threads only contend with torch's thread pool.
        with threadpool_limits(limits=1):
            self.model.fit(x[train], y[train])
        correct = self.model.predict(x[test]) == y[test]
        return {"accs": torch.tensor(float(correct.mean()) if n_test else float("nan"))}

    def weights(self) -> Tensor:
        if self.model is None:
            raise RuntimeError("LogisticCAVClassifier.weights() called before training")
        coef = torch.from_numpy(self.model.coef_).float()
        return torch.cat([-coef, coef]) if coef.shape[0] == 1 else coef

    def classes(self) -> list[int]:
        if self.model is None:
            raise RuntimeError("LogisticCAVClassifier.classes() called before training")
        return [int(c) for c in self.model.classes_]


@contextmanager
def _cav_directory(save_path: str | Path | None):
    """Yield ``save_path``, or a fresh temporary directory removed afterwards."""
    if save_path is not None:
        yield str(save_path)
        return
    with tempfile.TemporaryDirectory(prefix="tcav-") as directory:
        yield directory


def compute_cavs(
    model: nn.Module,
    layer: str,
    concepts: Sequence[Concept],
    randoms: Sequence[Concept],
    classifier: Classifier | None = None,
    save_path: str | Path | None = None,
) -> dict[tuple[str, int], Tensor]:
    """Train one CAV per (concept, run) with captum (Kim et al., Sec. 3.2).

    Args:
        model: the network; ``layer`` is a name for ``model.get_submodule``.
        concepts: concept sets; ``randoms``: the random sets of the null
            runs and the negatives (see :func:`experimental_sets`).
        classifier: a captum ``Classifier``; default ``LogisticCAVClassifier()``.
        save_path: where captum keeps activations and CAVs; a temporary
            directory (deleted on return) if ``None``. A given path caches CAVs
            by concept id and layer: reuse it only for the same model and data.

    Returns:
        ``{(concept name, run): cav}`` with ``cav`` of shape ``(F,)`` oriented
        towards the concept (unnormalised classifier weights), for every concept
        and for the null concept (named ``randoms[0].name``), runs ``0 .. R-1``.
    """
    model.get_submodule(layer)  # fail early, with torch's message, on a bad name
    sets = experimental_sets(concepts, randoms)
    with _cav_directory(save_path) as directory:
        tcav = TCAV(
            model,
            [layer],
            model_id="model",
            classifier=LogisticCAVClassifier() if classifier is None else classifier,
            save_path=directory,
        )
        # captum 0.9's cache check (TCAV.load_cavs) passes layer and concept to
        # AV.exists in swapped order, so it never finds stored activations and
        # recomputes a concept's activations for each of its R experimental
        # sets. In a fresh directory nothing is cached anyway: force_train
        # computes every concept's activations once, then trains all CAVs.
        trained = tcav.compute_cavs(sets, force_train=save_path is None)
    n_runs = len(randoms) - 1
    cavs = {}
    for index, (concept, negative) in enumerate(sets):
        cav_stats = trained[concepts_to_str([concept, negative])][layer].stats
        row = list(cav_stats["classes"]).index(concept.id)
        name = concept.name if index < len(concepts) * n_runs else randoms[0].name
        cavs[(name, index % n_runs)] = cav_stats["weights"][row].detach().float()
    return cavs


# --------------------------------------------------------------------------
# Sensitivities and scores
# --------------------------------------------------------------------------


def layer_gradients(
    model: nn.Module, layer: str, inputs: Tensor, target: int | None = 0, batch_size: int = 256
) -> Tensor:
    """Gradients of the output ``target`` w.r.t. the layer's output, flattened.

    Uses captum's ``LayerGradientXActivation(multiply_by_inputs=False)``, the
    sensitivity behind captum's ``TCAV.interpret``. ``inputs`` ``(n, ...)`` ->
    ``(n, F)``, computed in chunks of ``batch_size`` inputs. The model is used
    as it is: put it in eval mode first.
    """
    module = model.get_submodule(layer)
    attribution = LayerGradientXActivation(model, module, multiply_by_inputs=False)
    chunks = [
        attribution.attribute(chunk, target=target).detach()
        for chunk in torch.split(inputs, batch_size)
    ]
    return torch.cat(chunks).reshape(len(inputs), -1)


def concept_sensitivity(gradients: Tensor, cav: Tensor) -> Tensor:
    """Directional derivatives ``S_C(x) = grad(x) . v_C / ||v_C||`` (Kim et al., Sec. 3.3).

    Args:
        gradients: ``(n, F)`` layer gradients of the output.
        cav: ``(F,)`` one CAV, or ``(R, F)`` several.

    Returns:
        ``(n,)`` for one CAV, ``(n, R)`` for several.
    """
    if gradients.dim() != 2 or cav.dim() not in (1, 2) or cav.shape[-1] != gradients.shape[1]:
        raise ValueError(
            f"expected gradients (n, F) and cav (F,) or (R, F), got {tuple(gradients.shape)} "
            f"and {tuple(cav.shape)}"
        )
    unit = cav / cav.norm(dim=-1, keepdim=True)
    return gradients.to(unit.dtype) @ (unit.mT if unit.dim() == 2 else unit)


def tcav_score(sensitivities: Tensor) -> Tensor:
    """TCAV score: share of inputs with ``S_C(x) > 0`` (Kim et al., Sec. 3.4).

    ``(n,)`` -> scalar, or ``(n, R)`` -> ``(R,)``.
    """
    return (sensitivities > 0).double().mean(dim=0)


def tcav_magnitude(sensitivities: Tensor) -> Tensor:
    """Magnitude TCAV score ``sum max(S, 0) / sum |S|`` over inputs (dim 0).

    ``(n,)`` -> scalar, or ``(n, R)`` -> ``(R,)``; NaN where all ``S`` are 0.
    """
    s = sensitivities.double()
    return s.clamp(min=0).sum(dim=0) / s.abs().sum(dim=0)


def score_runs(gradients: Tensor, cavs: dict[tuple[str, int], Tensor]) -> pd.DataFrame:
    """Score every CAV on the same inputs.

    Args:
        gradients: ``(n, F)`` from :func:`layer_gradients`.
        cavs: ``{(concept, run): (F,)}`` from :func:`compute_cavs`.

    Returns:
        DataFrame with columns ``concept, run, score, magnitude``, one row per CAV.
    """
    keys = list(cavs)
    sensitivities = concept_sensitivity(gradients, torch.stack([cavs[k] for k in keys]))
    return pd.DataFrame(
        {
            "concept": [concept for concept, _ in keys],
            "run": [run for _, run in keys],
            "score": tcav_score(sensitivities).numpy(),
            "magnitude": tcav_magnitude(sensitivities).numpy(),
        }
    )


# --------------------------------------------------------------------------
# Significance and outcome intervals
# --------------------------------------------------------------------------


def significance_table(
    runs: pd.DataFrame, null_concept: str, alpha: float = 0.05, bonferroni: bool = True
) -> pd.DataFrame:
    """Two-sided t-test of each concept's run scores against the null concept's.

    Kim et al. (Sec. 3.5) test whether a concept's TCAV scores over runs differ
    from those of random-vs-random CAVs; ``scipy.stats.ttest_ind`` compares the
    ``score`` column of each concept with that of ``null_concept``, within each
    ``interval`` when that column is present.

    Args:
        runs: tidy scores with columns ``concept, run, score`` (+ ``interval``).
        null_concept: the ``concept`` value of the random-vs-random runs.
        alpha: significance level.
        bonferroni: if true, a test is significant at ``p < alpha / m`` with
            ``m`` the number of (concept, interval) tests, else at ``p < alpha``.

    Returns:
        ``runs`` plus ``p_value`` (uncorrected) and ``significant``; the null
        concept's rows get ``p_value`` NaN. A NaN p-value (both samples
        constant and equal) is never significant.
    """
    if null_concept not in set(runs["concept"]):
        raise ValueError(f"null concept {null_concept!r} not found in the runs table")
    by_interval = "interval" in runs.columns
    work = runs if by_interval else runs.assign(interval=0)
    is_null = work["concept"] == null_concept
    null_scores = {
        interval: frame["score"].to_numpy() for interval, frame in work[is_null].groupby("interval")
    }
    p_values = {}
    with warnings.catch_warnings():
        # Scores are often constant over runs (all 0 or all 1); scipy warns
        # about that and returns an infinite t or a NaN p-value, both handled.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        for (concept, interval), frame in work[~is_null].groupby(["concept", "interval"]):
            if interval not in null_scores:
                raise ValueError(f"no {null_concept!r} runs for interval {interval}")
            scores = frame["score"].to_numpy()
            p_values[(concept, interval)] = stats.ttest_ind(scores, null_scores[interval]).pvalue
    threshold = alpha / max(len(p_values), 1) if bonferroni else alpha
    table = runs.copy()
    table["p_value"] = [
        p_values.get(key, np.nan) for key in zip(work["concept"], work["interval"])
    ]
    table["significant"] = table["p_value"] < threshold
    table.attrs.update(alpha=alpha, threshold=threshold, null_concept=null_concept)
    return table


def significant_concepts(table: pd.DataFrame) -> pd.DataFrame:
    """Summarise a :func:`significance_table`: the significant (concept, interval)s only.

    Returns one row per significant concept (and interval) with the mean and
    standard deviation of ``score`` and mean ``magnitude`` over runs, and ``p_value``.
    """
    groups = ["concept", "interval"] if "interval" in table.columns else ["concept"]
    significant = table[table["significant"]]
    return (
        significant.groupby(groups)
        .agg(
            score=("score", "mean"),
            score_std=("score", "std"),
            magnitude=("magnitude", "mean"),
            p_value=("p_value", "first"),
        )
        .reset_index()
    )


def outcome_intervals(y: Tensor | np.ndarray, n_intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """Split outcomes into ``n_intervals`` quantile intervals.

    Args:
        y: ``(n,)`` (or ``(n, 1)``) outcomes.
        n_intervals: number of intervals ``k >= 1``.

    Returns:
        ``(index, edges)``: ``index`` ``(n,)`` int64 in ``0 .. k-1`` and
        ``edges`` ``(k + 1,)``, the 0, 1/k, ..., 1 quantiles of ``y``. Interval
        ``i`` is ``[edges[i], edges[i+1])``, the last one closed. With heavily
        tied outcomes edges can coincide and an interval can be empty.
    """
    values = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"outcomes must be a non-empty (n,) or (n, 1) array, got {values.shape}")
    if n_intervals < 1:
        raise ValueError(f"n_intervals must be >= 1, got {n_intervals}")
    edges = np.quantile(values.astype(np.float64), np.linspace(0.0, 1.0, n_intervals + 1))
    index = np.searchsorted(edges[1:-1], values, side="right").astype(np.int64)
    return index, edges


def tcav_by_interval(
    model: nn.Module,
    layer: str,
    inputs: Tensor,
    y: Tensor | np.ndarray,
    concepts: Sequence[Concept],
    randoms: Sequence[Concept],
    n_intervals: int = 4,
    target: int | None = 0,
    alpha: float = 0.05,
    bonferroni: bool = True,
    classifier: Classifier | None = None,
    save_path: str | Path | None = None,
    batch_size: int = 256,
) -> pd.DataFrame:
    """TCAV scores per concept, run and outcome interval, with significance.

    CAVs are trained once (:func:`compute_cavs`); the inputs ``(n, ...)`` are
    split by quantile intervals of ``y`` ``(n,)`` (:func:`outcome_intervals`)
    and each interval's inputs are scored against every CAV; each concept is
    then t-tested against the null concept (random vs random runs, labelled
    ``randoms[0].name``) within each interval
    (:func:`significance_table`, ``m`` = concepts x non-empty intervals).

    Returns:
        Tidy DataFrame, one row per (concept, interval, run), columns
        ``concept, interval, run, score, magnitude, p_value, significant``,
        the null concept's runs included (``p_value`` NaN). ``attrs`` holds
        ``interval_edges``, ``alpha``, ``threshold`` and ``null_concept``.
    """
    if len(inputs) != len(y):
        raise ValueError(f"{len(inputs)} inputs but {len(y)} outcomes")
    cavs = compute_cavs(model, layer, concepts, randoms, classifier=classifier, save_path=save_path)
    return score_by_interval(model, layer, inputs, y, cavs, randoms[0].name, n_intervals=n_intervals,
                             target=target, alpha=alpha, bonferroni=bonferroni, batch_size=batch_size)


def first_runs(cavs: dict[tuple[str, int], Tensor], n_runs: int) -> dict[tuple[str, int], Tensor]:
    """The CAVs of runs ``0 .. n_runs - 1`` of every concept (the null concept's included).

    Run ``k`` of :func:`compute_cavs` pairs each concept with ``randoms[k + 1]``
    and the null concept's run ``k`` is ``randoms[k]`` against ``randoms[k + 1]``,
    so the first ``n_runs`` runs are exactly the CAVs that ``randoms[:n_runs + 1]``
    would give: TCAV with ``R`` random sets, for any ``R`` up to the number
    trained, without training a CAV again.
    """
    available = 1 + max(run for _, run in cavs)
    if not 2 <= n_runs <= available:
        raise ValueError(f"n_runs must lie in 2 .. {available} (the runs trained), got {n_runs}")
    return {key: cav for key, cav in cavs.items() if key[1] < n_runs}


def score_by_interval(
    model: nn.Module,
    layer: str,
    inputs: Tensor,
    y: Tensor | np.ndarray,
    cavs: dict[tuple[str, int], Tensor],
    null_concept: str,
    n_intervals: int = 4,
    target: int | None = 0,
    alpha: float = 0.05,
    bonferroni: bool = True,
    batch_size: int = 256,
) -> pd.DataFrame:
    """The scoring half of :func:`tcav_by_interval`, for CAVs already trained.

    The inputs ``(n, ...)`` are split by quantile intervals of ``y`` ``(n,)``
    (:func:`outcome_intervals`), each interval's inputs are scored against every
    CAV of ``cavs`` (``{(concept, run): (F,)}``, e.g. from :func:`compute_cavs`
    or :func:`first_runs`), and each concept is t-tested against
    ``null_concept`` within each interval (:func:`significance_table`). Returns
    the table :func:`tcav_by_interval` describes.
    """
    if len(inputs) != len(y):
        raise ValueError(f"{len(inputs)} inputs but {len(y)} outcomes")
    index, edges = outcome_intervals(y, n_intervals)
    frames = []
    for interval in np.unique(index):
        members = torch.from_numpy(np.flatnonzero(index == interval))
        gradients = layer_gradients(model, layer, inputs[members], target, batch_size)
        frames.append(score_runs(gradients, cavs).assign(interval=int(interval)))
    columns = ["concept", "interval", "run", "score", "magnitude"]
    runs = pd.concat(frames, ignore_index=True)[columns]
    table = significance_table(runs, null_concept, alpha=alpha, bonferroni=bonferroni)
    table.attrs["interval_edges"] = edges
    return table
