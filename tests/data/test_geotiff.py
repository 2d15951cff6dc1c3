"""The GeoTIFF importer: round trip of tiles and labels, and every error it promises."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine

from lib.data.geotiff import DatasetImportError, import_geotiff_tiles

N_TILES, SIZE, BANDS, PIXEL_M = 6, 16, 4, 2.0
ORIGIN_E, ORIGIN_N = 385_000.0, 6_672_000.0  # central Helsinki in EPSG:3067


def tile_id(i: int) -> str:
    # A leading zero checks that ids stay text through the CSV reader.
    return f"t{i:03d}" if i % 2 else f"{i:03d}"


def write_tile(path, pixels: np.ndarray, west: float, north: float, crs="EPSG:3067") -> None:
    """Write a (band, y, x) array as a GeoTIFF whose upper-left corner is (west, north)."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=pixels.shape[2],
        height=pixels.shape[1],
        count=pixels.shape[0],
        dtype=pixels.dtype,
        crs=crs,
        transform=Affine(PIXEL_M, 0.0, west, 0.0, -PIXEL_M, north),
    ) as dst:
        dst.write(pixels)


def tile_pixels(i: int, bands: int = BANDS, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (bands, size, size), dtype=np.uint8)


def tile_corner(i: int) -> tuple[float, float]:
    return ORIGIN_E + i * SIZE * PIXEL_M, ORIGIN_N - (i % 2) * SIZE * PIXEL_M


@pytest.fixture
def tiles(tmp_path):
    """Six 16x16 4-band EPSG:3067 tiles, a label CSV and the same labels as GeoParquet."""
    tile_dir = tmp_path / "tiles"
    tile_dir.mkdir()
    for i in range(N_TILES):
        write_tile(tile_dir / f"{tile_id(i)}.tif", tile_pixels(i), *tile_corner(i))
    labels = pd.DataFrame(
        {
            "tile_id": [tile_id(i) for i in reversed(range(N_TILES))],  # order differs from the files'
            "income": [float(10 * i) for i in reversed(range(N_TILES))],
            "district": [f"d{i % 3}" for i in reversed(range(N_TILES))],
        }
    )
    csv = tmp_path / "labels.csv"
    labels.to_csv(csv, index=False)
    centres = [tile_corner(i) for i in reversed(range(N_TILES))]
    geo = gpd.GeoDataFrame(
        labels, geometry=gpd.points_from_xy([c[0] for c in centres], [c[1] for c in centres]), crs="EPSG:3067"
    )
    parquet = tmp_path / "labels.parquet"
    geo.to_parquet(parquet)
    return tile_dir, csv, parquet


def sorted_ids() -> list[str]:
    return sorted(tile_id(i) for i in range(N_TILES))


def index_of(tid: str) -> int:
    return next(i for i in range(N_TILES) if tile_id(i) == tid)


def test_round_trip_values_coords_and_crs(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    out = tmp_path / "out" / "tiles.nc"
    ds = import_geotiff_tiles(tile_dir, csv, out_path=out)

    assert ds["image"].dims == ("tile", "band", "y", "x")
    assert ds["image"].shape == (N_TILES, BANDS, SIZE, SIZE)
    assert ds["image"].dtype == np.uint8
    assert ds["tile"].values.tolist() == sorted_ids()
    assert ds["band"].values.tolist() == [1, 2, 3, 4]
    for tid in sorted_ids():
        i = index_of(tid)
        np.testing.assert_array_equal(ds["image"].sel(tile=tid).values, tile_pixels(i))
        assert ds["income"].sel(tile=tid).item() == 10.0 * i
        assert ds["district"].sel(tile=tid).item() == f"d{i % 3}"
        west, north = tile_corner(i)
        half = SIZE * PIXEL_M / 2
        assert ds["easting"].sel(tile=tid).item() == west + half
        assert ds["northing"].sel(tile=tid).item() == north - half
        lon, lat = pyproj.Transformer.from_crs(3067, 4326, always_xy=True).transform(
            west + half, north - half
        )
        assert ds["lon"].sel(tile=tid).item() == pytest.approx(lon)
        assert ds["lat"].sel(tile=tid).item() == pytest.approx(lat)
    assert ds.rio.crs.to_string() == "EPSG:3067"

    with xr.open_dataset(out, engine="h5netcdf", decode_coords="all") as back:
        back = back.load()
    assert back.rio.crs.to_string() == "EPSG:3067"
    np.testing.assert_array_equal(back["image"].values, ds["image"].values)
    np.testing.assert_array_equal(back["income"].values, ds["income"].values)
    assert back["tile"].values.tolist() == sorted_ids()
    assert [p.name for p in out.parent.iterdir()] == ["tiles.nc"]


def test_geoparquet_labels_band_selection_and_uint8(tiles):
    tile_dir, _, parquet = tiles
    ds = import_geotiff_tiles(tile_dir, parquet, label_columns=["income"], bands=[3, 1], dtype="uint8")
    assert set(ds.data_vars) == {"image", "income"}  # geometry and unselected columns are not labels
    assert ds["band"].values.tolist() == [3, 1]
    np.testing.assert_array_equal(ds["image"].sel(tile="000").values, tile_pixels(0)[[2, 0]])


def test_uint16_tiles_keep_dtype_and_refuse_lossy_uint8(tmp_path):
    tile_dir = tmp_path / "tiles"
    tile_dir.mkdir()
    write_tile(tile_dir / "a.tif", np.full((1, 4, 4), 300, dtype=np.uint16), ORIGIN_E, ORIGIN_N)
    pd.DataFrame({"tile_id": ["a"], "y": [1.0]}).to_csv(tmp_path / "l.csv", index=False)
    assert import_geotiff_tiles(tile_dir, tmp_path / "l.csv")["image"].dtype == np.uint16
    with pytest.raises(DatasetImportError, match=r"a\.tif.*300"):
        import_geotiff_tiles(tile_dir, tmp_path / "l.csv", dtype="uint8")


def assert_fails_without_output(tile_dir, labels, tmp_path, pattern, **kwargs):
    """The import raises DatasetImportError matching ``pattern`` and writes nothing."""
    out_dir = tmp_path / "out"
    with pytest.raises(DatasetImportError, match=pattern):
        import_geotiff_tiles(tile_dir, labels, out_path=out_dir / "tiles.nc", **kwargs)
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_corrupt_file_is_named(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    (tile_dir / "t005.tif").write_bytes(np.random.default_rng(0).bytes(2048))
    assert_fails_without_output(tile_dir, csv, tmp_path, r"t005\.tif is not a readable GeoTIFF")


def test_truncated_file_is_named(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    path = tile_dir / "t003.tif"
    path.write_bytes(path.read_bytes()[:400])
    assert_fails_without_output(tile_dir, csv, tmp_path, r"t003\.tif")


def test_mixed_crs_names_both_files_and_crss(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    write_tile(tile_dir / "t005.tif", tile_pixels(5), 500_000.0, 6_000_000.0, crs="EPSG:32635")
    assert_fails_without_output(
        tile_dir, csv, tmp_path, r"mixed CRS.*000\.tif.*EPSG:3067.*t005\.tif.*EPSG:32635"
    )


def test_tiles_in_a_geographic_crs_are_refused_by_name(tiles, tmp_path):
    """Spatial blocks and gaps are measured in metres: tiles in degrees are named, not silently accepted."""
    tile_dir, csv, _ = tiles
    for i in range(N_TILES):
        write_tile(tile_dir / f"{tile_id(i)}.tif", tile_pixels(i), 24.9 + 0.001 * i, 60.2, crs="EPSG:4326")
    assert_fails_without_output(tile_dir, csv, tmp_path, r"000\.tif is in EPSG:4326, a CRS that is not projected")


def test_missing_label_names_the_tile(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    labels = pd.read_csv(csv, dtype={"tile_id": str})
    labels[labels.tile_id != "t001"].to_csv(csv, index=False)
    assert_fails_without_output(tile_dir, csv, tmp_path, r"no label.*'t001'")


def test_nan_label_names_tile_and_column(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    labels = pd.read_csv(csv, dtype={"tile_id": str})
    labels.loc[labels.tile_id == "004", "income"] = np.nan
    labels.to_csv(csv, index=False)
    assert_fails_without_output(tile_dir, csv, tmp_path, r"'income' of tile '004'")


def test_wrong_band_count_gives_expected_and_got(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    write_tile(tile_dir / "t003.tif", tile_pixels(3, bands=3), *tile_corner(3))
    assert_fails_without_output(tile_dir, csv, tmp_path, r"t003\.tif has 3 band\(s\), expected 4")


def test_requested_band_beyond_count(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    assert_fails_without_output(tile_dir, csv, tmp_path, r"000\.tif has 4 band\(s\).*bands \[5\]", bands=[5])


def test_different_tile_sizes(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    write_tile(tile_dir / "t005.tif", tile_pixels(5, size=8), *tile_corner(5))
    assert_fails_without_output(tile_dir, csv, tmp_path, r"different sizes.*t005\.tif is 8x8")


def test_empty_folder(tmp_path, tiles):
    _, csv, _ = tiles
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_fails_without_output(empty, csv, tmp_path, r"no GeoTIFF tiles.*empty")


def test_label_table_without_id_column(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    pd.read_csv(csv).rename(columns={"tile_id": "name"}).to_csv(csv, index=False)
    assert_fails_without_output(tile_dir, csv, tmp_path, r"labels\.csv has no id column 'tile_id'")


def test_unknown_label_column(tiles, tmp_path):
    tile_dir, csv, _ = tiles
    assert_fails_without_output(tile_dir, csv, tmp_path, r"no column\(s\) \['rent'\]", label_columns=["rent"])


def test_failed_write_leaves_no_file(tiles, tmp_path, monkeypatch):
    tile_dir, csv, _ = tiles
    out = tmp_path / "out" / "tiles.nc"

    def failing_write(self, path, *args, **kwargs):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", failing_write)
    with pytest.raises(OSError, match="disk full"):
        import_geotiff_tiles(tile_dir, csv, out_path=out)
    assert list(out.parent.iterdir()) == []
