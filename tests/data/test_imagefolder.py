"""The retrieval importer reads class folders and SOP list files from tiny fixtures."""

import numpy as np
import pytest
import torch
from PIL import Image

from lib.data.imagefolder import (
    ImageFolderError,
    RetrievalImages,
    load_image_folder,
)


def _write_image(path, colour, size=(12, 9), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


@pytest.fixture
def cub_like(tmp_path):
    """A CUB-style root: ``images/<nnn.Name>/*`` with four classes, two images each."""
    root = tmp_path / "CUB_200_2011"
    for number, name in enumerate(["Albatross", "Auklet", "Blackbird", "Bunting"], start=1):
        folder = root / "images" / f"{number:03d}.{name}"
        _write_image(folder / "a.jpg", (number * 40, 0, 0))
        _write_image(folder / "b.png", number * 40, mode="L")
    (root / "images.txt").write_text("not a class folder\n")
    return root


@pytest.fixture
def sop_like(tmp_path):
    """An SOP-style root with two training and two test classes."""
    root = tmp_path / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path\n"
    train = header + "1 1 1 bicycle_final/1_0.JPG\n2 1 1 bicycle_final/1_1.JPG\n"
    train += "3 2 1 bicycle_final/2_0.JPG\n"
    test = header + "1 3 2 chair_final/3_0.JPG\n2 4 2 chair_final/4_0.JPG\n"
    for line in (train + test).splitlines():
        if not line.startswith("image_id"):
            _write_image(root / line.split()[3], (10, 20, 30), mode="RGB")
    (root / "Ebay_train.txt").write_text(train)
    (root / "Ebay_test.txt").write_text(test)
    return root


def test_class_folders_load_with_first_half_split(cub_like):
    dataset = load_image_folder(cub_like)
    assert dataset.class_names == ("001.Albatross", "002.Auklet", "003.Blackbird", "004.Bunting")
    assert len(dataset) == 8
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    folders = [path.parent.name for path in dataset.paths]
    assert folders == [dataset.class_names[label] for label in dataset.labels]
    assert set(dataset.labels[dataset.train_idx].tolist()) == {0, 1}
    assert set(dataset.labels[dataset.test_idx].tolist()) == {2, 3}
    assert dataset.n_train_classes == 2


def test_class_folders_sort_numbers_as_numbers(tmp_path):
    for name in ["10", "9", "1", "2"]:
        _write_image(tmp_path / name / "x.png", (1, 2, 3))
    dataset = load_image_folder(tmp_path, n_train_classes=3)
    assert dataset.class_names == ("1", "2", "9", "10")
    assert dataset.labels[dataset.test_idx].tolist() == [3]


def test_sop_list_files_define_the_split(sop_like):
    dataset = load_image_folder(sop_like)
    assert dataset.class_names == ("1", "2", "3", "4")
    assert dataset.labels.tolist() == [0, 0, 1, 2, 3]
    assert dataset.train_idx.tolist() == [0, 1, 2]
    assert dataset.test_idx.tolist() == [3, 4]
    assert dataset.paths[3] == sop_like / "chair_final" / "3_0.JPG"


def test_torch_dataset_resizes_to_rgb_tensors(cub_like):
    dataset = load_image_folder(cub_like)
    images = RetrievalImages(dataset, dataset.test_idx, size=(16, 20))
    assert len(images) == 4
    image, label = images[1]  # a greyscale PNG of class 2
    assert image.shape == (3, 16, 20) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert label == 2
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    normalised, _ = RetrievalImages(dataset, dataset.test_idx, 16, normalize=(mean, std))[1]
    square, _ = RetrievalImages(dataset, dataset.test_idx, 16)[1]
    assert torch.allclose(normalised, (square - 0.5) / 0.25)


def test_missing_root_is_named(tmp_path):
    with pytest.raises(ImageFolderError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")


def test_root_without_classes_is_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("no classes here")
    with pytest.raises(ImageFolderError, match="no class folders"):
        load_image_folder(tmp_path)


def test_empty_class_folder_is_named(cub_like):
    empty = cub_like / "images" / "005.Cardinal"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(ImageFolderError, match="005.Cardinal"):
        load_image_folder(cub_like)


def test_corrupt_image_is_named(cub_like):
    corrupt = cub_like / "images" / "002.Auklet" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8 definitely not a JPEG")
    with pytest.raises(ImageFolderError, match="broken.jpg"):
        load_image_folder(cub_like)
    # Without the up-front check the error still names the file when it is read.
    dataset = load_image_folder(cub_like, verify_images=False)
    index = int(np.flatnonzero([p == corrupt for p in dataset.paths])[0])
    with pytest.raises(ImageFolderError, match="broken.jpg"):
        RetrievalImages(dataset, size=8)[index]


def test_sop_missing_image_and_bad_line_are_named(sop_like):
    (sop_like / "chair_final" / "4_0.JPG").unlink()
    with pytest.raises(ImageFolderError, match="4_0.JPG"):
        load_image_folder(sop_like)
    with (sop_like / "Ebay_test.txt").open("a") as f:
        f.write("3 oops 2\n")
    with pytest.raises(ImageFolderError, match="Ebay_test.txt, line 4"):
        load_image_folder(sop_like)


def test_bad_split_size_is_refused(cub_like):
    with pytest.raises(ImageFolderError, match="4 of 4 classes"):
        load_image_folder(cub_like, n_train_classes=4)


def test_a_jpeg_cut_short_is_named(cub_like):
    """PIL's verify() passes a JPEG whose compressed data is cut short; the check decodes it and names it."""
    cut = cub_like / "images" / "002.Auklet" / "cut.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cut, quality=95)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with Image.open(cut) as image:
        image.verify()  # the gap this test closes: the structure check alone passes
    with pytest.raises(ImageFolderError, match=r"cut\.jpg.*truncated"):
        load_image_folder(cub_like)
