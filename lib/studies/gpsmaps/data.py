"""The gpsmaps study's maps: loaded, cleaned by class entropy, split in space, with the geo-task targets.

Every place's maps (``datasets/maps/<place>.nc``, :mod:`lib.data.map_dataset`)
are read into one :class:`MapSet`. Maps whose map-class entropy lies below the
threshold (open water, uniform forest) are dropped
(:func:`lib.data.map_entropy.entropy_filter`). In each generated city, a
seeded share of square spatial blocks is **held out**: no training step sees
their labels (the label-free losses still see their images, as transductive
self-supervised training does), and the downstream probes are fitted and
scored inside this held-out pool by spatial block cross-validation. Training
maps closer than ``gap_m`` to a held-out map lose their labels too, so no
label leaks across a block edge. Helsinki's maps carry no socioeconomic
labels and serve the label-free losses only.

Geo-task targets (standardised on the labelled training maps only): land
price; the k-means cluster of population density; lon/lat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree
from sklearn.cluster import KMeans

from lib.data.map_dataset import load_map_datasets
from lib.data.map_entropy import class_entropy
from lib.studies.gpsmaps.params import N_MAP_CLASSES, GpsMapsData

LABELS = ("land_price", "population_density", "environment_index", "income", "liveability",
          "map_class_at_centre", "building_density", "building_fraction")


@dataclass
class MapSet:
    """Maps of every place, in one order.

    ``images`` float (N, 3, H, W) in [0, 1]; ``table`` one row per map: place,
    lon, lat, easting, northing (in the place's CRS), entropy, ``kept``
    (entropy at or above the threshold), ``holdout`` (its labels are never
    used in training), ``geo_train`` (labelled and usable by the geo tasks),
    and the labels.
    """

    images: torch.Tensor
    masks: np.ndarray
    table: pd.DataFrame
    fractions: np.ndarray | None = None  # (N, classes) pixel share of each map class of the rendered map

    def subset(self, rows: np.ndarray) -> MapSet:
        rows = np.asarray(rows)
        return MapSet(self.images[torch.as_tensor(rows)], self.masks[rows], self.table.iloc[rows].reset_index(drop=True),
                      None if self.fractions is None else self.fractions[rows])


def holdout_blocks(easting: np.ndarray, northing: np.ndarray, block_m: float, fraction: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Boolean per point: does its ``block_m`` square block belong to the held-out share of blocks?"""
    bx = np.floor((easting - easting.min()) / block_m).astype(np.int64)
    by = np.floor((northing - northing.min()) / block_m).astype(np.int64)
    blocks, block_of = np.unique(np.stack([bx, by], 1), axis=0, return_inverse=True)
    n_out = max(1, round(fraction * len(blocks)))
    if n_out >= len(blocks):
        raise ValueError(f"holdout_fraction {fraction} of {len(blocks)} blocks of {block_m} m leaves no training block")
    chosen = rng.choice(len(blocks), size=n_out, replace=False)
    return np.isin(block_of.ravel(), chosen)


def load_maps(cfg: GpsMapsData, seed: int, directory: str = "datasets/maps") -> MapSet:
    """Read, clean and split the maps of ``cfg.places`` (see the module docstring)."""
    datasets = load_map_datasets(directory, cfg.places)
    images, masks, tables = [], [], []
    for place, ds in datasets.items():
        n = ds.sizes["tile"]
        table = pd.DataFrame({"place": place, "tile": ds["tile"].values,
                              "lon": ds["lon"].values, "lat": ds["lat"].values,
                              "easting": ds["easting"].values, "northing": ds["northing"].values})
        for name in LABELS:
            table[name] = ds[name].values.astype(float) if name in ds else np.full(n, np.nan)
        labelled = np.isfinite(table["land_price"].to_numpy())
        table["holdout"] = False
        if labelled.any():
            rng = np.random.default_rng([seed, len(tables)])
            table["holdout"] = holdout_blocks(table["easting"].to_numpy(), table["northing"].to_numpy(),
                                              cfg.block_m, cfg.holdout_fraction, rng)
            # Training maps near a held-out map lose their labels: none leaks across a block edge.
            out = table["holdout"].to_numpy()
            xy = table[["easting", "northing"]].to_numpy()
            near = np.zeros(n, bool)
            if out.any() and cfg.gap_m > 0:
                distance, _ = cKDTree(xy[out]).query(xy, k=1)
                near = (distance <= cfg.gap_m) & ~out
            table["geo_train"] = labelled & ~out & ~near
        else:
            table["geo_train"] = False
        masks.append(ds["mask"].values)
        images.append(ds["image"].values)
        tables.append(table)
    masks = np.concatenate(masks)
    table = pd.concat(tables, ignore_index=True)
    table["entropy"] = class_entropy(masks, N_MAP_CLASSES)
    table["kept"] = table["entropy"] >= cfg.entropy_threshold
    pixels = torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).float() / 255
    return MapSet(pixels, masks, table, class_fractions(masks, N_MAP_CLASSES))


def class_fractions(masks: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) share of each map's pixels in each class of its mask (N, H, W)."""
    n = len(masks)
    codes = masks.reshape(n, -1).astype(np.int64) + n_classes * np.arange(n)[:, None]
    return np.bincount(codes.ravel(), minlength=n * n_classes).reshape(n, n_classes) / masks[0].size


@dataclass(frozen=True)
class GeoTargets:
    """The geo tasks' targets of every map (NaN / -1 where a map has none for training)."""

    price: torch.Tensor        # (N,) standardised land price, NaN outside geo_train
    density_cluster: torch.Tensor  # (N,) long, -1 outside geo_train
    coords: torch.Tensor       # (N, 2) standardised lon/lat, NaN outside geo_train
    price_mean: float
    price_sd: float
    outcomes: torch.Tensor | None = None  # (N, T) standardised outcomes of the supervised bound, NaN outside geo_train

    def __post_init__(self) -> None:
        if self.outcomes is None:
            object.__setattr__(self, "outcomes", torch.full((len(self.price), 0), float("nan")))


def geo_targets(table: pd.DataFrame, n_clusters: int, seed: int, outcomes: tuple[str, ...] = ()) -> GeoTargets:
    """Targets of the geo tasks, fitted (standardisation, k-means) on the ``geo_train`` maps only; with
    ``outcomes``, those labels standardised on the same maps (the supervised bound's targets)."""
    train = table["geo_train"].to_numpy(bool)
    n = len(table)
    price = np.full(n, np.nan)
    cluster = np.full(n, -1, dtype=np.int64)
    coords = np.full((n, 2), np.nan)
    mean = sd = float("nan")
    if train.sum() >= n_clusters:
        p = table["land_price"].to_numpy(float)
        mean, sd = float(p[train].mean()), float(p[train].std() or 1.0)
        price[train] = (p[train] - mean) / sd
        density = table["population_density"].to_numpy(float)[train].reshape(-1, 1)
        km = KMeans(n_clusters, n_init=10, random_state=seed).fit(density)
        # Clusters numbered by their centre, lowest density first, so a cluster's number means something.
        order = np.argsort(np.argsort(km.cluster_centers_.ravel()))
        cluster[train] = order[km.labels_]
        ll = table[["lon", "lat"]].to_numpy(float)
        coords[train] = (ll[train] - ll[train].mean(0)) / ll[train].std(0).clip(1e-9)
    supervised = np.full((n, len(outcomes)), np.nan)
    for k, name in enumerate(outcomes):
        values = table[name].to_numpy(float)
        if train.any():
            supervised[train, k] = (values[train] - values[train].mean()) / (values[train].std() or 1.0)
    return GeoTargets(torch.as_tensor(price, dtype=torch.float32), torch.as_tensor(cluster),
                      torch.as_tensor(coords, dtype=torch.float32), mean, sd,
                      torch.as_tensor(supervised, dtype=torch.float32))


def aerial_oracles(places, root="datasets") -> dict[str, list[float]]:
    """Per outcome, the tile-level aerial oracle R^2 each generated city stores (``<root>/<place>/city.json``,
    ``oracle_r2.tile.<outcome>.aerial``), in the order of ``places``; places without a ``city.json``
    (Helsinki, an imported map) are skipped."""
    oracle: dict[str, list[float]] = {}
    for place in places:
        city = Path(root) / place / "city.json"
        if not city.exists():
            continue
        try:
            rows = json.loads(city.read_text())["oracle_r2"]["tile"]
        except KeyError as err:
            raise KeyError(f"{city}: no oracle_r2.tile table (key {err}); rebuild the city with its stage") from None
        for target, row in rows.items():
            oracle.setdefault(target, []).append(row["aerial"])
    return oracle
