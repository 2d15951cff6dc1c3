"""MNIST-5k loads from the fetched copy and splits by unseen classes."""

import numpy as np
import pytest
import torch

from lib.data.mnist import (
    MNIST5K_FILE,
    MNIST_MEAN_STD,
    MnistDataset,
    load_mnist5k,
    unseen_class_split,
    validation_split,
)
from lib.data.raw import RAW_FILES, fetch


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    fetch(data_dir)
    return load_mnist5k(data_dir)


def test_shapes_dtypes_and_classes(mnist):
    images, labels = mnist
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int64
    classes, counts = np.unique(labels, return_counts=True)
    assert classes.tolist() == list(range(10))
    assert np.all(np.abs(counts - 500) <= 50)
    assert images.max() == 255 and images.min() == 0


def test_loader_reads_a_file_the_manifest_provides():
    assert MNIST5K_FILE in {entry.dest for entry in RAW_FILES}


def test_missing_file_names_the_fetch_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m lib.data.raw fetch"):
        load_mnist5k(tmp_path)


def test_unseen_class_split_is_disjoint(mnist):
    _, labels = mnist
    train_idx, test_idx = unseen_class_split(labels)
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert len(train_idx) + len(test_idx) == len(labels)
    assert set(labels[train_idx].tolist()) == {0, 1, 2, 3, 4}
    assert set(labels[test_idx].tolist()) == {5, 6, 7, 8, 9}


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [((0, 1, 2), (2, 3), "overlap"), ((0, 1), (11,), "do not occur"), ((), (5,), "at least one")],
)
def test_unseen_class_split_rejects_bad_classes(mnist, train, test, message):
    with pytest.raises(ValueError, match=message):
        unseen_class_split(mnist[1], train, test)


def test_validation_split_stays_within_train_classes(mnist):
    _, labels = mnist
    train_idx, _ = unseen_class_split(labels)
    fit_idx, val_idx = validation_split(labels, train_idx, fraction=0.2, seed=3)
    assert np.intersect1d(fit_idx, val_idx).size == 0
    assert np.array_equal(np.union1d(fit_idx, val_idx), np.sort(train_idx))
    assert set(labels[val_idx].tolist()) == {0, 1, 2, 3, 4}
    _, val_counts = np.unique(labels[val_idx], return_counts=True)
    assert np.all(val_counts == 100)  # stratified: 20% of each class's 500
    again, _ = validation_split(labels, train_idx, fraction=0.2, seed=3)
    assert np.array_equal(again, fit_idx)
    other, _ = validation_split(labels, train_idx, fraction=0.2, seed=4)
    assert not np.array_equal(other, fit_idx)


def test_validation_split_rejects_bad_fraction(mnist):
    with pytest.raises(ValueError, match="fraction"):
        validation_split(mnist[1], np.arange(10), fraction=1.0)


def test_dataset_returns_scaled_tensors(mnist):
    images, labels = mnist
    dataset = MnistDataset(images[:8], labels[:8])
    image, label = dataset[3]
    assert len(dataset) == 8
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert torch.allclose(image[0], torch.from_numpy(images[3] / 255.0).float())
    assert label == labels[3]


def test_dataset_normalises_and_transforms(mnist):
    images, labels = mnist
    mean, std = MNIST_MEAN_STD
    plain = MnistDataset(images[:4], labels[:4])
    dataset = MnistDataset(images[:4], labels[:4], normalize=MNIST_MEAN_STD, transform=torch.neg)
    assert torch.allclose(dataset[0][0], -(plain[0][0] - mean) / std)
