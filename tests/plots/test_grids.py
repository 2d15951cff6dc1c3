"""Image grids and mosaics (lib.plots.grids): layout, titles, the mosaic against a loop, colour stretches."""

import numpy as np
import pytest
import torch

from lib.io import save_figure
from lib.plots.grids import image_grid, image_mosaic, mosaic, rgb_composite


def test_the_grid_has_a_panel_per_image_and_hides_the_rest():
    images = np.random.default_rng(0).random((7, 5, 5))
    fig = image_grid(images, titles=[f"digit {i}" for i in range(7)], ncols=4)
    assert len(fig.axes) == 8
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == 7 and [ax.get_title() for ax in shown] == [f"digit {i}" for i in range(7)]
    np.testing.assert_array_equal(shown[3].get_images()[0].get_array(), images[3])
    assert shown[0].get_images()[0].get_cmap().name == "gray" and not any(ax.axison for ax in fig.axes)


def test_mosaic_against_a_loop():
    tiles = np.random.default_rng(1).integers(0, 255, (6, 3, 4, 3), dtype=np.uint8)
    out = mosaic(tiles, 2, 3)
    assert out.shape == (6, 12, 3)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, 3)
        np.testing.assert_array_equal(out[r * 3 : (r + 1) * 3, c * 4 : (c + 1) * 4], tile)


def test_image_mosaic_shows_whole_rows_without_gaps():
    images = np.random.default_rng(2).integers(0, 255, (10, 4, 4, 3), dtype=np.uint8)
    fig = image_mosaic(images, ncols=4, title="tiles")
    (ax,) = fig.axes
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), mosaic(images[:8], 2, 4))
    assert ax.get_title() == "tiles"


def test_rgb_composite_picks_the_named_bands_and_stretches_them():
    rng = np.random.default_rng(3)
    bands = rng.random((2, 4, 6, 6)) * np.array([1, 10, 100, 1000])[None, :, None, None]
    rgb = rgb_composite(torch.from_numpy(bands), ["nir", "blue", "green", "red"])
    assert rgb.shape == (2, 6, 6, 3) and rgb.min() == 0 and rgb.max() == 1
    # Each channel is its band stretched between its 2nd and 98th percentile over all tiles.
    red = bands[:, 3]
    low, high = np.percentile(red, [2, 98])
    np.testing.assert_allclose(rgb[..., 0], np.clip((red - low) / (high - low), 0, 1))
    grey = rgb_composite(bands[:, :1], ["panchromatic"])
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_the_same_images_give_the_same_png(tmp_path):
    images = np.random.default_rng(4).random((4, 6, 6))
    for name in ("first.png", "again.png"):
        save_figure(image_grid(images, ncols=2), tmp_path / name)
    assert (tmp_path / "first.png").read_bytes() == (tmp_path / "again.png").read_bytes()


def test_mosaic_refuses_tiles_that_do_not_fill_the_grid():
    assert mosaic(np.zeros((4, 2, 2)), 2, 2).shape == (4, 4)
    with pytest.raises(ValueError):
        mosaic(np.zeros((3, 2, 2)), 2, 2)
