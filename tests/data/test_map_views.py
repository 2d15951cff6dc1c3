"""Multi-crop views of maps: counts and shapes, seeds, geometry against exact resamplings, validation."""

import math

import pytest
import torch

from lib.data.map_views import crop_views, multi_crop
from lib.data.multicrop import OSM_BACKGROUND, MultiCropConfig


def _maps(n=4, side=32, seed=0):
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_views_come_global_first_with_their_sizes_and_stay_in_the_unit_range():
    config = MultiCropConfig(n_global=2, n_local=5, global_size=24, local_size=12, rotation=45, zoom=(0.7, 1.5))
    views = multi_crop(_maps(), config, torch.Generator().manual_seed(1))
    assert [tuple(v.shape) for v in views] == [(4, 3, 24, 24)] * 2 + [(4, 3, 12, 12)] * 5
    assert all(v.min() >= 0 and v.max() <= 1 and v.dtype == torch.float32 for v in views)
    # views of one image differ from each other, and views of different images too
    assert not torch.allclose(views[0], views[1]) and not torch.allclose(views[0][0], views[0][1])
    assert len(multi_crop(_maps(), MultiCropConfig(n_local=0, global_size=32), None)) == 2


def test_the_same_generator_state_gives_the_same_views():
    config = MultiCropConfig(n_local=3, global_size=32, local_size=16, rotation=30, zoom=(0.8, 1.2))
    first = multi_crop(_maps(), config, torch.Generator().manual_seed(7))
    again = multi_crop(_maps(), config, torch.Generator().manual_seed(7))
    other = multi_crop(_maps(), config, torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.allclose(a, b) for a, b in zip(first, other, strict=True))


def test_full_unrotated_view_is_the_image_and_a_quarter_crop_is_its_pixels():
    maps = _maps(n=3, side=16)
    identity = MultiCropConfig(n_local=0, global_size=16, global_scale=(1.0, 1.0), rotation=0)
    for view in multi_crop(maps, identity, torch.Generator().manual_seed(0)):
        torch.testing.assert_close(view, maps, atol=1e-5, rtol=0)
    # side 1/2 centred on the top-right quadrant (x = 1/2, y = -1/2), 8 px: output pixel centres land on input ones
    zero = torch.zeros(3, 1)
    centre = torch.tensor([0.5, -0.5]).expand(3, 1, 2)
    quadrant = crop_views(maps, zero, zero + 0.5, centre, 8, OSM_BACKGROUND)[0]
    torch.testing.assert_close(quadrant, maps[:, :, :8, 8:], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("scale", "zoom", "rotation"), [(1.0, 1.0, 0.0), (0.25, 1.0, 30.0), (0.36, 2.0, 90.0)])
def test_scale_zoom_and_rotation_set_each_views_field_and_angle(scale, zoom, rotation):
    # A ramp image: band 0 = (x + 1) / 2, band 1 = (y + 1) / 2 at pixel centres. Bilinear sampling keeps a
    # linear function exact, so near a view's centre band 0 changes by f cos(t) / S per column and by
    # -f sin(t) / S per row, f = sqrt(scale) / zoom the side fraction, t the angle, S the view's size.
    side = 32
    ramp = (torch.arange(side) + 0.5) / side
    maps = torch.stack([ramp.expand(side, side), ramp[:, None].expand(side, side), torch.full((side, side), 0.5)])
    config = MultiCropConfig(n_global=8, n_local=0, global_size=16, global_scale=(scale, scale), zoom=(zoom, zoom),
                             rotation=rotation)
    views = torch.cat(multi_crop(maps.expand(4, 3, side, side), config, torch.Generator().manual_seed(5)))
    per_column = views[:, 0, 8, 8] - views[:, 0, 8, 7]
    per_row = views[:, 0, 8, 8] - views[:, 0, 7, 8]
    f = math.sqrt(scale) / zoom
    torch.testing.assert_close(per_column.hypot(per_row), torch.full((32,), f / 16), atol=1e-5, rtol=0)
    angle = torch.rad2deg(torch.atan2(-per_row, per_column))
    assert angle.abs().max() <= rotation + 1e-3
    if rotation:
        assert angle.max() - angle.min() > rotation  # the angles spread over the range


def test_quarter_turns_match_rot90():
    maps = _maps(n=2, side=16)
    angles = torch.tensor([[math.pi / 2, -math.pi / 2, math.pi]]).expand(2, 3)
    views = crop_views(maps, angles, torch.ones(2, 3), torch.zeros(2, 3, 2), 16, OSM_BACKGROUND)
    turned = {k: maps.rot90(k, dims=(2, 3)) for k in (1, 2, 3)}
    matches = [[k for k, t in turned.items() if torch.allclose(view, t, atol=1e-5)] for view in views]
    assert matches[0] and matches[1] and matches[2] == [2]
    assert matches[0] != matches[1]  # +90 and -90 degrees turn opposite ways


def test_rotation_keeps_a_constant_map_constant_and_fills_outside_with_the_background():
    background = torch.tensor(OSM_BACKGROUND)[None, :, None, None]
    plain = background.expand(5, 3, 32, 32).clone()
    config = MultiCropConfig(n_local=4, global_size=32, local_size=16, rotation=180, zoom=(0.5, 1.0))
    for view in multi_crop(plain, config, torch.Generator().manual_seed(2)):
        torch.testing.assert_close(view, background.expand_as(view), atol=1e-6, rtol=0)

    grey = torch.full((5, 3, 32, 32), 0.2)
    rotated = multi_crop(grey, config.model_copy(update={"zoom": (1.0, 1.0)}), torch.Generator().manual_seed(2))
    for view in rotated:  # the centre of every view lies inside the map
        c = view.shape[-1] // 2
        torch.testing.assert_close(view[..., c - 1:c + 1, c - 1:c + 1], torch.full_like(view[..., :2, :2], 0.2))
    # zoomed out four times: the corners of every view lie outside the map, in the background colour
    far = multi_crop(grey, config.model_copy(update={"zoom": (0.25, 0.25)}), torch.Generator().manual_seed(2))
    for view in far:
        torch.testing.assert_close(view[..., 0, 0], background[..., 0, 0].expand(5, 3), atol=1e-6, rtol=0)
        assert (view - 0.2).abs().amax(dim=1).le(1e-6).any()  # the map itself shows too


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_local", 11), ("n_global", 0), ("global_scale", (0.0, 1.0)), ("local_scale", (0.1, 1.5)),
     ("local_scale", (0.4, 0.1)), ("zoom", (0.0, 1.0)), ("rotation", 181.0), ("background", (1.2, 0, 0))],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MultiCropConfig(**{field: value})


def test_call_errors_name_the_size_or_the_shape():
    maps = _maps(side=32)
    with pytest.raises(ValueError, match="global_size=64"):
        multi_crop(maps, MultiCropConfig(global_size=64, local_size=16))
    with pytest.raises(ValueError, match="local_size=48"):
        multi_crop(maps, MultiCropConfig(global_size=32, local_size=48))
    with pytest.raises(ValueError, match="square RGB"):
        multi_crop(maps[:, :, :, :16], MultiCropConfig(global_size=16, local_size=8))
    with pytest.raises(ValueError, match="dtype"):
        multi_crop((maps * 255).to(torch.uint8), MultiCropConfig(global_size=32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_views_on_cuda_match_the_cpu():
    config = MultiCropConfig(n_local=2, global_size=32, local_size=16, rotation=90)
    cpu = multi_crop(_maps(), config, torch.Generator().manual_seed(3))
    cuda = multi_crop(_maps().cuda(), config, torch.Generator().manual_seed(3))
    assert all(v.is_cuda for v in cuda)
    for a, b in zip(cpu, cuda, strict=True):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=0)


def test_the_background_is_the_map_style_s_background():
    from lib.data.map_style import STYLES

    assert STYLES[0].name == "background"
    assert OSM_BACKGROUND == tuple(c / 255 for c in STYLES[0].rgb)
