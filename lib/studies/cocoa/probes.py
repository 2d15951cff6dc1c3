"""The classification ladder's probes: what raw pixels give, and the validation score of SimCLR's plateau.

* :func:`knn_predict` - a k-nearest-neighbour vote: each query takes the most
  frequent label among its k nearest references (ties: the lowest label), by
  cosine similarity (representations) or Euclidean distance (pixels);
* :func:`pixel_predictions` - the trivial rung on raw pixels: the same logistic
  probe the SimCLR representation gets (:func:`lib.eval.probes.logistic_probe`,
  standardised inputs, scikit-learn's C) on the flattened pixels, and a
  1-nearest-neighbour classifier on them (Euclidean).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lib.data.mnist import MnistDataset
from lib.eval.probes import logistic_probe
from lib.studies.cocoa.params import N_CLASSES, ProbeParams

Metric = Literal["cosine", "euclidean"]


def knn_predict(references: Tensor, reference_labels: Tensor, queries: Tensor, k: int,
                metric: Metric = "cosine", chunk: int = 1024) -> Tensor:
    """Labels (Q,) of ``queries`` (Q, D): the majority label of the ``k`` nearest of ``references`` (R, D)
    under ``metric`` (ties between labels go to the lowest)."""
    if not 1 <= k <= len(references):
        raise ValueError(f"k must lie in [1, {len(references)}] (the references), got {k}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    references, queries = references.flatten(1).double(), queries.flatten(1).double()
    if metric == "cosine":
        references, queries = F.normalize(references, dim=1), F.normalize(queries, dim=1)
    labels = reference_labels.long()
    out = []
    for part in queries.split(chunk):
        # nearest first: the largest cosine, or the smallest squared distance |r|^2 - 2 <q, r> (|q|^2 is shared)
        closeness = part @ references.T if metric == "cosine" else 2 * part @ references.T - (references**2).sum(dim=1)
        nearest = closeness.topk(k, dim=1, sorted=True).indices if k > 1 else closeness.argmax(dim=1, keepdim=True)
        votes = F.one_hot(labels[nearest], int(labels.max()) + 1).sum(dim=1)  # (q, n_labels)
        out.append(votes.argmax(dim=1))  # the first maximum: the lowest label
    return torch.cat(out)


def pixel_predictions(train: MnistDataset, test: MnistDataset, cfg: ProbeParams) -> dict[str, Tensor]:
    """The trivial rung's test predictions (N,): {"pixel_logistic": the logistic probe on pixels,
    "pixel_1nn": the Euclidean 1-nearest neighbour among the training pixels}."""
    probe = logistic_probe(train.images.flatten(1), train.labels, N_CLASSES, cfg.regularisation, cfg.max_iter)
    with torch.no_grad():
        logistic = probe(test.images.flatten(1).to(probe.weight.dtype)).argmax(dim=1)
    return {"pixel_logistic": logistic,
            "pixel_1nn": knn_predict(train.images, train.labels, test.images, k=1, metric="euclidean")}
