"""Tile datasets in memory: generated cities and imported GeoTIFF tiles."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from lib.data.tiles import load_tiles


def test_imported_tiles_load_with_a_concept_table_or_without_concepts(tmp_path):
    """Tiles in import_geotiff_tiles' layout: uint16 pixels, string ids, no fractions, no generator."""
    ids = [f"t{i:02d}" for i in range(6)]
    pixels = np.arange(6 * 3 * 4 * 4, dtype=np.uint16).reshape(6, 3, 4, 4)
    ds = xr.Dataset(
        {"image": (("tile", "band", "y", "x"), pixels), "income": ("tile", np.linspace(20.0, 30.0, 6))},
        coords={"tile": ids, "band": [1, 2, 3], "easting": ("tile", np.arange(6.0)), "northing": ("tile", np.zeros(6))},
    )
    path = tmp_path / "tiles.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    pd.DataFrame({"tile": ["t05", "t01"], "park": [0.8, 0.6], "port": [0.1, 0.0]}).to_csv(tmp_path / "concepts.csv", index=False)

    data = load_tiles(path, "income", tmp_path / "concepts.csv")
    assert data.images.dtype == torch.float32 and float(data.images.max()) == 1.0
    assert data.band_names == ["1", "2", "3"] and data.true_effects is None
    assert data.concepts["park"].tolist() == [0.0, 0.6, 0.0, 0.0, 0.0, 0.8]  # tiles not in the table: 0

    assert load_tiles(path, "income").concepts is None
    with pytest.raises(KeyError, match="income"):
        load_tiles(path, "liveability")
    with pytest.raises(ValueError, match="concepts.outcome"):
        load_tiles(path)
