"""The map dataset (lib.data.map_dataset): one schema for OSM and land-cover maps, written atomically to
NetCDF and read back by place, with their labels in one table."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from lib.data.landcover_maps import render_landcover_maps
from lib.data.map_dataset import build_map_dataset, label_table, load_map_datasets, map_class_at_centre
from lib.data.map_render import render_maps, sample_coordinates
from lib.data.map_style import MAP_CLASSES, STYLES

STYLE_RGB = {style.name: style.rgb for style in STYLES}
CELL_M, WEST, NORTH = 10.0, 400_000.0, 6_700_000.0


@pytest.fixture
def landcover() -> xr.DataArray:
    """A 30 x 30 raster of 10 m cells: dense residential (code 0) west of x = 150 m, water (8) east of it."""
    codes = np.zeros((30, 30), dtype=np.uint8)
    codes[:, 15:] = 8
    raster = xr.DataArray(
        codes, dims=("y", "x"),
        coords={"y": NORTH - (np.arange(30) + 0.5) * CELL_M, "x": WEST + (np.arange(30) + 0.5) * CELL_M},
        attrs={"flag_values": np.arange(9, dtype=np.uint8),
               "flag_meanings": "dense_residential medium_residential sparse_residential industrial_commercial "
                                "roads green_urban forest agriculture water"},
    )
    return raster.rio.write_crs("EPSG:3067")


def test_map_dataset_round_trips_with_crs(layers, tmp_path):
    coords = sample_coordinates(layers, 5, seed=2, margin_m=64)
    maps = render_maps(layers, coords, size_px=32, metres_per_px=3.0)
    out = tmp_path / "maps" / "helsinki.nc"
    ds = build_map_dataset(maps, out_path=out)
    assert ds["image"].dims == ("tile", "y", "x", "band")
    assert ds["fractions"].dims == ("tile", "map_class")
    assert [p.name for p in out.parent.iterdir()] == ["helsinki.nc"]

    with xr.open_dataset(out, engine="h5netcdf", decode_coords="all") as back:
        back = back.load()
    assert back.rio.crs.to_string() == "EPSG:3067"
    np.testing.assert_array_equal(back["image"].values, maps.images)
    np.testing.assert_array_equal(back["mask"].values, maps.masks)
    np.testing.assert_allclose(back["fractions"].values, maps.fractions, rtol=1e-6)
    np.testing.assert_allclose(back["building_density"].values, maps.building_density, rtol=1e-6)
    np.testing.assert_allclose(np.column_stack([back["lon"], back["lat"]]), coords, atol=1e-9)
    np.testing.assert_allclose(back["easting"].values, maps.easting)
    assert back["map_class"].values.tolist() == list(MAP_CLASSES)
    assert back["x"].values[0] == pytest.approx(-46.5) and back["y"].values[0] == pytest.approx(46.5)
    assert back.attrs["metres_per_px"] == 3.0 and back.attrs["source"] == "openstreetmap"


def test_landcover_dataset_round_trip(landcover, tmp_path):
    coords = [(WEST + 50, NORTH - 50), (WEST + 250, NORTH - 250)]
    maps = render_landcover_maps(landcover, coords, size_px=8, metres_per_px=CELL_M)
    out = tmp_path / "landcover_maps.nc"
    build_map_dataset(maps, out_path=out)
    with xr.open_dataset(out, engine="h5netcdf", decode_coords="all") as back:
        back = back.load()
    assert back.rio.crs.to_string() == "EPSG:3067" and back.attrs["source"] == "landcover"
    np.testing.assert_array_equal(back["image"].values, maps.images)
    assert (back["image"].values[0] == STYLE_RGB["building"]).all()
    assert (back["image"].values[1] == STYLE_RGB["water"]).all()
    np.testing.assert_allclose(back["easting"].values, [WEST + 50, WEST + 250])


def test_centre_class_is_the_pixel_south_east_of_the_centre(landcover):
    # A 4 px map at 10 m centred on the border x = 150 m: the centre pixel (2, 2) lies east of it, on water.
    maps = render_landcover_maps(landcover, [(WEST + 150, NORTH - 100), (WEST + 140, NORTH - 100)], size_px=4,
                                 metres_per_px=CELL_M)
    assert map_class_at_centre(maps).tolist() == [MAP_CLASSES.index("water"), MAP_CLASSES.index("buildings")]
    np.testing.assert_array_equal(build_map_dataset(maps)["map_class_at_centre"].values, map_class_at_centre(maps))


def test_places_load_back_by_name_and_flatten_into_one_label_table(landcover, tmp_path):
    west = render_landcover_maps(landcover, [(WEST + 50, NORTH - 50), (WEST + 60, NORTH - 200)], size_px=4,
                                 metres_per_px=CELL_M)
    east = render_landcover_maps(landcover, [(WEST + 250, NORTH - 250)], size_px=4, metres_per_px=CELL_M)
    price = (np.array([1.5, 2.5], np.float32), {"units": "EUR m-2"})
    build_map_dataset(west, tmp_path / "west.nc", labels={"land_price": price})
    build_map_dataset(east, tmp_path / "east.nc", labels={"land_price": np.array([0.5], np.float32)})
    loaded = load_map_datasets(tmp_path)
    assert list(loaded) == ["east", "west"] and list(load_map_datasets(tmp_path, ["west"])) == ["west"]
    assert loaded["west"]["land_price"].attrs["units"] == "EUR m-2"
    table = label_table(loaded)
    assert table["city"].tolist() == ["east", "west", "west"] and table["tile"].tolist() == [0, 0, 1]
    assert table["land_price"].tolist() == [0.5, 1.5, 2.5]
    assert table["map_class_at_centre"].tolist() == ["water", "buildings", "buildings"]
    assert {f"fraction_{c}" for c in MAP_CLASSES} <= set(table.columns) and "image" not in table
    np.testing.assert_allclose(table.filter(like="fraction_").sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(table["easting"], [WEST + 250, WEST + 50, WEST + 60])
