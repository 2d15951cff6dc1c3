"""Probes: simple models fitted on frozen embeddings (linear evaluation).

* :func:`ridge_probe` - ridge regression of an outcome, the penalty chosen on
  validation data (the concepts study's probe);
* :func:`logistic_probe` - multinomial logistic regression of a class, returned
  as one ``nn.Linear`` layer so that attribution methods can differentiate
  through it (the COCOA study's probe).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from lib.timing import phase


@phase("evaluate")
def ridge_probe(fit_x: np.ndarray, fit_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                alphas: list[float]) -> tuple[Ridge, float, float]:
    """Ridge regression y ~ w . x + b on frozen embeddings, the penalty chosen by validation R^2.

    One fit per penalty in ``alphas`` on (fit_x, fit_y); the one with the
    highest R^2 on (val_x, val_y) wins (the first on ties).
    Returns (the fitted model, its alpha, its validation R^2).
    """
    if not alphas:
        raise ValueError("ridge_probe needs at least one penalty in alphas")
    fitted = [Ridge(alpha=a).fit(fit_x, fit_y) for a in alphas]
    scores = [r2_score(val_y, m.predict(val_x)) for m in fitted]
    best = int(np.argmax(scores))
    return fitted[best], alphas[best], float(scores[best])


@phase("evaluate")
def logistic_probe(features: Tensor, labels: Tensor, n_classes: int, regularisation: float = 1.0,
                   max_iter: int = 1000) -> nn.Linear:
    """Multinomial logistic regression (scikit-learn) on standardised features, as one linear layer.

    With the scaler's mean mu and scale s, and the classifier's (W, b) on
    (h - mu) / s, the layer computes logits = W' h + b' with W' = W / s and
    b' = b - W' mu, so softmax(layer(h)) equals ``predict_proba``.
    ``regularisation`` is scikit-learn's C (inverse L2 strength).
    """
    x, y = features.double().cpu().numpy(), labels.cpu().numpy()
    scaler = StandardScaler().fit(x)
    # One BLAS thread: the problem is tiny, and threads waiting on a busy CPU make it ten times slower.
    with threadpool_limits(1):
        classifier = LogisticRegression(C=regularisation, max_iter=max_iter).fit(scaler.transform(x), y)
    if list(classifier.classes_) != list(range(n_classes)):
        raise ValueError(f"the probe needs every class 0..{n_classes - 1} in its training labels, got {classifier.classes_}")
    weight = classifier.coef_ / scaler.scale_
    layer = nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(classifier.intercept_ - weight @ scaler.mean_))
    return layer.eval()
