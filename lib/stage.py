"""Run one pipeline stage: validate its parameters, execute its notebook, record the run.

``dvc repro`` calls, for every stage,

    python -m lib.stage STAGE [key=value ...]

which

1. validates the stage's section of ``params.yaml`` (and the ``key=value``
   options of a matrix stage) before any work, naming a bad key;
2. executes ``notebooks/<notebook>.ipynb`` with papermill, injecting the
   section as one dict parameter named after it (plus the options);
3. writes the rendered notebook and an HTML copy to ``results/<study>/``
   atomically: a failed run leaves ``<name>.failed.ipynb`` for reading and
   nothing that DVC would take as a finished output;
4. writes ``<name>.run.json``: git revision and dirty flag, parameters, seed,
   package versions, device and GPU model, world size, determinism flags,
   wall time and peak memory.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from lib import params as P
from lib.io import atomic_path, project_root, write_json, write_text


@dataclass(frozen=True)
class Stage:
    """A notebook stage: its notebook, its params.yaml section and its options."""

    notebook: str
    section: str
    options: dict[str, tuple[str, ...]]  # option -> allowed values; () = any key of the section

    def output_name(self, chosen: dict[str, str]) -> str:
        return "_".join([self.notebook, *(chosen[k] for k in self.options)])


STAGES: dict[str, Stage] = {
    "diml_train": Stage(
        "diml_train", "diml", {"loss": ("margin", "multi_similarity"), "objective": ("global", "structural")}
    ),
    "diml_eval": Stage("diml_eval", "diml", {}),
    "city": Stage("city", "cities", {"city": ()}),
    "maps": Stage("maps", "maps", {}),
    "concepts": Stage("concepts", "concepts", {"city": ("river_city", "coastal_city")}),
    "cocoa_train": Stage("cocoa_train", "cocoa", {}),
    "cocoa_eval": Stage("cocoa_eval", "cocoa", {}),
}

PACKAGES = (
    "torch", "torchvision", "timm", "captum", "pytorch-metric-learning", "pot", "numpy",
    "scikit-learn", "xarray", "papermill", "dvc",
)


def parse_options(stage: Stage, args: list[str], section: dict | None = None) -> dict[str, str]:
    """``key=value`` stage options, checked against the stage's allowed values.

    An option whose allowed values are ``()`` takes any key of the stage's
    params section (e.g. ``city=river_city`` for the ``cities`` section).
    """
    chosen = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise P.ParameterError(f"stage option {arg!r} must be key=value")
        if key not in stage.options:
            raise P.ParameterError(f"unknown stage option {key!r}; known: {sorted(stage.options)}")
        allowed = stage.options[key] or tuple(section or ())
        if value not in allowed:
            raise P.ParameterError(f"stage option {key}={value!r} must be one of {list(allowed)}")
        chosen[key] = value
    missing = set(stage.options) - set(chosen)
    if missing:
        raise P.ParameterError(f"stage options missing: {sorted(missing)}")
    return chosen


def run_stage(name: str, args: list[str], root: Path, params_file: str = "params.yaml") -> Path:
    """Validate, execute and record one stage; return the rendered notebook's path."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    if name not in STAGES:
        raise P.ParameterError(f"unknown stage {name!r}; known: {sorted(STAGES)}")
    stage = STAGES[name]
    section = P.load(stage.section, root / params_file)
    chosen = parse_options(stage, args, section.model_dump())

    out_dir = root / "results" / stage.section
    out_name = stage.output_name(chosen)
    rendered = out_dir / f"{out_name}.ipynb"
    failed = out_dir / f"{out_name}.failed.ipynb"
    out_dir.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)

    started = time.time()
    parameters = {stage.section: section.model_dump(mode="json"), **chosen}  # JSON types survive papermill
    with atomic_path(rendered) as tmp:
        try:
            papermill.execute_notebook(
                str(root / "notebooks" / f"{stage.notebook}.ipynb"),
                str(tmp),
                parameters=parameters,
                cwd=str(root),
                kernel_name="python3",
                progress_bar=False,
                log_output=True,
            )
        except BaseException:
            if tmp.exists():
                os.replace(tmp, failed)
            raise
    wall = time.time() - started

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(rendered, as_version=4))
    write_text(out_dir / f"{out_name}.html", body)
    write_json(out_dir / f"{out_name}.run.json", manifest(stage, section, chosen, root, wall))
    return rendered


def manifest(stage: Stage, section: P.Params, options: dict[str, str], root: Path, wall_s: float) -> dict:
    """What is needed to tell two runs apart (DESIGN.md, 'Flow of one stage')."""
    import torch

    from lib.runtime import select_device

    values = section.model_dump()
    for key, allowed in stage.options.items():
        if not allowed:  # a per-entry stage (e.g. one city): its entry is its parameters
            values = values[options[key]]
    device = select_device(values.get("device", "auto"))
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the kernel process
    return {
        "git": _git_state(root),
        "parameters": values,
        "options": options,
        "seed": values.get("seed"),
        "packages": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "world_size": (values.get("train") or {}).get("world_size", 1),
        # every notebook seeds through lib.runtime.seed_everything(seed, deterministic=True)
        "determinism": {"seeded_by": "lib.runtime.seed_everything", "deterministic_algorithms": True,
                        "cudnn_benchmark": False},
        "wall_time_s": round(wall_s, 2),
        "peak_memory_mib": round(peak_kib / 1024, 1),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }


def _git_state(root: Path) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"revision": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"revision": None, "dirty": None}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        print("stages:", ", ".join(sorted(STAGES)))
        return 0 if argv else 2
    from papermill.exceptions import PapermillExecutionError

    try:
        rendered = run_stage(argv[0], argv[1:], project_root())
    except P.ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PapermillExecutionError as err:
        print(
            f"error: stage {argv[0]} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"the executed notebook is in results/ as *.failed.ipynb",
            file=sys.stderr,
        )
        return 1
    print(f"rendered notebook: {rendered}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
