"""Explainable contrastive representation learning on images and places.

The package behind the compendium's notebooks:

* the frame - :mod:`lib.stage` (runs a stage's notebook, records the run),
  :mod:`lib.params` (parameter models), :mod:`lib.runtime` (device, seeds),
  :mod:`lib.training` (one training loop), :mod:`lib.io` (atomic outputs);
* shared layers - :mod:`lib.data`, :mod:`lib.models`, :mod:`lib.losses`,
  :mod:`lib.explain`, :mod:`lib.eval`, :mod:`lib.plots`;
* one package per study in :mod:`lib.studies`, importing the frame and the
  shared layers, never another study.
"""

__version__ = "0.1.0"
