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

A failed or killed run removes its partial outputs (those in DVC's cache,
as DVC does before a rerun); a dead kernel is reported with the stage, its
peak memory and what to try; the temporary folder of a stage killed before
its clean-up (run state, kernel connection file) is removed by the next run.

Stages are declared by the studies (``STAGES`` in ``lib/studies/<study>/__init__.py``,
:class:`Stage`) and found here. ``python -m lib.stage --deps STAGE`` prints the
parameter keys and ``lib`` files a stage reads; ``python -m lib.stage sync``
writes ``dvc.yaml`` from the declarations and ``python -m lib.stage check``
validates the whole of params.yaml and dvc.yaml before a run (:mod:`lib.pipeline`).
A notebook run by hand (:func:`smoke`, :func:`setup`) works under ``scratch/``.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel

from lib import params as P
from lib.io import atomic_path, project_root, write_json, write_text

#: Environment variable naming the file where :func:`lib.runtime.seed_everything`
#: records the seeds and determinism settings a stage's run made.
RUN_STATE_ENV = "LIB_RUN_STATE"


@dataclass(frozen=True)
class Out:
    """One output of a stage, as ``dvc.yaml`` lists it.

    ``cache=False``: committed to git instead of DVC's cache (headline metrics,
    plot data: small files that runs are compared by); ``persist=True``: DVC
    leaves it in place before a rerun (a cache that outlives reruns).
    """

    path: str
    cache: bool = True
    persist: bool = False
    comment: str = ""


def committed(path: str) -> Out:
    """An output git tracks (``cache: false``) rather than DVC's cache."""
    return Out(path, cache=False)


@dataclass(frozen=True)
class Stage:
    """A notebook stage of one study, declared once: the runner and ``dvc.yaml`` both read it.

    ``params`` is the part of the ``section`` the stage reads: its fields are the
    keys ``dvc.yaml`` lists for the stage, and the notebook receives nothing
    else. ``options`` are the choices of a matrix or foreach stage: option ->
    allowed values, or the name of a params.yaml section whose keys are allowed.
    With ``entry`` set, the section is a mapping of entries (e.g. cities) and
    that option picks the one entry the stage reads.

    What ``python -m lib.stage sync`` writes into ``dvc.yaml`` (:mod:`lib.pipeline`):

    * ``each``: the option values the pipeline runs, per option: a tuple of
      values, or a params.yaml key holding a list (``"diml.losses"``) or a
      section whose keys are the values (``"cities"``). One option gives a
      ``foreach`` stage, several a ``matrix``.
    * ``deps``: the data the stage reads (the notebook and the ``lib`` files it
      imports are added from the code); ``outs``, ``metrics``, ``plots``: what
      it writes (its rendered notebook, HTML copy and run manifest are added).
      In these paths ``{option}`` stands for an option's value, and
      ``{section.key}`` for each value of a list in params.yaml, expanded when
      dvc.yaml is written.
    * ``runs``: another stage whose notebook this one runs with other option
      values (``diml_ablation`` runs ``diml_train``'s); its outputs are named
      after that stage.
    * ``comment``: a line or two above the stage in dvc.yaml.
    """

    name: str
    study: str
    section: str
    params: type[BaseModel]
    options: Mapping[str, tuple[str, ...] | str] = field(default_factory=dict)
    entry: str | None = None
    each: Mapping[str, tuple[str, ...] | str] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    outs: tuple[str | Out, ...] = ()
    metrics: tuple[str | Out, ...] = ()
    plots: tuple[str | Out, ...] = ()
    runs: str | None = None
    comment: str = ""

    def __post_init__(self) -> None:
        if set(self.each) != set(self.options):
            raise ValueError(f"stage {self.name}: each names {sorted(self.each)}, its options are {sorted(self.options)}")

    @property
    def runner(self) -> str:
        """The stage whose notebook runs and after which the outputs are named."""
        return self.runs or self.name

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.study}/{self.runner}.ipynb"

    def output_name(self, chosen: Mapping[str, str]) -> str:
        return "_".join([self.runner, *(chosen[k] for k in self.options)])

    def rendered(self, chosen: Mapping[str, str]) -> list[Out]:
        """What the runner writes for every stage: the rendered notebook, its HTML copy, the run manifest."""
        base = f"results/{self.section}/{self.output_name(chosen)}"
        return [Out(f"{base}.ipynb"), Out(f"{base}.html"), Out(f"{base}.run.json")]

    def written(self, chosen: Mapping[str, str], document: Mapping) -> list[Out]:
        """Every output of one run of the stage (its options ``chosen``), paths expanded."""
        declared = [as_out(o) for o in (*self.outs, *self.metrics, *self.plots)]
        expanded = [replace(o, path=p) for o in declared for p in expand_path(o.path, chosen, document)]
        return [*expanded, *self.rendered(chosen)]

    def inputs(self, chosen: Mapping[str, str], document: Mapping) -> list[str]:
        """The data one run of the stage reads (``deps``, expanded); the notebook and lib files aside."""
        return [p for d in self.deps for p in expand_path(d, chosen, document)]

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


def as_out(out: str | Out) -> Out:
    return out if isinstance(out, Out) else Out(out)


#: ``{city}`` (an option of the stage) or ``{maps.cities}`` (a list in params.yaml) in a declared path.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")


def expand_path(template: str, chosen: Mapping[str, str], document: Mapping) -> list[str]:
    """A declared path with its placeholders filled: options from ``chosen``, each value of a
    params.yaml list (``{musecl.cities}``) giving one path. An option missing from ``chosen``
    stays a placeholder (``dvc.yaml`` writes it in DVC's ``${item}`` syntax)."""
    match = next((m for m in PLACEHOLDER.finditer(template) if "." in m.group(1)), None)
    if match is None:
        return [PLACEHOLDER.sub(lambda m: chosen.get(m.group(1), m.group(0)), template)]
    values = param_value(document, match.group(1))
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise P.ParameterError(f"{match.group(1)}: expected a list of names to expand {template!r}, got {values!r}")
    head, tail = template[: match.start()], template[match.end():]
    return [p for v in values for p in expand_path(head + v + tail, chosen, document)]


def param_value(document: Mapping, key: str):
    """The value of a dotted params.yaml key, or a ParameterError naming it."""
    value: object = document
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise P.ParameterError(f"params.yaml has no key {key!r}")
        value = value[part]
    return value


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


class SmokeProfile(dict):
    """A stage's parameters in the smoke profile, as :func:`smoke` returns them.

    A plain ``dict`` to the notebook; its type tells :func:`setup` that the
    notebook runs by hand (papermill replaces it with the pipeline's values).
    """


def smoke(name: str, options: Mapping[str, str] | None = None) -> SmokeProfile:
    """The stage's parameters in the quick "smoke" profile (params.yaml + params.smoke.yaml),
    for a notebook run by hand; ``options`` as ``{"city": "river_city"}``.

    (A mapping rather than keywords: papermill reads the parameters cell line by
    line and takes ``f(x, key=value)`` for no assignment at all.)
    """
    _, _, cfg = resolve(name, options or {}, smoke_document(project_root()), "params.yaml + params.smoke.yaml")
    return SmokeProfile(cfg.model_dump(mode="json"))


def smoke_document(root: Path) -> dict:
    """params.yaml with params.smoke.yaml merged in, section by section."""
    document = P.read_params(root / "params.yaml")
    overlay = P.read_params(root / "params.smoke.yaml")
    return {s: P._merge(v, overlay.get(s, {})) if isinstance(v, dict) else v for s, v in document.items()}


#: Where a notebook run by hand works (git-ignored): its outputs never land on the pipeline's.
SCRATCH = "scratch"


def setup(name: str, stage_params: Mapping, **options: str) -> BaseModel:
    """A notebook's first call: validate its parameters, move to the folder it works in, seed.

    Returns the stage's validated parameters. Under the pipeline the notebook
    works in the compendium's root. Run by hand (``stage_params`` from
    :func:`smoke`), it works in ``scratch/`` instead (:func:`scratch_root`), so
    its smoke-sized outputs never replace the pipeline's datasets, models or
    the git-tracked metrics. Seeds Python, NumPy and torch with their ``seed``
    (or the first of ``seeds``; deterministic algorithms on), so a notebook run
    by hand starts like the pipeline's run.
    """
    from lib.runtime import seed_everything

    stage = get_stage(name)
    for key, value in options.items():  # the values were checked by the runner or smoke()
        if key not in stage.options:
            raise P.ParameterError(f"unknown stage option {key!r} of {name}; known: {sorted(stage.options)}")
        if not isinstance(value, str):
            raise P.ParameterError(f"stage option {key} must be a string, got {value!r}")
    cfg = P.validate(stage.section, dict(stage_params), stage.params)
    root = project_root()
    os.chdir(scratch_root(root, stage, options) if isinstance(stage_params, SmokeProfile) else root)
    seed = getattr(cfg, "seed", None)
    if seed is None and getattr(cfg, "seeds", None):
        seed = cfg.seeds[0]  # a study repeated over seeds reseeds before each repetition
    if seed is not None:
        seed_everything(seed)
    from lib.timing import record_reference  # under the runner: the reference workload, timed in this kernel

    record_reference(getattr(cfg, "device", "auto"))
    return cfg


def scratch_root(root: Path, stage: Stage, options: Mapping[str, str]) -> Path:
    """``scratch/`` under the compendium's root, made ready for a notebook run by hand.

    The notebooks read and write paths relative to the folder they work in, so
    here every output lands under ``scratch/``. The raw data is reached through
    a link (``scratch/data`` -> ``data``, read only); the stage's other inputs
    (datasets, models of upstream stages) are read from ``scratch/`` when an
    earlier hand run made them there, and otherwise copied once from the
    pipeline's outputs, so that nothing a hand run writes can reach them.
    """
    scratch = root / SCRATCH
    scratch.mkdir(exist_ok=True)
    data = scratch / "data"
    if not data.is_symlink() and not data.exists():
        data.symlink_to(Path("..") / "data", target_is_directory=True)
    copied = []
    for rel in stage.inputs(dict(options), smoke_document(root)):
        source, target = root / rel, scratch / rel
        if rel.split("/")[0] == "data" or target.exists() or not source.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)
        copied.append(rel)
    note = f" (copied from the pipeline's outputs: {', '.join(copied)})" if copied else ""
    print(f"run by hand: working in {SCRATCH}/, not over the pipeline's outputs{note}")
    return scratch


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block (the kernel and torchrun inherit them), then restore them."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_stage(name: str, args: list[str], root: Path, params_file: str = "params.yaml") -> Path:
    """Validate, execute and record one stage; return the rendered notebook's path."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from lib.timing import StageClock

    clock = StageClock.for_runner()  # from the process's start: the runner's own start-up counts
    document = P.read_params(root / params_file)
    stage, chosen, cfg = resolve(name, args, document, params_file)
    remove_stale_stage_folders()
    out_dir = root / "results" / stage.section
    out_name = stage.output_name(chosen)
    rendered = out_dir / f"{out_name}.ipynb"
    failed = out_dir / f"{out_name}.failed.ipynb"
    out_dir.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)

    started = time.time()
    parameters = {"stage_params": cfg.model_dump(mode="json"), **chosen}  # JSON types survive papermill
    # The folder's name carries this process's id, so the next run can tell a killed stage's folder from a live one's.
    with tempfile.TemporaryDirectory(prefix=f"{STAGE_FOLDER}{os.getpid()}-") as tmp_dir, atomic_path(rendered) as tmp:
        state_file = Path(tmp_dir) / "run_state.jsonl"
        # The kernel (and torchrun) inherit these: where to record the seeds, which CPU kernels to use.
        from lib.cpu import portable_cpu_kernels  # torch-free: the runner never imports torch

        kernel_env = {RUN_STATE_ENV: str(state_file), **portable_cpu_kernels()}
        # The kernel's connection file goes into the stage's folder too: removed with it, even after a kill.
        scoped_env = {**kernel_env, "JUPYTER_RUNTIME_DIR": str(Path(tmp_dir) / "runtime")}
        with environment(scoped_env):
            try:
                clock.mark("runner_startup")
                papermill.execute_notebook(
                    str(root / stage.notebook),
                    str(tmp),
                    parameters=parameters,
                    cwd=str(root),
                    kernel_name="python3",
                    progress_bar=False,
                    log_output=True,
                    # Every cell has finished and closed its files: stop the kernel at once rather than wait
                    # ~2-3 s for it to unload torch and the rest (lib.timing's budget: "kernel_stop").
                    shutdown_kernel="immediate",
                )
            except BaseException:
                if tmp.exists():
                    os.replace(tmp, failed)
                remove_partial_outputs(stage, chosen, document, root)
                raise
        run_state = _read_run_state(state_file)
    wall = time.time() - started
    clock.mark("notebook")

    notebook = nbformat.read(rendered, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(notebook)
    write_text(out_dir / f"{out_name}.html", body)
    clock.mark("html")
    cpu_kernels = {k: v for k, v in kernel_env.items() if k != RUN_STATE_ENV}
    write_json(out_dir / f"{out_name}.run.json",
               manifest(stage, cfg, chosen, root, wall, run_state, cpu_kernels, clock=clock, notebook=notebook))
    return rendered


#: Prefix of a running stage's temporary folder in the system's temp directory: ``stage-<pid>-<random>``.
STAGE_FOLDER = "stage-"


def remove_stale_stage_folders(temp_dir: str | Path | None = None) -> list[Path]:
    """Delete the temporary folders (run state, kernel connection files) of stages whose
    process no longer runs (killed before its own clean-up); a live stage's folder stays."""
    removed = []
    for folder in Path(temp_dir or tempfile.gettempdir()).glob(f"{STAGE_FOLDER}*-*"):
        pid = folder.name[len(STAGE_FOLDER):].partition("-")[0]
        if folder.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_partial_outputs(stage: Stage, chosen: Mapping[str, str], document: Mapping, root: Path) -> list[str]:
    """Delete what a failed run of the stage may have half written: its outputs in DVC's cache
    (datasets, weights, figures...), as DVC itself does before a rerun. Outputs git tracks and
    persistent ones (a cache that outlives reruns) stay; the previous run's outputs are in DVC's
    cache (``dvc checkout``)."""
    removed = []
    for out in stage.written(chosen, document):
        path = root / out.path
        if not out.cache or out.persist or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(out.path)
    return removed


def _read_run_state(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def manifest(stage: Stage, cfg: BaseModel, options: Mapping[str, str], root: Path, wall_s: float,
             run_state: list[dict] | None = None, cpu_kernels: Mapping[str, str] | None = None, *,
             clock=None, notebook: Mapping | None = None) -> dict:
    """What is needed to tell two runs apart (README, 'How a stage runs').

    ``determinism`` is what the run itself set: every ``seed_everything`` call
    recorded by the kernel (and by torchrun's processes), with the flags torch
    reported right after it; empty when the stage seeded nothing. ``cpu_kernels``
    is the environment that pinned the kernel's CPU instruction sets
    (:func:`lib.runtime.portable_cpu_kernels`).

    With the runner's ``clock`` (a :class:`lib.timing.StageClock` marked up to the
    HTML copy) and the rendered ``notebook``, ``wall_time_s`` is the whole stage,
    from the runner's process start to this record, and the record adds its
    ``time_budget`` (:func:`lib.timing.time_budget`) and the reference workload
    timed now, in this process, on the stage's device and the kernel's thread
    count and CPU kernels: ``reference_s`` and ``reference_units`` (wall time /
    reference seconds). Without a clock, ``wall_time_s`` is ``wall_s``.
    """
    from lib.timing import time_budget

    values = cfg.model_dump(mode="json")
    # what the kernel timed and found at setup() (lib.timing.record_reference); else timed here, with torch
    kernel = next((c for c in reversed(run_state or []) if "reference" in c), None) or _reference_here(values, cpu_kernels)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the kernel process
    calls = [c for c in run_state or [] if "seed" in c]  # the file also holds the phases' timings
    record = {
        "stage": stage.name,
        "git": _git_state(root),
        "parameters": values,
        "options": dict(options),
        "seed": values.get("seed"),
        "seeds": values.get("seeds"),
        "packages": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "device": kernel["device"],
        "gpu": kernel["gpu"],
        "world_size": (values.get("train") or {}).get("world_size", 1),
        "determinism": {"seeds": [c["seed"] for c in calls], "settings": calls[-1]["flags"] if calls else None,
                        "cpu_kernels": dict(cpu_kernels or {})},
        "wall_time_s": round(wall_s, 2),
        "peak_memory_mib": round(peak_kib / 1024, 1),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    if clock is None:
        return record
    clock.mark("manifest")
    record["wall_time_s"] = round(clock.elapsed, 2)
    record["time_budget"] = time_budget(clock, notebook or {}, run_state or [])
    reference = kernel["reference"]
    record["reference"] = reference
    record["reference_s"] = reference["seconds"]
    record["reference_units"] = round(clock.elapsed / reference["seconds"], 1)
    return record


def _reference_here(values: Mapping, cpu_kernels: Mapping[str, str] | None) -> dict:
    """:func:`lib.timing.reference_record`, timed in the runner: for a notebook that never reached ``setup()``'s
    end under the runner (none of the pipeline's)."""
    from lib.timing import reference_record

    with environment(cpu_kernels or {}):  # the kernel's instruction sets, if torch has not chosen yet
        return reference_record(values.get("device", "auto"))


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
    notebook = _import_statements(ast.parse(_notebook_source(root / stage.notebook)))
    start = {"lib.stage", f"lib.studies.{stage.study}"} | _lib_imports(notebook, root)
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
        stat = path.stat()
        todo.extend(_lib_imports(_file_import_statements(str(path), stat.st_mtime_ns, stat.st_size), root, module, path))
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


def _import_statements(tree: ast.AST) -> tuple[ast.Import | ast.ImportFrom, ...]:
    return tuple(node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom))


@functools.lru_cache(maxsize=None)
def _file_import_statements(path: str, mtime_ns: int, size: int) -> tuple[ast.Import | ast.ImportFrom, ...]:
    """The import statements of a file, parsed once per version of it (dvc.yaml's writer asks for
    the same modules once per stage)."""
    return _import_statements(ast.parse(Path(path).read_text(encoding="utf-8")))


def _lib_imports(statements, root: Path, module: str = "", path: Path | None = None) -> set[str]:
    """Modules of ``lib`` that a file's import statements name (``from lib.x import y`` counts
    ``lib.x.y`` if a module)."""
    package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in statements:
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
    if argv[0] in {"sync", "check"}:
        # Imported by name, not by an import statement: the dvc.yaml writer is no part of a
        # stage's run, so it stays out of every stage's deps and editing it reruns nothing.
        return importlib.import_module("lib.pipeline").main(argv)
    if argv[0] == "--deps":
        if len(argv) != 2:
            print("usage: python -m lib.stage --deps STAGE", file=sys.stderr)
            return 2
        try:
            stage = get_stage(argv[1])
        except P.ParameterError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("params:", *(f"  - {k}" for k in stage.param_keys()), sep="\n")
        print("deps:", f"  - {stage.notebook}", *(f"  - {f}" for f in lib_dependencies(stage, project_root())), sep="\n")
        return 0
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    label = " ".join(argv)
    try:
        rendered = run_stage(argv[0], argv[1:], project_root())
    except P.ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PapermillExecutionError as err:
        print(
            f"error: stage {label} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"the executed notebook is in results/ as *.failed.ipynb",
            file=sys.stderr,
        )
        return 1
    except DeadKernelError:
        print(f"error: {dead_kernel_message(label)}", file=sys.stderr)
        return 1
    print(f"rendered notebook: {rendered}")
    return 0


def dead_kernel_message(label: str) -> str:
    """What to say when a stage's kernel died: most often the system killed it for memory."""
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the kernel, reaped
    try:
        total = f" of {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        total = ""
    return (
        f"stage {label}: the notebook's kernel died (killed from outside, most often by the system for "
        f"want of memory; peak memory of the stage's processes {peak_mib / 1024:.2f} GiB{total}). "
        f"Try smaller batch sizes (e.g. the section's inference_batch_size) or the smoke profile's sizes in "
        f"params.yaml, one stage at a time (`dvc queue start -j 1`), or a machine with more memory. "
        f"Its partial outputs were removed; the executed part of the notebook is in results/ as *.failed.ipynb"
    )


if __name__ == "__main__":
    sys.exit(main())
