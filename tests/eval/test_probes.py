"""Probes on frozen embeddings, against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from lib.eval.probes import logistic_probe, ridge_probe


def test_ridge_probe_picks_the_penalty_with_the_best_validation_r2():
    rng = np.random.default_rng(0)
    w = rng.normal(size=8)
    fit_x, val_x = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))
    fit_y, val_y = fit_x @ w + rng.normal(size=40), val_x @ w + rng.normal(size=30)
    alphas = [1e-3, 1.0, 1e4]
    model, alpha, score = ridge_probe(fit_x, fit_y, val_x, val_y, alphas)
    scores = [r2_score(val_y, Ridge(alpha=a).fit(fit_x, fit_y).predict(val_x)) for a in alphas]
    assert alpha == alphas[int(np.argmax(scores))] and score == pytest.approx(max(scores))
    np.testing.assert_allclose(model.coef_, Ridge(alpha=alpha).fit(fit_x, fit_y).coef_)
    assert alpha != 1e4  # a penalty that flattens the signal loses on validation data
    with pytest.raises(ValueError, match="at least one penalty"):
        ridge_probe(fit_x, fit_y, val_x, val_y, [])


def test_logistic_probe_layer_reproduces_scikit_learns_probabilities():
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    features = rng.normal(size=(200, 6)) * [1, 5, 0.2, 1, 3, 1] + labels[:, None] * 0.3 + 2.0
    probe = logistic_probe(torch.from_numpy(features).float(), torch.from_numpy(labels), 10, 0.5, 500)
    standardised = StandardScaler().fit_transform(features)
    expected = LogisticRegression(C=0.5, max_iter=500).fit(standardised, labels).predict_proba(standardised)
    with torch.no_grad():
        probabilities = probe(torch.from_numpy(features).float()).softmax(dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert not probe.training


def test_logistic_probe_needs_every_class():
    features, labels = torch.randn(20, 3), torch.arange(20) % 3
    with pytest.raises(ValueError, match="every class 0..3"):
        logistic_probe(features, labels, 4)
