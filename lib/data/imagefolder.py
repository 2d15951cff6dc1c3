"""Importer for the standard deep-metric-learning retrieval benchmarks.

CUB-200-2011, Cars196 and Stanford Online Products (SOP) arrive in one of two
layouts, both read by :func:`load_image_folder`:

* **class folders** -- one sub-folder of images per class, either directly in
  the root or in ``root/images`` (CUB-200-2011:
  ``images/001.Black_footed_Albatross/*.jpg``). Classes are ordered by folder
  name, numbers compared as numbers, and the conventional unseen-class split
  trains on the first half of them: 100 of CUB's 200, 98 of Cars196's 196.
* **SOP list files** -- ``Ebay_train.txt`` and ``Ebay_test.txt`` in the root,
  each with the header ``image_id class_id super_class_id path`` and paths
  relative to the root. The two files are the split.

These datasets cannot be fetched without a network, so the importer only
reads what the user has put on disk, and every error names the file or folder
at fault.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFolderError",
    "RetrievalDataset",
    "RetrievalImages",
    "SOP_LIST_FILES",
    "load_image_folder",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SOP_LIST_FILES = ("Ebay_train.txt", "Ebay_test.txt")
_SOP_HEADER = ["image_id", "class_id", "super_class_id", "path"]


class ImageFolderError(Exception):
    """An image-folder dataset is missing, malformed, or holds an unreadable image."""


@dataclass(frozen=True, eq=False)
class RetrievalDataset:
    """Images, their classes, and the unseen-class split of a retrieval benchmark.

    ``labels[i]`` indexes ``class_names`` and belongs to ``paths[i]``. The
    training classes come first, so the labels of ``train_idx`` are
    ``0 .. n_train_classes - 1`` and the test classes follow.
    """

    root: Path
    paths: tuple[Path, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    train_idx: np.ndarray
    test_idx: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_train_classes(self) -> int:
        """How many classes the training split holds."""
        return len(np.unique(self.labels[self.train_idx]))


def _natural_key(name: str) -> list[int | str]:
    """Sort key that compares digit runs as numbers, so class ``10`` follows ``9``.

    CUB's zero-padded names sort the same either way, but Cars196 folders are
    often named ``1`` .. ``196``, and plain string order would put the wrong
    classes into the training half.
    """
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _is_image(path: Path) -> bool:
    visible = not path.name.startswith(".")
    return visible and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _read_class_folders(
    class_root: Path,
) -> tuple[list[Path], list[int], list[str]]:
    folders = sorted(
        (p for p in class_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: _natural_key(p.name),
    )
    if not folders:
        raise ImageFolderError(f"no class folders in {class_root}")
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        images = sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)
        if not images:
            raise ImageFolderError(f"class folder {folder} holds no images")
        paths.extend(images)
        labels.extend([label] * len(images))
    return paths, labels, [folder.name for folder in folders]


def _read_sop_list(list_file: Path) -> list[tuple[int, str]]:
    """``(class_id, relative path)`` for every row of one SOP list file."""
    if not list_file.is_file():
        raise ImageFolderError(f"SOP list file {list_file} is missing")
    lines = list_file.read_text().splitlines()
    if not lines or lines[0].split() != _SOP_HEADER:
        raise ImageFolderError(
            f"{list_file}: the first line must be the header {' '.join(_SOP_HEADER)!r}"
        )
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != len(_SOP_HEADER) or not fields[1].isdigit():
            raise ImageFolderError(
                f"{list_file}, line {number}: expected 'image_id class_id "
                f"super_class_id path', found {line!r}"
            )
        rows.append((int(fields[1]), fields[3]))
    if not rows:
        raise ImageFolderError(f"{list_file} lists no images")
    return rows


def _verify_image(path: Path) -> None:
    try:
        with Image.open(path) as image:
            image.verify()  # the file's structure (chunks, checksums of PNG)
        # verify() does not read a JPEG's compressed data, so a file cut short passes it: decode the pixels too
        # (PIL raises "image file is truncated"); verify_images=False skips both for a trusted dataset.
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, UnidentifiedImageError) as error:
        raise ImageFolderError(f"cannot read image {path}: {error}") from error


def load_image_folder(
    root: str | os.PathLike[str],
    layout: Literal["auto", "folders", "sop"] = "auto",
    n_train_classes: int | None = None,
    verify_images: bool = True,
) -> RetrievalDataset:
    """Read a retrieval benchmark from ``root`` with its unseen-class split.

    ``layout="auto"`` reads SOP list files when ``Ebay_train.txt`` is in the
    root and class folders otherwise. For class folders, ``n_train_classes``
    (default: half the classes, the CUB and Cars196 convention) leading
    classes form the training split; SOP takes its split from the list files.
    With ``verify_images`` every image is opened once, so a corrupt file is
    reported now rather than halfway through training.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageFolderError(f"dataset root {root} does not exist or is not a folder")
    if layout == "auto":
        layout = "sop" if (root / SOP_LIST_FILES[0]).is_file() else "folders"

    if layout == "folders":
        class_root = root / "images" if (root / "images").is_dir() else root
        paths, labels, class_names = _read_class_folders(class_root)
        n_classes = len(class_names)
        n_train = n_classes // 2 if n_train_classes is None else n_train_classes
        if not 0 < n_train < n_classes:
            raise ImageFolderError(
                f"{class_root}: cannot train on {n_train} of {n_classes} classes; "
                "both splits need at least one class"
            )
        label_array = np.asarray(labels, dtype=np.int64)
        is_train = label_array < n_train
    elif layout == "sop":
        if n_train_classes is not None:
            raise ImageFolderError(
                "SOP's split comes from its list files; leave n_train_classes unset"
            )
        train_rows, test_rows = (_read_sop_list(root / name) for name in SOP_LIST_FILES)
        train_ids = sorted({class_id for class_id, _ in train_rows})
        test_ids = sorted({class_id for class_id, _ in test_rows})
        shared = set(train_ids) & set(test_ids)
        if shared:
            raise ImageFolderError(
                f"{root}: classes {sorted(shared)[:5]} appear in both "
                f"{SOP_LIST_FILES[0]} and {SOP_LIST_FILES[1]}"
            )
        # Training classes first, as in the class-folder layout.
        index_of = {class_id: i for i, class_id in enumerate(train_ids + test_ids)}
        rows = train_rows + test_rows
        paths = [root / rel for _, rel in rows]
        label_array = np.asarray([index_of[class_id] for class_id, _ in rows], dtype=np.int64)
        class_names = [str(class_id) for class_id in train_ids + test_ids]
        is_train = np.arange(len(rows)) < len(train_rows)
    else:
        raise ValueError(f"unknown layout {layout!r}; use 'auto', 'folders' or 'sop'")

    if verify_images:
        for path in paths:
            _verify_image(path)
    return RetrievalDataset(
        root=root,
        paths=tuple(paths),
        labels=label_array,
        class_names=tuple(class_names),
        train_idx=np.flatnonzero(is_train),
        test_idx=np.flatnonzero(~is_train),
    )


class RetrievalImages(Dataset):
    """Images of a :class:`RetrievalDataset` as float RGB tensors of one size.

    Each item is ``(image, label)`` with ``image`` of shape ``(3, H, W)``,
    scaled to [0, 1] and, with ``normalize=(mean, std)`` (per-channel
    sequences), standardised. ``indices`` picks the samples, typically
    ``dataset.train_idx`` or ``dataset.test_idx``; ``transform`` runs last.
    """

    def __init__(
        self,
        dataset: RetrievalDataset,
        indices: Sequence[int] | np.ndarray | None = None,
        size: int | tuple[int, int] = 224,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.dataset = dataset
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
        self.height, self.width = (size, size) if isinstance(size, int) else size
        if normalize is None:
            self.mean = self.std = None
        else:
            self.mean = torch.tensor(normalize[0], dtype=torch.float32).view(-1, 1, 1)
            self.std = torch.tensor(normalize[1], dtype=torch.float32).view(-1, 1, 1)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = int(self.indices[index])
        path = self.dataset.paths[sample]
        try:
            with Image.open(path) as image:
                # Some CUB images are greyscale and some SOP ones palette-based;
                # converting makes every tensor three-channel.
                rgb = image.convert("RGB").resize(
                    (self.width, self.height), Image.Resampling.BILINEAR
                )
        except (OSError, SyntaxError, UnidentifiedImageError) as error:
            raise ImageFolderError(f"cannot read image {path}: {error}") from error
        tensor = torch.from_numpy(np.array(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if self.mean is not None:
            tensor = (tensor - self.mean) / self.std
        if self.transform is not None:
            tensor = self.transform(tensor)
        return tensor, int(self.dataset.labels[sample])
