"""Run one pipeline stage: validate its parameters, execute its notebook, record the run.

``dvc repro`` calls, for every stage,

    python -m lib.stage STAGE [option=value ...]

which

1. validates the stage's section of ``params.yaml`` (and the ``option=value``
   choices of a matrix or foreach stage) before any work, naming a bad key;
2. executes ``notebooks/<study>/<stage>.ipynb`` with papermill, injecting
   ``stage_params``: only the keys of the section the stage reads (its
   parameter model's fields, the same keys ``dvc.yaml`` lists), plus the options;
3. writes the rendered notebook and an HTML copy to ``results/<section>/``
   atomically: a failed run leaves ``<name>.failed.ipynb`` for reading and
   nothing that DVC would take as a finished output;
4. writes ``<name>.run.json``: git revision and dirty flag, parameters, seed,
   package versions, device and GPU model, world size, the determinism
   settings the run made, wall time and peak memory.

Stages are declared by the studies (``STAGES`` in ``lib/studies/<study>/__init__.py``)
and found here. ``python -m lib.stage --deps STAGE`` prints the parameter keys
and ``lib`` files a stage reads, as ``dvc.yaml`` must list them.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel

from lib import params as P
from lib.io import atomic_path, project_root, write_json, write_text

#: Environment variable naming the file where :func:`lib.runtime.seed_everything`
#: records the seeds and determinism settings a stage's run made.
RUN_STATE_ENV = "LIB_RUN_STATE"


@dataclass(frozen=True)
class Stage:
    """A notebook stage of one study.

    ``params`` is the part of the ``section`` the stage reads: its fields are the
    keys ``dvc.yaml`` lists for the stage, and the notebook receives nothing
    else. ``options`` are the choices of a matrix or foreach stage: option ->
    allowed values, or the name of a params.yaml section whose keys are allowed.
    With ``entry`` set, the section is a mapping of entries (e.g. cities) and
    that option picks the one entry the stage reads.
    """

    name: str
    study: str
    section: str
    params: type[BaseModel]
    options: Mapping[str, tuple[str, ...] | str] = field(default_factory=dict)
    entry: str | None = None

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.study}/{self.name}.ipynb"

    def output_name(self, chosen: Mapping[str, str]) -> str:
        return "_".join([self.name, *(chosen[k] for k in self.options)])

    def param_keys(self, entry_key: str = "${key}") -> list[str]:
        """The params.yaml keys the stage reads, as ``dvc.yaml`` lists them."""
        if self.entry is not None:
            return [f"{self.section}.{entry_key}"]
        return [f"{self.section}.{name}" for name in self.params.model_fields]

    def stage_values(self, section: Mapping, chosen: Mapping[str, str]) -> dict:
        """The stage's part of its (validated, JSON-typed) section."""
        if self.entry is not None:
            return dict(section[chosen[self.entry]])
        return {name: section[name] for name in self.params.model_fields}


def stages() -> dict[str, Stage]:
    """Every study's stages by name (``STAGES`` of each ``lib.studies`` package)."""
    found: dict[str, Stage] = {}
    for package in P.study_packages():
        for stage in getattr(importlib.import_module(package), "STAGES", ()):
            if stage.name in found:
                raise RuntimeError(f"stage {stage.name!r} is declared twice")
            found[stage.name] = stage
    return found


def get_stage(name: str) -> Stage:
    known = stages()
    if name not in known:
        raise P.ParameterError(f"unknown stage {name!r}; known: {sorted(known)}")
    return known[name]


PACKAGES = (
    "torch", "torchvision", "timm", "captum", "pytorch-metric-learning", "pot", "numpy",
    "scikit-learn", "xarray", "papermill", "dvc",
)


def parse_options(stage: Stage, args: list[str] | Mapping[str, str], document: Mapping | None = None) -> dict[str, str]:
    """``key=value`` stage options, checked against the stage's allowed values.

    An option whose allowed values name a section (e.g. ``"cities"``) takes any
    key of that section of ``document`` (params.yaml).
    """
    pairs = list(args.items()) if isinstance(args, Mapping) else [_split_option(a) for a in args]
    chosen = {}
    for key, value in pairs:
        if key not in stage.options:
            raise P.ParameterError(f"unknown stage option {key!r} of {stage.name}; known: {sorted(stage.options)}")
        allowed = stage.options[key]
        if isinstance(allowed, str):
            allowed = tuple((document or {}).get(allowed) or ())
        if value not in allowed:
            raise P.ParameterError(f"stage option {key}={value!r} must be one of {list(allowed)}")
        chosen[key] = value
    missing = set(stage.options) - set(chosen)
    if missing:
        raise P.ParameterError(f"stage options of {stage.name} missing: {sorted(missing)}")
    return chosen


def _split_option(arg: str) -> tuple[str, str]:
    key, sep, value = arg.partition("=")
    if not sep:
        raise P.ParameterError(f"stage option {arg!r} must be key=value")
    return key, value


def resolve(name: str, options: list[str] | Mapping[str, str], document: Mapping, where: str = "params.yaml"):
    """(stage, chosen options, the stage's validated parameters) from a params document.

    The whole section is validated first, so an unknown or ill-typed key fails
    whichever stage reads it; then the stage's own part.
    """
    stage = get_stage(name)
    if stage.section not in document:
        raise P.ParameterError(f"{where}: no section {stage.section!r}")
    section = P.validate(stage.section, document[stage.section]).model_dump(mode="json")
    chosen = parse_options(stage, options, document)
    cfg = P.validate(stage.section, stage.stage_values(section, chosen), stage.params)
    return stage, chosen, cfg


def smoke(name: str, options: Mapping[str, str] | None = None) -> dict:
    """The stage's parameters in the quick "smoke" profile (params.yaml + params.smoke.yaml),
    for a notebook run by hand; ``options`` as ``{"city": "river_city"}``.

    (A mapping rather than keywords: papermill reads the parameters cell line by
    line and takes ``f(x, key=value)`` for no assignment at all.)
    """
    root = project_root()
    document = P._read(root / "params.yaml")
    overlay = P._read(root / "params.smoke.yaml")
    merged = {s: P._merge(v, overlay.get(s, {})) if isinstance(v, dict) else v for s, v in document.items()}
    _, _, cfg = resolve(name, options or {}, merged, "params.yaml + params.smoke.yaml")
    return cfg.model_dump(mode="json")


def setup(name: str, stage_params: Mapping, **options: str) -> BaseModel:
    """A notebook's first call: validate its parameters, work from the compendium's root, seed.

    Returns the stage's validated parameters. Seeds Python, NumPy and torch with
    their ``seed`` (or the first of ``seeds``; deterministic algorithms on), so a notebook run by hand
    starts like the pipeline's run.
    """
    from lib.runtime import seed_everything

    stage = get_stage(name)
    for key, value in options.items():  # the values were checked by the runner or smoke()
        if key not in stage.options:
            raise P.ParameterError(f"unknown stage option {key!r} of {name}; known: {sorted(stage.options)}")
        if not isinstance(value, str):
            raise P.ParameterError(f"stage option {key} must be a string, got {value!r}")
    cfg = P.validate(stage.section, dict(stage_params), stage.params)
    os.chdir(project_root())
    seed = getattr(cfg, "seed", None)
    if seed is None and getattr(cfg, "seeds", None):
        seed = cfg.seeds[0]  # a study repeated over seeds reseeds before each repetition
    if seed is not None:
        seed_everything(seed)
    return cfg


def run_stage(name: str, args: list[str], root: Path, params_file: str = "params.yaml") -> Path:
    """Validate, execute and record one stage; return the rendered notebook's path."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    stage, chosen, cfg = resolve(name, args, P._read(root / params_file), params_file)
    out_dir = root / "results" / stage.section
    out_name = stage.output_name(chosen)
    rendered = out_dir / f"{out_name}.ipynb"
    failed = out_dir / f"{out_name}.failed.ipynb"
    out_dir.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)

    started = time.time()
    parameters = {"stage_params": cfg.model_dump(mode="json"), **chosen}  # JSON types survive papermill
    with tempfile.TemporaryDirectory(prefix="stage-") as tmp_dir, atomic_path(rendered) as tmp:
        state_file = Path(tmp_dir) / "run_state.jsonl"
        # The kernel (and torchrun) inherit these: where to record the seeds, which CPU kernels to use.
        from lib.runtime import portable_cpu_kernels  # torch: imported only when a stage runs

        kernel_env = {RUN_STATE_ENV: str(state_file), **portable_cpu_kernels()}
        previous = {key: os.environ.get(key) for key in kernel_env}
        os.environ.update(kernel_env)
        try:
            papermill.execute_notebook(
                str(root / stage.notebook),
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
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        run_state = _read_run_state(state_file)
    wall = time.time() - started

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(rendered, as_version=4))
    write_text(out_dir / f"{out_name}.html", body)
    write_json(out_dir / f"{out_name}.run.json",
               manifest(stage, cfg, chosen, root, wall, run_state, {k: v for k, v in kernel_env.items() if k != RUN_STATE_ENV}))
    return rendered


def _read_run_state(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def manifest(stage: Stage, cfg: BaseModel, options: Mapping[str, str], root: Path, wall_s: float,
             run_state: list[dict] | None = None, cpu_kernels: Mapping[str, str] | None = None) -> dict:
    """What is needed to tell two runs apart (README, 'How a stage runs').

    ``determinism`` is what the run itself set: every ``seed_everything`` call
    recorded by the kernel (and by torchrun's processes), with the flags torch
    reported right after it; empty when the stage seeded nothing. ``cpu_kernels``
    is the environment that pinned the kernel's CPU instruction sets
    (:func:`lib.runtime.portable_cpu_kernels`).
    """
    import torch

    from lib.runtime import select_device

    values = cfg.model_dump(mode="json")
    device = select_device(values.get("device", "auto"))
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the kernel process
    calls = run_state or []
    return {
        "stage": stage.name,
        "git": _git_state(root),
        "parameters": values,
        "options": dict(options),
        "seed": values.get("seed"),
        "seeds": values.get("seeds"),
        "packages": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "world_size": (values.get("train") or {}).get("world_size", 1),
        "determinism": {"seeds": [c["seed"] for c in calls], "settings": calls[-1]["flags"] if calls else None,
                        "cpu_kernels": dict(cpu_kernels or {})},
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


# ------------------------------------------------------------------ what a stage reads
def lib_dependencies(stage: Stage, root: Path) -> list[str]:
    """The ``lib`` files a stage's run executes, as ``dvc.yaml`` lists them.

    Starts from the runner (this module), the study's package and the
    notebook's imports, and follows every static ``import`` of ``lib`` modules
    (:func:`module_dependencies`); the registry's dynamic discovery of the
    other studies is not followed.
    """
    start = {"lib.stage", f"lib.studies.{stage.study}"} | _lib_imports(ast.parse(_notebook_source(root / stage.notebook)), root)
    return module_dependencies(start, root)


def module_dependencies(modules: set[str], root: Path) -> list[str]:
    """The files of ``modules`` and of every ``lib`` module they import, transitively (static imports,
    including package ``__init__`` files and imports inside functions), relative to ``root``."""
    seen: set[str] = set()
    todo = sorted(modules)
    while todo:
        module = todo.pop()
        path = _module_file(module, root)
        if path is None or module in seen:
            continue
        seen.add(module)
        parent = module.rpartition(".")[0]
        if parent:
            todo.append(parent)
        todo.extend(_lib_imports(ast.parse(path.read_text(encoding="utf-8")), root, module, path))
    return sorted(str(_module_file(m, root).relative_to(root)) for m in seen)


def _notebook_source(path: Path) -> str:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    lines = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            lines += [line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _module_file(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _lib_imports(tree: ast.AST, root: Path, module: str = "", path: Path | None = None) -> set[str]:
    """Modules of ``lib`` that a parsed file imports (``from lib.x import y`` counts ``lib.x.y`` if a module)."""
    package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "lib" or a.name.startswith("lib.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base != "lib" and not base.startswith("lib."):
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}", root) is not None}
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        print("stages:", ", ".join(sorted(stages())))
        return 0 if argv else 2
    if argv[0] == "--deps":
        if len(argv) != 2:
            print("usage: python -m lib.stage --deps STAGE", file=sys.stderr)
            return 2
        stage = get_stage(argv[1])
        print("params:", *(f"  - {k}" for k in stage.param_keys()), sep="\n")
        print("deps:", f"  - {stage.notebook}", *(f"  - {f}" for f in lib_dependencies(stage, project_root())), sep="\n")
        return 0
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
