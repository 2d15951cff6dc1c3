"""Evaluation shared by the studies: encoding a dataset, probes, retrieval and
regression metrics, the ordering of a latent space, confidence intervals.

Metrics take arrays and return dicts of floats (as pytorch-metric-learning's
accuracy calculator does); each is checked against scikit-learn, PML or a
naive loop in ``tests/eval/``.
"""
