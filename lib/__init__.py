"""Explainable contrastive representation learning on images and places.

The package behind the compendium's notebooks: data builders and importers
(:mod:`lib.data`), models (:mod:`lib.models`), losses (:mod:`lib.losses`),
explainers (:mod:`lib.explain`), metrics, the training loop and the run-time
policy (device, seeds, manifests).
"""

__version__ = "0.1.0"
