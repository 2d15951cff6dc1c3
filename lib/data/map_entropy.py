"""Class entropy of map masks, and a filter that drops uninformative maps.

A map that is all sea or all forest tells little about a place. With p_k the
share of a map's pixels in class k (of K classes), its class entropy is the
Shannon entropy in nats

    H = - sum_k p_k log p_k,    0 log 0 = 0,    0 <= H <= log K,

0 for a single-class map and log K for a map split evenly over all K classes.
:func:`entropy_filter` keeps the maps with H >= threshold.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["class_entropy", "entropy_filter"]


def class_entropy(mask: np.ndarray, n_classes: int) -> np.ndarray:
    """Shannon entropy (natural log) of each map's pixel-class histogram.

    Args:
        mask: (N, H, W) integer class codes in 0 .. n_classes - 1 (e.g. the
            ``mask`` variable of a map dataset).
        n_classes: K, the number of classes.
    Returns:
        (N,) float64 entropies in [0, log K].
    """
    mask = np.asarray(mask)
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    if mask.ndim != 3:
        raise ValueError(f"mask must be (N, H, W), got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer class codes, got dtype {mask.dtype}")
    n = mask.shape[0]
    codes = mask.reshape(n, -1).astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= n_classes):
        raise ValueError(f"mask codes must lie in 0..{n_classes - 1}, got {codes.min()}..{codes.max()}")
    # One bincount for all maps: map i's class k goes to bin i * K + k.
    counts = np.bincount((codes + n_classes * np.arange(n)[:, None]).ravel(), minlength=n * n_classes)
    p = counts.reshape(n, n_classes) / codes.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=1)


def entropy_filter(mask: np.ndarray, n_classes: int, threshold: float) -> np.ndarray:
    """Which maps to keep: (N,) booleans, True where the class entropy is >= ``threshold`` (nats)."""
    upper = math.log(n_classes) if n_classes >= 1 else 0.0
    if not 0 <= threshold <= upper:
        raise ValueError(
            f"threshold must lie in [0, log K] = [0, {upper:.4f}] for K={n_classes} classes, got {threshold}"
        )
    # A small tolerance: a map split evenly over K classes has H = log K up to rounding.
    return class_entropy(mask, n_classes) >= threshold - 1e-12
