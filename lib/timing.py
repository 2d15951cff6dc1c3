"""Where a stage's time goes: phases, the notebook's cells, and a reference workload.

A stage's ``<name>.run.json`` carries a **time budget**: its wall time, from
the runner's process start to its manifest, split into parts that add up to it:

* ``runner_startup``: the interpreter, the runner's imports, finding the stage
  and validating its parameters;
* ``kernel_start``: papermill reading the notebook and starting the kernel, up
  to the first cell; ``kernel_stop``: after the last cell, the kernel's
  shut-down and papermill writing the rendered notebook;
* ``imports``: the cells up to and including the one that calls ``setup()``
  (the parameters cell, the injected parameters, the study's imports);
* ``data``, ``train``, ``evaluate``, ``write``: the time the kernel (and the
  processes it starts) spent inside :func:`phase` blocks of that name, which
  ``lib`` opens around its entry points (:func:`lib.training.fit` is one
  ``train`` phase; ``lib.io``'s writers are ``write``; encoders and probes are
  ``evaluate``). A phase nested in another counts for itself only, so phases
  never count a second twice;
* ``notebook_other``: the rest of the cells' time (papermill's per-cell
  durations), i.e. work no phase covers (figures, tables, study glue);
* ``html``: the HTML copy of the rendered notebook; ``manifest``: gathering
  the run's record (git, package versions).

A **reference workload** is timed in the runner right after the stage (the
same process that ran it, the same device and thread count as the kernel):
one forward and backward pass of a fixed small ResNet on a fixed batch,
the median of :data:`REFERENCE_REPEATS` after a warm-up. ``reference_units =
wall_time_s / reference_s`` does not move with the day's machine speed the
way seconds do (on a busy day both slow down), so two runs on different days,
or on two machines of one kind, can be compared in reference units.

``python -m lib.timing [results]`` prints the table of the last run from
every ``results/**/*.run.json``: each stage's seconds, reference units, share
of the run and its phases (``make bench``).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

#: The run-state file's variable (the same as :data:`lib.stage.RUN_STATE_ENV`): the runner names the file in
#: it for the kernel, where :func:`lib.runtime.seed_everything` records seeds and :func:`phase` records timings.
RUN_STATE_ENV = "LIB_RUN_STATE"

#: The phases ``lib`` opens, in the order the budget lists them.
PHASES = ("data", "train", "evaluate", "write")

#: The parts of a stage's wall time, in the order of a run.
BUDGET = ("runner_startup", "kernel_start", "imports", *PHASES, "notebook_other", "kernel_stop", "html", "manifest")

#: The parts that are overhead of running a notebook stage, not the stage's own work.
OVERHEAD = ("runner_startup", "kernel_start", "imports", "kernel_stop", "html", "manifest")

#: Timed repetitions of the reference workload (after one warm-up); their median is ``reference_s``.
REFERENCE_REPEATS = 7
#: ... unless the repetitions have taken this long (a slow or busy machine): then at least three count.
REFERENCE_BUDGET_S = 2.0

_open = threading.local()  # per thread: the child seconds of each open phase, innermost last


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time a block as the named phase of a stage run (also usable as a decorator: ``@phase("write")``).

    Appends ``{"phase": name, "seconds": s, "start": t, "pid": p}`` to the run-state file the stage runner names
    in ``LIB_RUN_STATE``, where ``s`` excludes the time of phases opened inside this one (so a checkpoint
    written during training counts as ``write``, not twice). Outside a stage run (no file named), and in the
    processes of a distributed run other than rank 0 (which run the same steps at the same time), it
    records nothing and costs a dictionary look-up.
    """
    if name not in PHASES:  # the budget adds up only over known parts
        raise ValueError(f"unknown phase {name!r}; phases: {list(PHASES)}")
    path = os.environ.get(RUN_STATE_ENV)
    if not path or os.environ.get("RANK", "0") != "0":
        yield
        return
    stack = _open.__dict__.setdefault("stack", [])
    start, began = time.perf_counter(), time.time()
    stack.append(0.0)
    try:
        yield
    finally:
        total = time.perf_counter() - start
        inner = stack.pop()
        if stack:
            stack[-1] += total
        line = json.dumps({"phase": name, "seconds": round(total - inner, 6), "start": began, "pid": os.getpid()})
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


# ------------------------------------------------------------------ the runner's clock
def process_start() -> float:
    """When this process started (epoch seconds), as the operating system reports it."""
    import psutil  # a dependency of ipykernel, which runs every stage

    return psutil.Process().create_time()


class StageClock:
    """Wall-clock spans of the stage runner, from ``start`` to each :meth:`mark`.

    ``StageClock.for_runner()`` starts at the process's start when this process
    is the runner (``python -m lib.stage``), so the interpreter and the imports
    count; called from another program (a test), it starts now.
    """

    def __init__(self, start: float | None = None):
        self.start = time.time() if start is None else start
        self.last = self.start
        self.spans: dict[str, float] = {}
        self.marks: dict[str, float] = {}

    @classmethod
    def for_runner(cls) -> StageClock:
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        return cls(process_start() if spec is not None and spec.name == "lib.stage" else None)

    def mark(self, name: str) -> float:
        """End the span ``name`` (from the previous mark) now; return its seconds."""
        now = time.time()
        self.spans[name] = self.spans.get(name, 0.0) + now - self.last
        self.marks[name] = self.last = now
        return self.spans[name]

    @property
    def elapsed(self) -> float:
        return self.last - self.start


# ------------------------------------------------------------------ the budget
def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def notebook_cells(notebook: Mapping) -> list[dict]:
    """The executed code cells of a papermill-rendered notebook: ``{"start", "end", "seconds", "setup"}`` each.

    Times come from papermill's cell metadata (``metadata.papermill.start_time``,
    ``end_time``, ``duration``); a cell papermill did not run is left out.
    """
    cells = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get("papermill", {})
        if not meta.get("start_time") or not meta.get("end_time"):
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        cells.append({"start": _timestamp(meta["start_time"]), "end": _timestamp(meta["end_time"]),
                      "seconds": float(meta.get("duration") or 0.0), "setup": "setup(" in source})
    return cells


def time_budget(clock: StageClock, notebook: Mapping, records: Iterable[Mapping]) -> dict[str, Any]:
    """The stage's wall time split into :data:`BUDGET`'s parts (seconds, rounded to 0.01 s).

    ``clock`` has the runner's marks ``"runner_startup"`` (when papermill was called),
    ``"notebook"`` (papermill returned), ``"html"`` and ``"manifest"``; ``notebook``
    is the rendered notebook (papermill's cell times); ``records`` are the run-state
    file's lines (those with a ``"phase"`` key count). The parts add up to the wall
    time: the cells' time not in a phase is ``notebook_other``, the time of the
    notebook span outside the cells is ``kernel_start`` (before the first) and
    ``kernel_stop`` (after the last).
    """
    for name in ("runner_startup", "notebook", "html", "manifest"):
        if name not in clock.spans:
            raise ValueError(f"the stage clock has no mark {name!r}; marks: {sorted(clock.spans)}")
    cells = notebook_cells(notebook)
    papermill_start = clock.marks["runner_startup"]
    papermill_end = clock.marks["notebook"]
    parts = dict.fromkeys(BUDGET, 0.0)
    parts["runner_startup"] = clock.spans["runner_startup"]
    parts["html"], parts["manifest"] = clock.spans["html"], clock.spans["manifest"]
    if cells:
        last_setup = max((i for i, c in enumerate(cells) if c["setup"]), default=0)
        imports_end = cells[last_setup]["end"]
        parts["kernel_start"] = max(cells[0]["start"] - papermill_start, 0.0)
        parts["kernel_stop"] = max(papermill_end - cells[-1]["end"], 0.0)
        imports = sum(c["seconds"] for c in cells[: last_setup + 1])
        work = sum(c["seconds"] for c in cells[last_setup + 1:])
        gaps = max(clock.spans["notebook"] - parts["kernel_start"] - parts["kernel_stop"] - imports - work, 0.0)
        work += gaps  # between cells: the kernel's round trips, counted with the work they separate
    else:  # papermill stopped before any cell: all of it is the kernel's
        parts["kernel_start"], imports_end, imports, work = clock.spans["notebook"], papermill_end, 0.0, 0.0
    in_imports = 0.0
    for record in records:
        if "phase" not in record:
            continue
        name = record["phase"]
        if name not in PHASES:
            raise ValueError(f"run state: unknown phase {name!r} (phases: {list(PHASES)})")
        if record["start"] < imports_end:
            in_imports += record["seconds"]
        parts[name] += record["seconds"]
    phased = sum(parts[p] for p in PHASES)
    parts["imports"] = max(imports - in_imports, 0.0)
    parts["notebook_other"] = max(work - (phased - in_imports), 0.0)
    return {
        "parts_s": {k: round(v, 2) for k, v in parts.items()},
        "overhead_s": round(sum(parts[k] for k in OVERHEAD), 2),
        "cells_s": [round(c["seconds"], 2) for c in cells],
    }


# ------------------------------------------------------------------ the reference workload
def _reference_model():
    """A ResNet of four stages of one basic block (16-128 channels) and a 10-way linear head, fixed weights."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            )
            self.skip = (nn.Identity() if stride == 1 and cin == cout
                         else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    w = 16
    with torch.random.fork_rng(devices=[]):  # fixed weights, and the caller's random stream untouched
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2), Block(4 * w, 8 * w, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, 10),
        )


#: What :func:`reference_workload` times, as the manifest names it.
REFERENCE_WORKLOAD = "resnet-10 (16-128 channels), forward + backward, batch 32 x 3 x 32 x 32, cross-entropy"


def reference_workload(device: str = "cpu", threads: int | None = None, repeats: int = REFERENCE_REPEATS) -> dict:
    """Time the fixed workload: the median seconds of ``repeats`` forward + backward passes after a warm-up
    (fewer, at least three, once they have taken :data:`REFERENCE_BUDGET_S`: a busy machine's stages wait less).

    Runs through :mod:`lib.runtime`'s policy for ``device`` (channels-last; bf16
    autocast on CUDA), on ``threads`` CPU threads if given (the kernel's count),
    restored afterwards.
    """
    import torch
    import torch.nn.functional as F

    from lib.runtime import runtime

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rt = runtime(device)
    model = rt.prepare(_reference_model())
    generator = torch.Generator().manual_seed(0)
    x = rt.batch(torch.randn(32, 3, 32, 32, generator=generator))
    y = torch.arange(32, device=rt.device) % 10
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    times: list[float] = []
    try:
        for i in range(1 + repeats):
            if i > 3 and sum(times[1:]) > REFERENCE_BUDGET_S:
                break
            start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            with rt.autocast():
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            if rt.device.type == "cuda":
                torch.cuda.synchronize(rt.device)
            times.append(time.perf_counter() - start)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    return {"seconds": round(statistics.median(times[1:]), 4), "spread_s": [round(min(times[1:]), 4),
            round(max(times[1:]), 4)], "repeats": len(times) - 1, "device": str(rt.device), "threads": used,
            "workload": REFERENCE_WORKLOAD}


def reference_record(device: str = "auto", threads: int | None = None) -> dict:
    """``{"reference": ..., "device": ..., "gpu": ...}``: :func:`reference_workload` timed on the device a
    ``device`` preference (as ``params.yaml``'s) selects, with that device and its GPU's name (None on a CPU)."""
    import torch

    from lib.runtime import select_device

    chosen = select_device(device)
    return {"reference": reference_workload(str(chosen), threads), "device": str(chosen),
            "gpu": torch.cuda.get_device_name(chosen) if chosen.type == "cuda" else None}


def record_reference(device: str = "auto") -> dict | None:
    """In a stage's kernel: :func:`reference_record` with the kernel's threads and CPU kernels, appended to the
    run-state file the runner names, for the run manifest: the runner then needs no torch of its own. Outside
    a stage run (no file named) it does nothing and returns None."""
    path = os.environ.get(RUN_STATE_ENV)
    if not path or os.environ.get("RANK", "0") != "0":
        return None
    import torch

    record = reference_record(device, torch.get_num_threads())
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return record


# ------------------------------------------------------------------ the pipeline's table
def read_manifests(results: str | os.PathLike) -> list[tuple[str, dict]]:
    """(output name, manifest) of every ``*.run.json`` under ``results``, in the order of their wall-clock end."""
    found = []
    for path in sorted(Path(results).rglob("*.run.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a JSON manifest ({err})") from None
        found.append((path.name.removesuffix(".run.json"), record, path.stat().st_mtime))
    return [(name, record) for name, record, _ in sorted(found, key=lambda f: f[2])]


def pipeline_table(manifests: Sequence[tuple[str, Mapping]]) -> str:
    """The run's stages as a text table: seconds, reference units, share of the run, the largest parts.

    Manifests without a time budget (written before the runner recorded one) are
    listed with their wall time and no parts. The last lines: the total, the
    share of overhead (start-up, kernel, imports, HTML, manifest) and the
    reference workload's median seconds (the day's machine speed).
    """
    if not manifests:
        return "no stage manifests (results/**/*.run.json): run the pipeline first (make repro)"
    total = sum(float(m.get("wall_time_s") or 0.0) for _, m in manifests) or 1.0
    width = max(len("stage"), *(len(name) for name, _ in manifests))
    lines = [f"{'stage':<{width}}  {'seconds':>8}  {'ref units':>9}  {'share':>6}  parts (seconds)"]
    overhead = units = 0.0
    references = []
    for name, m in manifests:
        wall = float(m.get("wall_time_s") or 0.0)
        budget = m.get("time_budget") or {}
        parts = budget.get("parts_s") or {}
        overhead += float(budget.get("overhead_s") or 0.0)
        ref = m.get("reference_units")
        units += float(ref or 0.0)
        if m.get("reference_s"):
            references.append(float(m["reference_s"]))
        shown = ", ".join(f"{k} {v:.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        ref_text = f"{ref:9.0f}" if ref is not None else f"{'-':>9}"
        lines.append(f"{name:<{width}}  {wall:8.1f}  {ref_text}  {wall / total:6.1%}  {shown or '(no time budget)'}")
    lines.append(f"{'total':<{width}}  {total:8.1f}  {units:9.0f}  {1:6.1%}  ({total / 60:.1f} min in stages)")
    if overhead:
        lines.append(f"overhead (runner start-up, kernel start/stop, imports, HTML, manifest): {overhead:.1f} s, "
                     f"{overhead / total:.1%} of the stages' time")
    if references:
        lines.append(f"reference workload: median {statistics.median(references) * 1e3:.0f} ms over the stages "
                     f"(from {min(references) * 1e3:.0f} to {max(references) * 1e3:.0f} ms)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0] in {"-h", "--help"}):
        print("usage: python -m lib.timing [RESULTS_FOLDER]  (default: results)", file=sys.stderr)
        return 2
    print(pipeline_table(read_manifests(argv[0] if argv else "results")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
