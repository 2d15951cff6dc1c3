"""The regions of a generated city as MuseCL reads them: images, POI texts, flows, outcomes and their truth.

A city built by the ``city`` stage (:mod:`lib.data.city`) holds, per region of a
hexagonal grid, one aerial image, a few street-level views, its POIs (category,
name, description) and the trips between regions. Only **inhabited** regions
(water below half their area) have POIs, views, flows and outcomes: they are
the regions of this study, in the order of ``regions.parquet``.

* :func:`load_regions` - the table, the images resampled to ``image_px``
  (area average) as float tensors in [0, 1], the POIs and the flows of the
  inhabited regions, and the city's stored oracle R^2 per outcome.
* :func:`truth_columns` - the city's contract with its truth (``city.json``):
  ``modality_features`` (modality -> the ``regions.parquet`` columns holding
  the true quantities that modality renders) and ``hidden_factors`` (what no
  input shows); the oracle and ceiling probes read these columns.
* :func:`poi_categories` - the columns of a city's POI histograms.
* :func:`poi_texts` - each POI's text, ``"<name>. <description>"``.
* :func:`region_text_embeddings` - the mean of its POIs' text embeddings per
  region (zeros for a region without POIs; ``n_pois`` says which).
* :func:`write_text_embeddings` / :func:`load_text_embeddings` - the
  ``musecl_text`` stage's NetCDF file per city; :func:`write_embeddings` /
  :func:`load_embeddings` - every embedding ``musecl_train`` made of a city
  with one training seed (``datasets/musecl/<city>/seed_<s>.nc``);
  :func:`write_supervised` / :func:`load_supervised` - the supervised bound's
  out-of-fold predictions of one training seed
  (``datasets/musecl/<city>/supervised_seed_<s>.nc``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr

from lib.data.poi_text import POI_CATEGORIES
from lib.io import atomic_path, open_dataset, read_parquet

#: The POI categories of the generated cities, the columns of the POI histograms.
CATEGORIES = POI_CATEGORIES

#: The modalities whose rendered truth ``city.json``'s ``modality_features`` lists.
MODALITIES = ("aerial", "street_view", "poi", "mobility")

__all__ = [
    "CATEGORIES",
    "MODALITIES",
    "CityRegions",
    "inhabited_pois",
    "inhabited_table",
    "load_embeddings",
    "load_regions",
    "load_supervised",
    "load_text_embeddings",
    "poi_categories",
    "poi_texts",
    "region_text_embeddings",
    "truth_columns",
    "write_embeddings",
    "write_supervised",
    "write_text_embeddings",
]


@dataclass
class CityRegions:
    name: str
    table: pd.DataFrame  # inhabited regions, one row each (regions.parquet's columns)
    aerial: torch.Tensor  # (N, 4, px, px) R, G, B, NIR in [0, 1]
    street: torch.Tensor  # (N, V, 3, px, px) RGB in [0, 1]
    pois: pd.DataFrame  # the POIs of these regions
    flows: pd.DataFrame  # trips between these regions
    oracle: dict[str, dict[str, float]]  # outcome -> modality | all_factors | ceiling -> R^2 (regions)

    @property
    def ids(self) -> np.ndarray:
        return self.table["region"].to_numpy()

    def __len__(self) -> int:
        return len(self.table)


def inhabited_table(city_dir: str | os.PathLike[str], columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of ``regions.parquet`` whose regions are inhabited, renumbered from 0 (``columns``: all if None)."""
    path = Path(city_dir) / "regions.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: build the city first (dvc repro city)")
    table = read_parquet(path, columns=None if columns is None else list(dict.fromkeys(["inhabited", *columns])))
    return table[table["inhabited"].to_numpy(bool)].reset_index(drop=True)


def _resample(images: np.ndarray, px: int) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if x.shape[-1] == px:
        return x
    lead = x.shape[:-3]
    x = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(px, px), mode="area")
    return x.reshape(*lead, *x.shape[-3:])


def load_regions(city_dir: str | os.PathLike[str], image_px: int) -> CityRegions:
    """The inhabited regions of the city built in ``city_dir`` (module docstring)."""
    city_dir = Path(city_dir)
    needed = ["regions.parquet", "pois.parquet", "flows.parquet", "regions.nc", "street_views.nc", "city.json"]
    missing = [name for name in needed if not (city_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{city_dir} lacks {missing}: build the city first (dvc repro city)")
    table = inhabited_table(city_dir)
    ids = table["region"].to_numpy()
    with open_dataset(city_dir / "regions.nc") as ds:
        aerial = _resample(ds["image"].sel(region=ids).values, image_px)
    with open_dataset(city_dir / "street_views.nc") as ds:
        street = _resample(ds["image"].sel(region=ids).values, image_px)
    pois = read_parquet(city_dir / "pois.parquet")
    pois = pois[pois["region"].isin(ids)].reset_index(drop=True)
    flows = read_parquet(city_dir / "flows.parquet")
    flows = flows[flows["origin"].isin(ids) & flows["destination"].isin(ids)].reset_index(drop=True)
    oracle = json.loads((city_dir / "city.json").read_text())["oracle_r2"]["region"]
    return CityRegions(city_dir.name, table, aerial, street, pois, flows, oracle)


def truth_columns(city_dir: str | os.PathLike[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``(modality_features, hidden_factors)`` of a built city (module docstring).

    A real city imported by :mod:`lib.data.city_import` (``"ground_truth":
    false``) knows neither: every list is empty, and the study runs without
    its oracle, ceiling and oracle-pair rungs. Fails naming the key when a
    generated city's ``city.json`` lacks one (a city built by an older
    generator), or the column when ``regions.parquet`` lacks one.
    """
    path = Path(city_dir) / "city.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: build the city first (dvc repro city)")
    meta = json.loads(path.read_text())
    if meta.get("ground_truth", True) is False:  # an imported city (lib.data.city_import): nothing is known
        return {m: [] for m in MODALITIES}, []
    for key in ("modality_features", "hidden_factors"):
        if key not in meta:
            raise KeyError(f"{path} has no key {key!r}: rebuild the city with the current generator (dvc repro city)")
    features = meta["modality_features"]
    missing = [m for m in MODALITIES if m not in features]
    if missing:
        raise KeyError(f"{path}: modality_features lacks the modalities {missing}")
    features = {m: list(features[m]) for m in MODALITIES}
    hidden = list(meta["hidden_factors"])
    columns = set(read_parquet(Path(city_dir) / "regions.parquet").columns)
    absent = sorted(({c for cols in features.values() for c in cols} | set(hidden)) - columns)
    if absent:
        raise KeyError(f"{Path(city_dir) / 'regions.parquet'} lacks the truth columns {absent} named in {path}")
    return features, hidden


def poi_categories(city_dir: str | os.PathLike[str]) -> list[str]:
    """The POI categories of a city, the columns of its POI histograms: those ``city.json`` lists
    (``poi_categories``: an imported city's, as found in its POI table), else the generator's
    (:data:`CATEGORIES`)."""
    path = Path(city_dir) / "city.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: build or import the city first")
    listed = json.loads(path.read_text()).get("poi_categories")
    return list(listed) if listed else list(CATEGORIES)


def poi_texts(pois: pd.DataFrame) -> list[str]:
    """``"<name>. <description>"`` of each POI, in the table's order."""
    return [f"{name}. {description}" for name, description in zip(pois["name"], pois["description"])]


def region_text_embeddings(pois: pd.DataFrame, poi_embeddings: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """``(len(regions), D)``: the mean of each region's POI embeddings; zeros where a region has none."""
    poi_embeddings = np.asarray(poi_embeddings, np.float64)
    if len(poi_embeddings) != len(pois):
        raise ValueError(f"{len(poi_embeddings)} POI embeddings for {len(pois)} POIs")
    row = pd.Index(regions).get_indexer(pois["region"])
    if (row < 0).any():
        raise ValueError(f"POIs of regions not in the list, e.g. region {pois['region'][row < 0].iloc[0]}")
    sums = np.zeros((len(regions), poi_embeddings.shape[1]))
    np.add.at(sums, row, poi_embeddings)
    counts = np.bincount(row, minlength=len(regions))
    return sums / np.maximum(counts, 1)[:, None]


def write_text_embeddings(path: str | os.PathLike[str], regions: np.ndarray, embeddings: np.ndarray,
                          n_pois: np.ndarray, model_id: str) -> None:
    ds = xr.Dataset(
        {"embedding": (("region", "dim"), np.asarray(embeddings, np.float32)),
         "n_pois": (("region",), np.asarray(n_pois, np.int32))},
        coords={"region": np.asarray(regions, np.int32)},
        attrs={"model": model_id, "pooling": "mean of the unit MiniLM embeddings of the region's POI texts"},
    )
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def load_text_embeddings(path: str | os.PathLike[str], regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings (N, D), n_pois (N,))`` of ``regions`` from a ``musecl_text`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the musecl_text stage first")
    with open_dataset(path, engine="h5netcdf") as ds:
        missing = np.setdiff1d(regions, ds["region"].values)
        if len(missing):
            raise KeyError(f"{path} has no text embedding of regions {missing[:5].tolist()}: rerun musecl_text")
        sub = ds.sel(region=regions)
        return sub["embedding"].values.astype(np.float64), sub["n_pois"].values



def inhabited_pois(city_dir: str | os.PathLike[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """``(region ids, POIs)`` of the inhabited regions of a city, without reading its images."""
    city_dir = Path(city_dir)
    if not (city_dir / "pois.parquet").is_file():
        raise FileNotFoundError(f"{city_dir / 'pois.parquet'} is missing: build the city first (dvc repro city)")
    ids = inhabited_table(city_dir, ["region"])["region"].to_numpy()
    pois = read_parquet(city_dir / "pois.parquet")
    return ids, pois[pois["region"].isin(ids)].reset_index(drop=True)


def write_embeddings(path: str | os.PathLike[str], regions: np.ndarray, embeddings: dict[str, np.ndarray],
                     weights: dict[str, np.ndarray], modalities: dict[str, list[str]]) -> None:
    """Every embedding of a city's regions from one training seed, and each fusion's attention weights
    (``weights[name]`` (N, M) over ``modalities[name]``), as one NetCDF file."""
    missing = sorted(set(weights) - set(modalities))
    if missing:
        raise KeyError(f"no modality names for the attention weights of {missing}")
    data = {name: (("region", f"dim_{name}"), np.asarray(v, np.float32)) for name, v in embeddings.items()}
    data |= {f"attention_{name}": (("region", f"modality_{name}"), np.asarray(v, np.float32))
             for name, v in weights.items()}
    coords = {"region": np.asarray(regions, np.int32)} | {f"modality_{name}": modalities[name] for name in weights}
    ds = xr.Dataset(data, coords=coords)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def load_embeddings(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(regions, embeddings, attention weights)`` from :func:`write_embeddings`' file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run musecl_train for that city first")
    with open_dataset(path, engine="h5netcdf") as ds:
        regions = ds["region"].values
        embeddings = {k: ds[k].values.astype(np.float64) for k in ds.data_vars if not k.startswith("attention_")}
        weights = {k.removeprefix("attention_"): ds[k].values.astype(np.float64)
                   for k in ds.data_vars if k.startswith("attention_")}
    return regions, embeddings, weights


def write_supervised(path: str | os.PathLike[str], regions: np.ndarray, fold: np.ndarray, targets: list[str],
                     predictions: np.ndarray) -> None:
    """The supervised bound's predictions (N, T) of ``targets``, each region's from the model of the fold
    ``fold`` (N,) that tested it (-1: no fold tests it, predictions NaN), as one NetCDF file."""
    predictions, fold = np.asarray(predictions, np.float64), np.asarray(fold, np.int32)
    if predictions.shape != (len(regions), len(targets)) or fold.shape != (len(regions),):
        raise ValueError(f"predictions must be (regions, targets) = ({len(regions)}, {len(targets)}) and fold "
                         f"({len(regions)},), got {predictions.shape} and {fold.shape}")
    ds = xr.Dataset({"prediction": (("region", "target"), predictions), "fold": (("region",), fold)},
                    coords={"region": np.asarray(regions, np.int32), "target": list(targets)},
                    attrs={"model": "supervised bound: both image encoders + reduced text, trained per spatial fold"})
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def load_supervised(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """``(regions, fold, targets, predictions)`` from :func:`write_supervised`'s file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run musecl_train for that city first")
    with open_dataset(path, engine="h5netcdf") as ds:
        return (ds["region"].values, ds["fold"].values.astype(int), [str(t) for t in ds["target"].values],
                ds["prediction"].values.astype(np.float64))
