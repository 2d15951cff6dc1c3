"""Atomic outputs: a stage's file appears whole or not at all.

Every writer here writes to a temporary file in the destination's folder and
renames it into place (``os.replace`` is atomic on one file system), so an
interrupted stage never leaves a half-written output that DVC could hash.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib.timing import phase

if TYPE_CHECKING:  # torch is imported where weights are read or written: the stage runner starts without it
    import torch


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding ``dvc.yaml``, searched upwards from ``start`` (default: cwd)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    raise FileNotFoundError(f"no dvc.yaml in {here} or its parents: run from inside the compendium")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so libraries that
    choose a format by extension (matplotlib, safetensors) still work. A failed
    write leaves ``path`` as it was; temporary files that a killed process left
    beside ``path`` are deleted by the next write of ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix or path.suffix
    # A process killed mid-write cannot delete its temporary file; the next write of the path does.
    # (mkstemp's names: the prefix, eight random characters, the suffix.)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.{'?' * 8}{glob.escape(suffix)}"):
        leftover.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give it the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@phase("write")
def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON (sorted keys, 2-space indent, trailing newline) atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


@phase("write")
def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> None:
    """Save a matplotlib figure atomically (PNG or PDF by extension)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")


#: The one safetensors metadata key the compendium writes (see :func:`save_weights`).
METADATA_KEY = "compendium"


@phase("write")
def save_weights(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Save a state dict as safetensors with JSON metadata, atomically and byte-reproducibly.

    The metadata go into the header as one JSON string with sorted keys:
    safetensors writes a header of several metadata keys in a different order
    in every process, so the same weights would hash differently run to run.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {METADATA_KEY: json.dumps(dict(metadata or {}), sort_keys=True, default=_jsonable)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


@phase("data")
def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a safetensors file written by :func:`save_weights`: (tensors, metadata).

    Files with one JSON value per metadata key (as earlier versions wrote them) load too.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the stage that trains it (dvc repro)")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if set(header) == {METADATA_KEY}:
        meta = json.loads(header[METADATA_KEY])
    else:
        meta = {k: json.loads(v) for k, v in header.items()}
    return load_file(str(path)), meta


def save_module(path: str | os.PathLike, module: torch.nn.Module, metadata: Mapping[str, Any] | None = None) -> Path:
    """A module's state dict and JSON ``metadata`` (what rebuilds it, its history) as safetensors, atomically."""
    return save_weights(path, module.state_dict(), metadata)


def load_module(
    path: str | os.PathLike, build: Callable[[dict[str, torch.Tensor], dict[str, Any]], torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A module saved by :func:`save_module`, in eval mode, and its metadata.

    ``build(tensors, metadata)`` makes the empty module (its shapes may be read
    from either); the saved weights are then loaded into it strictly, so a
    file of another architecture fails with torch's list of mismatched keys.
    """
    state, meta = load_weights(path)
    module = build(state, meta)
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise RuntimeError(f"{path}: the weights do not fit the model rebuilt from its metadata: {err}") from None
    return module.eval(), meta


class DataFileError(OSError):
    """An input file that is missing or cannot be read (truncated, damaged), named with its path."""


def _unreadable(path: Path, err: Exception) -> DataFileError:
    return DataFileError(f"cannot read {path}: {type(err).__name__}: {err}. The file is missing, truncated or "
                         f"damaged: rebuild it (dvc repro -f the stage that writes it) or restore it (dvc checkout)")


def open_dataset(path: str | os.PathLike, **kwargs: Any):
    """``xarray.open_dataset(path, **kwargs)`` whose failure names the file (h5py reports a truncated file
    as an OSError without its path)."""
    import xarray as xr

    path = Path(path)
    try:
        return xr.open_dataset(path, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise _unreadable(path, err) from err


def read_parquet(path: str | os.PathLike, **kwargs: Any):
    """``pandas.read_parquet(path, **kwargs)`` whose failure names the file."""
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    try:
        return pd.read_parquet(path, **kwargs)
    except (OSError, pa.ArrowException) as err:  # a truncated file is an ArrowInvalid
        raise _unreadable(path, err) from err


def _jsonable(obj: Any) -> Any:
    """Turn NumPy/torch scalars and paths into plain JSON values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
