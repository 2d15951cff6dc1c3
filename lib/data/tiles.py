"""Tile datasets in memory: aerial (or any raster) tiles with an outcome per tile.

The compendium's tile format is a NetCDF file with ``image`` (tile, band, y, x)
and outcome variables along ``tile``: a generated city's ``tiles.nc``
(:func:`lib.data.city.build_city`) or real GeoTIFF tiles imported with
:func:`lib.data.geotiff.import_geotiff_tiles`. Land-cover ``fractions`` come
with generated cities; real data may bring a concept table instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.data.city import stored_outcome_models
from lib.data.city_outcomes import MODALITY_FACTORS
from lib.io import open_dataset, read_parquet

#: The true factors besides the land-cover fractions that an aerial tile shows (the aerial oracle's design).
AERIAL_FACTORS: tuple[str, ...] = tuple(f for f in MODALITY_FACTORS["aerial"] if not f.startswith("fraction_"))


@dataclass(frozen=True)
class TileData:
    """One tile dataset in memory.

    ``images`` (n, C, H, W) float32 (uint8 pixels / 255, other types / their
    maximum); ``outcome`` (n,) in its own units; ``concepts`` (n, K) concept
    fractions (land cover) or None; ``true_effects`` the generator's weight of
    each concept on the outcome, or None for data without a known generator;
    ``factors`` (n, m) the other true factors an aerial image shows
    (:data:`AERIAL_FACTORS`, a generated city's water proximity and distance
    to the centre), or None where the dataset has none of them.
    """

    images: torch.Tensor
    outcome: np.ndarray
    outcome_name: str
    units: str
    tile_ids: np.ndarray
    easting: np.ndarray
    northing: np.ndarray
    band_names: list[str]
    concepts: pd.DataFrame | None
    true_effects: pd.Series | None
    factors: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.outcome)


def band_statistics(images: torch.Tensor) -> np.ndarray:
    """Each band's mean and standard deviation over a tile's pixels, the trivial features of a tile.

    ``images`` (n, C, H, W) -> (n, 2C) float64, columns ``[mean_1 .. mean_C, sd_1 .. sd_C]`` with
    ``mean_c = (1 / HW) sum_p x_cp`` and ``sd_c = sqrt((1 / HW) sum_p (x_cp - mean_c)^2)`` (population sd).
    """
    if images.dim() != 4 or images.shape[2] * images.shape[3] == 0:
        raise ValueError(f"band_statistics needs images (n, C, H, W) with pixels, got shape {tuple(images.shape)}")
    pixels = images.double().flatten(2)
    return torch.cat([pixels.mean(dim=2), pixels.std(dim=2, correction=0)], dim=1).numpy()


def load_tiles(path: str | os.PathLike, outcome: str | None = None, concept_table: str | os.PathLike | None = None) -> TileData:
    """Read a tile dataset (NetCDF: a city's ``tiles.nc`` or an imported GeoTIFF set).

    ``outcome`` defaults to the dataset's ``task`` attribute (generated
    cities). Tiles without a finite outcome, or marked uninhabited (open
    water), are left out. Concepts come from the ``fractions`` variable when present, else
    from ``concept_table`` (a CSV or Parquet file with a ``tile`` column of
    tile ids and one column of fractions or 0/1 memberships per concept).
    """
    path = Path(path)
    with open_dataset(path, engine="h5netcdf", decode_coords="all") as ds:
        name = outcome or ds.attrs.get("task")
        if name is None:
            raise ValueError(f"{path} has no 'task' attribute: set the parameter concepts.outcome")
        if name not in ds or ds[name].dims != ("tile",):
            candidates = [v for v in ds.data_vars if ds[v].dims == ("tile",)]
            raise KeyError(f"{path} has no outcome {name!r} along 'tile'; it has {candidates}")
        # Uninhabited tiles (open water in a generated city) have no outcome: they are left out.
        keep = np.isfinite(ds[name].values)
        if "inhabited" in ds:
            keep &= ds["inhabited"].values.astype(bool)
        if not keep.any():
            raise ValueError(f"{path}: no tile has a finite {name!r}")
        ds = ds.isel(tile=np.flatnonzero(keep))
        pixels = ds["image"].values
        scale = 255.0 if pixels.dtype == np.uint8 else float(np.abs(pixels).max()) or 1.0
        tile_ids = ds["tile"].values.astype(str)
        if "fractions" in ds:
            concepts = pd.DataFrame(ds["fractions"].values, columns=[str(c) for c in ds["landcover_class"].values])
        elif concept_table is not None:
            concepts = _read_concept_table(concept_table, tile_ids)
        else:
            concepts = None
        units = json.loads(ds.attrs["outcome_units"]).get(name, "") if "outcome_units" in ds.attrs else ""
        true_effects = None
        if "outcome_models" in ds.attrs and concepts is not None and name in json.loads(ds.attrs["outcome_models"]):
            model = stored_outcome_models(ds)[name]
            weights = dict(model.landcover)
            if model.interval is not None:
                # An interval-dependent effect enters at its mean over the tiles (the stored true slope per tile).
                weights[model.interval.concept] += float(np.mean(ds[f"{name}_slope_{model.interval.concept}"].values))
            true_effects = pd.Series({c: weights[c] for c in concepts.columns if c in weights}, name="true_effect")
        present = [f for f in AERIAL_FACTORS if f in ds and ds[f].dims == ("tile",)]
        factors = pd.DataFrame({f: ds[f].values.astype(np.float64) for f in present}) if present else None
        return TileData(
            images=torch.from_numpy(pixels.astype(np.float32) / scale),
            outcome=ds[name].values.astype(np.float64),
            outcome_name=name,
            units=units,
            tile_ids=tile_ids,
            easting=ds["easting"].values,
            northing=ds["northing"].values,
            band_names=[str(b) for b in ds["band"].values],
            concepts=concepts,
            true_effects=true_effects,
            factors=factors,
        )


def _read_concept_table(path: str | os.PathLike, tile_ids: np.ndarray) -> pd.DataFrame:
    """A user's concept table aligned to the dataset's tiles (missing tiles: not in any concept)."""
    path = Path(path)
    table = read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path, dtype={"tile": str})
    if "tile" not in table.columns:
        raise ValueError(f"concept table {path} needs a 'tile' column of tile ids; columns: {list(table.columns)}")
    table = table.assign(tile=table["tile"].astype(str)).set_index("tile")
    return table.reindex(tile_ids).fillna(0.0).astype(np.float64).reset_index(drop=True)
