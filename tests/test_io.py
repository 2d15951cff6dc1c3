"""Tests of lib.io: atomic writers, weights with metadata, modules rebuilt from their metadata."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lib.io
from lib.io import load_module, load_weights, save_module, save_weights, write_json


def folder_listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_write_json_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json(target, {"old": 1})
    old = target.read_text()

    def write_half_then_fail(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(lib.io.Path, "write_text", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_json(target, {"new": list(range(100))})
    monkeypatch.undo()

    assert target.read_text() == old
    assert folder_listing(tmp_path) == ["metrics.json"]


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "metrics.json"
    # What a process killed inside atomic_path leaves: mkstemp's name beside the target.
    (tmp_path / ".metrics.json.k3x_9qzb.json").write_text('{"half": ')
    (tmp_path / ".metrics.json.k3x_9qzb.txt").write_text("not ours: another suffix")
    (tmp_path / ".other.json.k3x_9qzb.json").write_text("not ours: another file")
    write_json(target, {"new": 1})
    assert folder_listing(tmp_path) == [".metrics.json.k3x_9qzb.txt", ".other.json.k3x_9qzb.json", "metrics.json"]


def test_write_json_format_and_numpy_values(tmp_path):
    target = write_json(tmp_path / "sub" / "out.json", {"b": np.float32(0.5), "a": np.arange(3), "p": Path("x/y")})
    assert target.read_text() == '{\n  "a": [\n    0,\n    1,\n    2\n  ],\n  "b": 0.5,\n  "p": "x/y"\n}\n'
    with pytest.raises(TypeError, match="cannot write object"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_save_weights_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    save_weights(target, {"w": torch.ones(3)}, {"epoch": 1})
    old = target.read_bytes()

    def write_half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(old[: len(old) // 2])
        raise OSError("interrupted")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="interrupted"):
        save_weights(target, {"w": torch.zeros(3)}, {"epoch": 2})
    monkeypatch.undo()

    assert target.read_bytes() == old
    assert folder_listing(tmp_path) == ["model.safetensors"]
    state, meta = load_weights(target)
    assert torch.equal(state["w"], torch.ones(3)) and meta == {"epoch": 1}


def test_weights_round_trip_with_metadata(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    meta = {"loss": "margin", "best_epoch": 3, "history": [{"epoch": 0, "loss": 0.5}],
            "score": np.float64(0.25), "params": {"grid": 4, "classes": [0, 1]}}
    path = save_weights(tmp_path / "m.safetensors", model.state_dict(), meta)
    state, loaded = load_weights(path)
    assert state.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value)
    assert loaded == {**meta, "score": 0.25}
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_weights(tmp_path / "missing.safetensors")


def test_project_root_is_found_upwards(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert lib.io.project_root(deep) == tmp_path.resolve()


def test_load_module_rebuilds_from_metadata(tmp_path):
    model = nn.Linear(4, 3)
    save_module(tmp_path / "m.safetensors", model, {"shape": [4, 3]})
    loaded, meta = load_module(tmp_path / "m.safetensors", lambda state, meta: nn.Linear(*meta["shape"]))
    assert not loaded.training and meta == {"shape": [4, 3]}
    assert torch.equal(loaded.weight, model.weight) and torch.equal(loaded.bias, model.bias)


def test_load_module_of_another_architecture_names_the_file(tmp_path):
    save_module(tmp_path / "m.safetensors", nn.Linear(4, 3))
    with pytest.raises(RuntimeError, match="m.safetensors: the weights do not fit"):
        load_module(tmp_path / "m.safetensors", lambda state, meta: nn.Linear(5, 3))


def test_weights_are_byte_identical_across_processes(tmp_path):
    """safetensors orders several metadata keys differently in every process; one JSON key does not."""
    import subprocess
    import sys

    code = (
        "import sys, torch; from lib.io import save_weights; "
        "save_weights(sys.argv[1], {'w': torch.arange(4.0), 'b': torch.ones(2)}, "
        "{'loss': 'margin', 'history': [{'epoch': 0, 'loss': 0.5}], 'best_epoch': 0, 'params': {'a': 1, 'b': [2, 3]}})"
    )
    paths = [tmp_path / f"w{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=Path(__file__).resolve().parents[1])
    assert len({p.read_bytes() for p in paths}) == 1
    _, meta = load_weights(paths[0])
    assert meta == {"loss": "margin", "history": [{"epoch": 0, "loss": 0.5}], "best_epoch": 0, "params": {"a": 1, "b": [2, 3]}}


def test_weights_with_one_metadata_key_per_value_still_load(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "old.safetensors"), metadata={"loss": '"margin"', "best_epoch": "3"})
    state, meta = load_weights(tmp_path / "old.safetensors")
    assert meta == {"loss": "margin", "best_epoch": 3} and torch.equal(state["w"], torch.ones(2))


def test_a_truncated_netcdf_or_parquet_file_is_named(tmp_path):
    import pandas as pd
    import xarray as xr

    from lib.io import DataFileError, open_dataset, read_parquet

    nc, table = tmp_path / "tiles.nc", tmp_path / "regions.parquet"
    xr.Dataset({"x": ("i", np.arange(1000.0))}).to_netcdf(nc, engine="h5netcdf")
    pd.DataFrame({"x": np.arange(1000)}).to_parquet(table)
    with open_dataset(nc, engine="h5netcdf") as ds:  # intact files read as before
        assert float(ds.x.sum()) == 499500.0
    assert read_parquet(table)["x"].sum() == 499500
    for path in (nc, table):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataFileError, match=r"cannot read .*tiles\.nc: .* truncated or damaged"):
        open_dataset(nc, engine="h5netcdf")
    with pytest.raises(DataFileError, match=r"cannot read .*regions\.parquet"):
        read_parquet(table)
    with pytest.raises(DataFileError, match=r"cannot read .*missing\.nc"):
        open_dataset(tmp_path / "missing.nc", engine="h5netcdf")
