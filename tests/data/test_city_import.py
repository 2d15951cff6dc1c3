"""The importer of a real city (lib.data.city_import) on a tiny city written by the test itself."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shapely.geometry import box

from lib.data.city import flow_matrix, load_regions, load_street_views, load_tables
from lib.data.city_import import ABSENT, import_city, main
from lib.data.geotiff import DatasetImportError
from lib.data.semantic_pairs import poi_histograms

# Four 500 m squares in a row, in Helsinki's ETRS-TM35FIN, written to the files in WGS84 (GeoJSON's CRS).
_IDS = ["a1", "a2", "b1", "b2"]
_X0, _Y0, _SIDE = 385_000.0, 6_672_000.0, 500.0


def _squares() -> gpd.GeoDataFrame:
    geometry = [box(_X0 + i * _SIDE, _Y0, _X0 + (i + 1) * _SIDE, _Y0 + _SIDE) for i in range(len(_IDS))]
    return gpd.GeoDataFrame({"region_id": _IDS, "income": [30.0, 42.5, None, 18.0], "price": [1, 2, 3, 4]},
                            geometry=geometry, crs="EPSG:3067")


def _lonlat(x: float, y: float) -> tuple[float, float]:
    point = gpd.GeoSeries(gpd.points_from_xy([x], [y]), crs="EPSG:3067").to_crs("EPSG:4326")
    return float(point.x[0]), float(point.y[0])


def write_city(root: Path, regions_format: str = "geojson") -> dict[str, Path]:
    """The five inputs of a four-region city under ``root``: regions, POIs, images, views, trips."""
    regions = _squares()
    root.mkdir(parents=True)
    paths = {"regions": root / f"regions.{regions_format}", "pois": root / "pois.csv",
             "aerial_dir": root / "aerial", "street_dir": root / "street", "flows": root / "od.csv"}
    if regions_format == "geojson":
        regions.to_crs("EPSG:4326").to_file(paths["regions"], driver="GeoJSON")
    else:
        regions.to_file(paths["regions"], driver="GPKG")
    # Two POIs in a1, one in b2, one outside every region.
    spots = [(_X0 + 100, _Y0 + 100, "cafe"), (_X0 + 300, _Y0 + 400, "school"),
             (_X0 + 3.5 * _SIDE, _Y0 + 250, "cafe"), (_X0 - 900, _Y0 - 900, "shop")]
    rows = [{"category": c, "name": f"poi {k}", "description": f"a {c}", "lon": lon, "lat": lat}
            for k, (x, y, c) in enumerate(spots) for lon, lat in [_lonlat(x, y)]]
    pd.DataFrame(rows).to_csv(paths["pois"], index=False)
    rng = np.random.default_rng(0)
    paths["aerial_dir"].mkdir()
    for k, region in enumerate(_IDS):
        size = (24, 16) if k == 0 else (16, 16)  # one oblong image: cut to its central square
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths["aerial_dir"] / f"{region}.png")
        views = paths["street_dir"] / region
        views.mkdir(parents=True)
        for v in range(2 if k == 1 else 3):  # region a2 has two views: every region keeps two
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(views / f"view_{v}.jpg")
    pd.DataFrame({"origin": ["a1", "a1", "a2", "b1", "a1", "b2"],
                  "destination": ["a2", "a2", "a1", "b2", "b1", "a1"],
                  "trips": [3, 2, 4, 0, 1.5, 7]}).to_csv(paths["flows"], index=False)
    return paths


@pytest.fixture
def city(tmp_path):
    paths = write_city(tmp_path / "input")
    return import_city("own_city", **paths, out_dir=tmp_path / "datasets" / "own_city", aerial_px=8, view_px=8,
                       outcomes=["income", "price"])


def test_the_import_writes_the_files_the_loaders_read(city):
    assert city.n_regions == 4 and city.n_pois == 3 and city.views_per_region == 2
    assert city.crs == "EPSG:32635"  # the local UTM zone of Helsinki, reprojected from WGS84
    tables = load_tables(city.path)
    regions = tables["regions"]
    assert regions["region"].tolist() == [0, 1, 2, 3] and regions["region_id"].tolist() == _IDS
    assert regions["inhabited"].all()
    np.testing.assert_allclose(regions["land_area_km2"], 0.25, rtol=2e-3)  # 500 m squares, up to the projection
    np.testing.assert_allclose(np.diff(regions["easting"]), _SIDE, rtol=2e-3)
    assert regions["income"].tolist()[:2] == [30.0, 42.5] and np.isnan(regions["income"][2])
    assert regions["n_pois"].tolist() == [2, 0, 0, 1]
    assert tables["pois"]["region"].tolist() == [0, 0, 3]
    with load_regions(city.path) as aerial:
        assert aerial["image"].shape == (4, 3, 8, 8) and aerial["image"].dtype == np.uint8
        assert aerial.rio.crs.to_epsg() == 32635
        assert aerial["region_id"].values.tolist() == _IDS
    with load_street_views(city.path) as views:
        assert views["image"].shape == (4, 2, 3, 8, 8)


def test_flows_are_summed_per_pair_and_trips_counted(city):
    flows = load_tables(city.path)["flows"]
    matrix = flow_matrix(flows, city.n_regions)
    expected = np.zeros((4, 4))
    expected[0, 1], expected[1, 0], expected[0, 2], expected[3, 0] = 5, 4, 1.5, 7  # b1 -> b2 had no trips
    np.testing.assert_array_equal(matrix, expected)
    np.testing.assert_allclose(flows["distance_km"][(flows["origin"] == 0) & (flows["destination"] == 1)], 0.5,
                               rtol=2e-3)
    regions = load_tables(city.path)["regions"]
    np.testing.assert_array_equal(regions["trips_out"], expected.sum(1))
    np.testing.assert_array_equal(regions["trips_in"], expected.sum(0))


def test_city_json_says_there_is_no_ground_truth(city):
    summary = json.loads((city.path / "city.json").read_text())
    assert summary["ground_truth"] is False and summary["source"] == "imported"
    assert set(summary["absent"]) == set(ABSENT)
    assert summary["oracle_r2"] == {"region": {}} and summary["modality_features"] == {} and summary["hidden_factors"] == []
    assert summary["outcomes"] == ["income", "price"] and summary["missing_outcomes"] == {"income": 1, "price": 0}
    assert summary["poi_categories"] == ["cafe", "school"]
    assert summary["counts"]["pois_outside_regions"] == 1 and summary["counts"]["trips"] == 17.5
    assert summary["inputs"]["regions"]["file"] == "regions.geojson" and len(summary["inputs"]["pois"]["sha256"]) == 64
    assert not any(name in summary for name in ("config", "layout"))


def test_poi_histograms_take_the_categories_city_json_lists(city):
    tables = load_tables(city.path)
    categories = json.loads((city.path / "city.json").read_text())["poi_categories"]
    counts = poi_histograms(tables["pois"], tables["regions"]["region"], categories)
    np.testing.assert_array_equal(counts, [[1, 1], [0, 0], [0, 0], [1, 0]])


def test_the_region_studies_read_an_imported_city(city):
    """Round trip: the loaders of the musecl stages take the imported city as they take a generated one."""
    from lib.studies.musecl.data import inhabited_pois
    from lib.studies.musecl.data import load_regions as musecl_regions

    regions = musecl_regions(city.path, image_px=4)
    assert len(regions) == 4 and regions.aerial.shape == (4, 3, 4, 4) and regions.street.shape == (4, 2, 3, 4, 4)
    assert float(regions.aerial.max()) <= 1.0 and regions.oracle == {}
    assert len(regions.pois) == 3 and regions.flows["flow"].sum() == 17.5
    ids, pois = inhabited_pois(city.path)
    assert ids.tolist() == [0, 1, 2, 3] and len(pois) == 3


def test_aerial_pixels_are_the_box_average_of_the_central_square(tmp_path):
    paths = write_city(tmp_path / "input", regions_format="gpkg")
    city = import_city("own", **paths, out_dir=tmp_path / "own", aerial_px=8, view_px=8)
    source = np.asarray(Image.open(paths["aerial_dir"] / "a1.png")).astype(float)[4:20]  # 24 x 16: rows 4..19
    naive = source.reshape(8, 2, 8, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    with load_regions(city.path) as aerial:
        np.testing.assert_allclose(aerial["image"].values[0], naive, atol=1)
    assert city.crs == "EPSG:3067"  # a projected GeoPackage keeps its CRS
    assert city.outcomes == ("income", "price")  # default: every column but id and geometry


def test_an_existing_import_is_replaced_and_a_failed_one_leaves_it(tmp_path):
    paths = write_city(tmp_path / "input")
    out = tmp_path / "datasets" / "own"
    import_city("own", **paths, out_dir=out, aerial_px=8, view_px=8)
    import_city("own", **paths, out_dir=out, aerial_px=16, view_px=8)
    with load_regions(out) as aerial:
        assert aerial.sizes["x"] == 16
    (paths["aerial_dir"] / "a1.png").unlink()
    with pytest.raises(DatasetImportError):
        import_city("own", **paths, out_dir=out, aerial_px=8, view_px=8)
    with load_regions(out) as aerial:
        assert aerial.sizes["x"] == 16
    assert sorted(p.name for p in out.parent.iterdir()) == ["own"]


def _edit_csv(path: Path, column: str, row: int, value) -> None:
    table = pd.read_csv(path, dtype=str)
    table.loc[row, column] = value
    table.to_csv(path, index=False)


def _break_regions(paths, change):
    regions = gpd.read_file(paths["regions"])
    change(regions)
    regions.to_file(paths["regions"], driver="GeoJSON")


@pytest.mark.parametrize("breakage, message", [
    (lambda p: _edit_csv(p["pois"], "lat", 2, "north"), r"pois\.csv: column 'lat' of row 3 is 'north'"),
    (lambda p: pd.read_csv(p["pois"]).drop(columns="category").to_csv(p["pois"], index=False),
     r"POI table pois\.csv has no column\(s\) \['category'\]"),
    (lambda p: _edit_csv(p["flows"], "destination", 4, "zz"),
     r"od\.csv: row 5 names destination 'zz', which is not a region"),
    (lambda p: _edit_csv(p["flows"], "trips", 1, "-2"), r"od\.csv: row 2 has trips '-2'"),
    (lambda p: (p["aerial_dir"] / "b1.png").unlink(), r"no aerial image in .*aerial for region\(s\) \['b1'\]"),
    (lambda p: [f.unlink() for f in (p["street_dir"] / "b2").iterdir()], r"no street-level view of region 'b2'"),
    (lambda p: _break_regions(p, lambda r: r.__setitem__("income", ["1", "2", "high", "4"])),
     r"regions\.geojson: column 'income' of region 'b1' is 'high', not a number"),
    (lambda p: _break_regions(p, lambda r: r.__setitem__("region_id", ["a1", "a1", "b1", "b2"])),
     r"regions\.geojson: 'region_id' repeats the id\(s\) \['a1'\]"),
    (lambda p: _break_regions(p, lambda r: r.drop(columns="region_id", inplace=True)),
     r"regions file regions\.geojson has no id column 'region_id'"),
])
def test_errors_name_the_file_and_the_row_column_or_region(tmp_path, breakage, message):
    paths = write_city(tmp_path / "input")
    breakage(paths)
    with pytest.raises(DatasetImportError, match=message):
        import_city("own", **paths, out_dir=tmp_path / "own", aerial_px=8, view_px=8)
    assert not (tmp_path / "own").exists() and list(tmp_path.glob(".own.*")) == []


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_crs_errors_name_the_file_or_the_crs(tmp_path):
    paths = write_city(tmp_path / "input")
    with pytest.raises(DatasetImportError, match=r"crs 'EPSG:4326' is not projected"):
        import_city("own", **paths, out_dir=tmp_path / "own", crs="EPSG:4326")
    regions = gpd.read_file(paths["regions"])
    no_crs = tmp_path / "input" / "no_crs.gpkg"
    regions.set_crs(None, allow_override=True).to_file(no_crs, driver="GPKG")
    with pytest.raises(DatasetImportError, match=r"regions file no_crs\.gpkg has no CRS"):
        import_city("own", **{**paths, "regions": no_crs}, out_dir=tmp_path / "own")
    city = import_city("own", **paths, out_dir=tmp_path / "own", crs="EPSG:3067", aerial_px=8, view_px=8)
    assert city.crs == "EPSG:3067"


def test_command_line(tmp_path, capsys):
    paths = write_city(tmp_path / "input")
    args = ["own_city", "--regions", str(paths["regions"]), "--pois", str(paths["pois"]),
            "--aerial", str(paths["aerial_dir"]), "--street", str(paths["street_dir"]),
            "--flows", str(paths["flows"]), "--out", str(tmp_path / "own_city"), "--aerial-px", "8",
            "--view-px", "8", "--outcomes", "income"]
    assert main(args) == 0
    assert "4 regions, 3 POIs, 2 street views each" in capsys.readouterr().out
    assert load_tables(tmp_path / "own_city")["regions"].columns[-3:].tolist() == ["income", "trips_out", "trips_in"]
    (paths["aerial_dir"] / "a2.png").unlink()
    assert main([*args[:-2], "--out", str(tmp_path / "other")]) == 1
    assert "error: no aerial image" in capsys.readouterr().err
