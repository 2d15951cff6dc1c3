"""The pipeline as data: ``dvc.yaml`` written from the studies' declarations, and checked.

``python -m lib.stage sync`` writes ``dvc.yaml`` from what the code declares:

* every notebook stage of every study (``STAGES`` in ``lib/studies/<study>/__init__.py``,
  :class:`lib.stage.Stage`): its ``foreach``/``matrix``, its command, the
  params.yaml keys it reads (its parameter model's fields), its deps (the
  notebook, the data it declares and every ``lib`` file the notebook imports,
  :func:`lib.stage.lib_dependencies`) and its outputs, with the rendered
  notebook, its HTML copy and the run manifest ``<name>.run.json`` as cached
  outputs, so that ``git clone`` + ``dvc pull`` restores them and leaves
  ``dvc status`` clean;
* the paper (the results each study's section reads, ``PAPER``, and every run
  manifest, which its compute section lists) and the front page (every headline ``metrics.json``, every run manifest and the folders of
  each study's ``FIGURES``), declared here; a ``*`` in ``PAPER`` or ``FIGURES``
  stands for each option value of the study's stages (``results/concepts/*/summary.json``);
* the data plots ``dvc plots`` draws (each study's ``PLOTS``).

Stages are written in the order their data flows (a stage after those whose
outputs it reads; otherwise in the studies' order), a blank line between two,
so that running ``sync`` twice gives the same bytes. ``python -m lib.stage check``
validates the whole of params.yaml (every section, every option value the
pipeline runs, every input some stage or the raw data provides) and that
``dvc.yaml`` is current, before ``dvc repro`` removes any output.

The stage runner does not import this module, so editing it reruns no stage.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import itertools
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from lib import params as P
from lib.io import project_root, write_text
from lib.stage import (Out, Stage, as_out, expand_path, lib_dependencies, module_dependencies, param_value, resolve,
                       stages)

HEADER = """\
# Written by `python -m lib.stage sync` from the code: each study declares its
# stages in lib/studies/<study>/__init__.py (STAGES; PAPER: what the paper reads;
# PLOTS: the data plots), lib/pipeline.py the paper and the front page. Edit
# those, not this file, and run the command again (tests/test_stage.py fails
# when this file drifts from the code; `python -m lib.stage check` too).
# A notebook stage runs `python -m lib.stage STAGE [option=value]`, lists only
# the params.yaml keys it reads and the lib files its notebook imports, and
# caches its rendered notebook, HTML copy and run manifest (*.run.json).
"""

PLOTS_COMMENT = """\
# Plots as data (written by the evaluation stages, committed to git): `dvc plots
# show` draws them, `dvc plots diff` overlays two runs. The PNG figures under
# results/*/figures stay for the notebooks and the paper.
"""


@dataclass(frozen=True)
class Command:
    """A stage that runs a plain command rather than a notebook. Its deps: ``sources``
    (files a person writes), the ``lib`` files of ``modules`` and of what they
    import, and ``reads`` (what other stages write)."""

    name: str
    cmd: str
    sources: tuple[str, ...]
    modules: tuple[str, ...]
    reads: tuple[str, ...]
    outs: tuple[str, ...]


class Flow(list):
    """A list written in YAML's flow style, ``[a, b]``."""


@dataclass(frozen=True)
class Commented:
    """A list item with a comment line above it."""

    value: object
    comment: str


# ------------------------------------------------------------------ the declarations, expanded
def instances(stage: Stage, document: Mapping) -> list[dict[str, str]]:
    """Every choice of option values the pipeline runs the stage with (one empty choice
    for a stage without options), in DVC's order."""
    values = [_each_values(stage, option, document) for option in stage.each]
    return [dict(zip(stage.each, combo)) for combo in itertools.product(*values)]


def _each_values(stage: Stage, option: str, document: Mapping) -> list[str]:
    source = stage.each[option]
    if not isinstance(source, str):
        return list(source)
    value = param_value(document, source)
    if isinstance(value, Mapping):
        return list(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise P.ParameterError(f"{source}: stage {stage.name} runs once per value, "
                           f"expected a list or a section, got {value!r}")


def instance_name(stage: Stage, chosen: Mapping[str, str]) -> str:
    """The stage's name as DVC shows it: ``city@river_city``, ``diml_train@margin-global``."""
    return stage.name + ("@" + "-".join(chosen.values()) if chosen else "")


def ordered_stages(document: Mapping) -> list[Stage]:
    """The declared stages, each after every stage whose outputs it reads; of the stages ready,
    one of the study just written if there is one (a study's stages stay together), else the first declared."""
    declared = list(stages().values())
    outs = {s.name: [o.path for c in instances(s, document) for o in s.written(c, document)] for s in declared}
    reads = {s.name: [d for c in instances(s, document) for d in s.inputs(c, document)] for s in declared}
    needs = {s.name: {t.name for t in declared if t is not s and any(_overlap(d, o) for d in reads[s.name] for o in outs[t.name])}
             for s in declared}
    order: list[Stage] = []
    while len(order) < len(declared):
        done = {s.name for s in order}
        ready = [s for s in declared if s.name not in done and needs[s.name] <= done]
        if not ready:
            raise RuntimeError(f"the stages {sorted(set(needs) - done)} read each other's outputs in a cycle")
        same = [s for s in ready if order and s.study == order[-1].study]
        order.append((same or ready)[0])
    return order


def _overlap(a: str, b: str) -> bool:
    """Whether two paths are one, or one holds the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _study_modules() -> dict[str, object]:
    return {package.rpartition(".")[2]: importlib.import_module(package) for package in P.study_packages()}


def _study_paths(patterns: list[str], study: str, document: Mapping, outs: list[str], what: str) -> list[str]:
    """A study's result paths, ``*`` standing for each option value of its stages, kept where
    a stage writes them (the path is, or lies in, an output); a pattern that names nothing
    a stage writes is an error."""
    values = list(dict.fromkeys(v for s in stages().values() if s.study == study
                                for c in instances(s, document) for v in c.values()))
    found = []
    for pattern in patterns:
        candidates = [pattern]
        while any("*" in c for c in candidates):
            candidates = [c.replace("*", v, 1) if "*" in c else c for c in candidates for v in values]
        made = [c for c in dict.fromkeys(candidates) if any(c == o or c.startswith(o + "/") for o in outs)]
        if not made:
            raise RuntimeError(f"{what} of study {study}: {pattern} is written by no stage")
        found += made
    return list(dict.fromkeys(found))


def commands(document: Mapping, notebook_stages: list[Stage]) -> list[Command]:
    """The paper and the front page, which read what the notebook stages write."""
    runs = [(s, c) for s in notebook_stages for c in instances(s, document)]
    written = [o.path for s, c in runs for o in s.written(c, document)]
    studies = _study_modules()
    paper_reads = [p for name, module in studies.items()
                   for p in _study_paths(list(getattr(module, "PAPER", ())), name, document, written, "PAPER")]
    figures = [p for name, module in studies.items()
               for p in _study_paths([f"results/{Path(f).parent.as_posix()}" for f in getattr(module, "FIGURES", ())],
                                     name, document, written, "FIGURES")]
    metrics = [p for s, c in runs for m in s.metrics for p in expand_path(as_out(m).path, c, document)]
    manifests = [p for p in written if p.endswith(".run.json")]
    summaries = [f"{package}.summary" for package in P.study_packages()
                 if importlib.util.find_spec(f"{package}.summary") is not None]
    return [
        # The paper's compute section reads every run manifest (lib.paper names them to Typst).
        Command("paper", "python -m lib.paper paper/paper.typ paper/paper.pdf",
                ("paper/paper.typ", "paper/common.typ", "paper/sections", "paper/refs.yml"), ("lib.paper",),
                (*paper_reads, *manifests), ("paper/paper.pdf",)),
        # The front page reads each study's headlines from its summary.json (``headlines`` of its summary module).
        Command("index", "python -m lib.index results/index.html", (), ("lib.index", *P.study_packages(), *summaries),
                (*metrics, *[p for p in paper_reads if p.endswith("summary.json")], *manifests, *figures,
                 "paper/paper.pdf"), ("results/index.html",)),
    ]


def data_plots() -> list[dict]:
    """The top-level ``plots`` of dvc.yaml: every study's ``PLOTS``."""
    return [dict(plot) for module in _study_modules().values() for plot in getattr(module, "PLOTS", ())]


# ------------------------------------------------------------------ dvc.yaml's text
def _reference(stage: Stage, option: str, document: Mapping) -> str:
    """How dvc.yaml's templating names an option's value inside the stage."""
    if len(stage.each) > 1:
        return "${item.%s}" % option
    source = stage.each[option]
    if isinstance(source, str) and isinstance(param_value(document, source), Mapping):
        return "${key}"
    return "${item}"


def _templated(path: str, stage: Stage, document: Mapping) -> list[str]:
    return expand_path(path, {o: _reference(stage, o, document) for o in stage.each}, document)


def _out_entries(outs, stage: Stage, document: Mapping) -> list:
    entries = []
    for out in map(as_out, outs):
        flags = {k: v for k, v in (("cache", out.cache), ("persist", out.persist)) if v != getattr(Out, k)}
        for path in _templated(out.path, stage, document):
            entry = {path: flags} if flags else path
            entries.append(Commented(entry, out.comment) if out.comment else entry)
    return entries


def stage_entry(stage: Stage, root: Path, document: Mapping) -> dict:
    """One notebook stage as dvc.yaml writes it."""
    refs = {o: _reference(stage, o, document) for o in stage.each}
    placeholder = {o: "{%s}" % o for o in stage.each}
    rendered = [o.path for o in stage.rendered(placeholder)]
    body: dict = {"cmd": " ".join(["python -m lib.stage", stage.runner, *(f"{o}={refs[o]}" for o in stage.each)])}
    body["params"] = stage.param_keys(refs.get(stage.entry, "${key}"))
    body["deps"] = [stage.notebook, *(p for d in stage.deps for p in _templated(d, stage, document)),
                    *lib_dependencies(stage, root)]
    body["outs"] = _out_entries((*stage.outs, *rendered), stage, document)
    if stage.metrics:
        body["metrics"] = _out_entries(stage.metrics, stage, document)
    if stage.plots:
        body["plots"] = _out_entries(stage.plots, stage, document)
    if not stage.each:
        return body
    sources = {o: "${%s}" % s if isinstance(s, str) else Flow(s) for o, s in stage.each.items()}
    if len(stage.each) == 1:
        return {"foreach": next(iter(sources.values())), "do": body}
    return {"matrix": sources, **body}


def command_entry(command: Command, root: Path) -> dict:
    deps = [*command.sources, *module_dependencies(set(command.modules), root), *command.reads]
    return {"cmd": command.cmd, "deps": deps, "outs": list(command.outs)}


def dvc_yaml(root: Path, document: Mapping | None = None) -> str:
    """The text of dvc.yaml for the code and params.yaml under ``root``."""
    document = P.read_params(root / "params.yaml") if document is None else document
    notebook_stages = ordered_stages(document)
    blocks, data = [], {"stages": {}}
    for stage in notebook_stages:
        entry = stage_entry(stage, root, document)
        data["stages"][stage.name] = entry
        comment = "".join(f"  # {line}\n" if line else "  #\n" for line in stage.comment.splitlines())
        blocks.append(comment + _emit({stage.name: entry}, 2))
    for command in commands(document, notebook_stages):
        entry = command_entry(command, root)
        data["stages"][command.name] = entry
        blocks.append(_emit({command.name: entry}, 2))
    text = HEADER + "stages:\n" + "\n".join(blocks)
    plots = data_plots()
    if plots:
        data["plots"] = plots
        text += "\n" + PLOTS_COMMENT + _emit({"plots": plots}, 0, flow=True)
    if yaml.safe_load(text) != _plain(data):  # the writer below is small; make sure it wrote what was meant
        raise RuntimeError("dvc.yaml's text does not parse back to its stages: a value needs quoting")
    return text


def _emit(mapping: Mapping, indent: int, flow: bool = False) -> str:
    return "".join(line + "\n" for line in _mapping_lines(mapping, indent, flow))


def _mapping_lines(mapping: Mapping, indent: int, flow: bool) -> list[str]:
    pad, lines = " " * indent, []
    for key, value in mapping.items():
        head = f"{pad}{_scalar(key)}:"
        if isinstance(value, Mapping):
            lines += [head, *_mapping_lines(value, indent + 2, flow)]
        elif isinstance(value, list) and (flow or isinstance(value, Flow)) and not any(
                isinstance(v, Mapping | list | Commented) for v in value):  # flow style for lists of scalars only
            lines.append(f"{head} [{', '.join(_scalar(v, in_flow=True) for v in value)}]")
        elif isinstance(value, list):
            lines += [head, *_sequence_lines(value, indent + 2, flow)]
        else:
            lines.append(f"{head} {_scalar(value)}")
    return lines


def _sequence_lines(items: list, indent: int, flow: bool) -> list[str]:
    pad, lines = " " * indent, []
    for item in items:
        if isinstance(item, Commented):
            lines.append(f"{pad}# {item.comment}")
            item = item.value
        if isinstance(item, Mapping):
            inner = _mapping_lines(item, indent + 2, flow)
            lines += [f"{pad}- {inner[0].lstrip()}", *inner[1:]]
        else:
            lines.append(f"{pad}- {_scalar(item)}")
    return lines


@functools.lru_cache(maxsize=None)
def _scalar(value: object, in_flow: bool = False) -> str:
    """A YAML scalar: plain where it reads back as itself, else JSON's double-quoted form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) or value is None:
        return "null" if value is None else repr(value)
    if not isinstance(value, str):
        raise TypeError(f"not a YAML scalar: {value!r}")
    probe = f"k: [{value}]" if in_flow else f"k: {value}"
    try:
        plain = yaml.safe_load(probe) == {"k": [value] if in_flow else value}
    except yaml.YAMLError:
        plain = False
    return value if plain and value == value.strip() and "#" not in value else json.dumps(value)


def _plain(value):
    """The data without the writer's markers, as yaml.safe_load gives it back."""
    if isinstance(value, Commented):
        return _plain(value.value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------ sync and check
def sync(root: Path) -> bool:
    """Write dvc.yaml from the code; whether it changed."""
    path = root / "dvc.yaml"
    text = dvc_yaml(root)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    write_text(path, text)
    return True


def drift(root: Path, document: Mapping | None = None) -> str:
    """A unified diff from dvc.yaml on disk to what sync would write ('' when current)."""
    path = root / "dvc.yaml"
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    wanted = dvc_yaml(root, document)
    if current == wanted:
        return ""
    return "".join(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), "dvc.yaml", "sync", n=1))


def check(root: Path) -> list[str]:
    """Every problem that would stop the pipeline, found before it runs: params.yaml's
    sections, the option values each stage runs with, inputs nothing provides, dvc.yaml drift."""
    try:
        document = P.read_params(root / "params.yaml")
    except P.ParameterError as err:
        return [str(err)]
    problems = P.validate_document(document)
    if problems:
        return problems  # the option values below come from these sections
    declared = list(stages().values())
    runs = []
    for stage in declared:
        try:
            runs += [(stage, chosen) for chosen in instances(stage, document)]
        except P.ParameterError as err:
            problems.append(f"stage {stage.name}: {err}")
    for stage, chosen in runs:
        try:
            resolve(stage.name, chosen, document)
        except P.ParameterError as err:
            problems.append(f"stage {instance_name(stage, chosen)}: {err}")
    if problems:
        return problems
    outs = [o.path for stage, chosen in runs for o in stage.written(chosen, document)]
    for stage, chosen in runs:
        for path in stage.inputs(chosen, document):
            if not (root / path).exists() and not any(_overlap(path, o) for o in outs):
                problems.append(f"stage {instance_name(stage, chosen)} reads {path}, which no stage writes and which "
                                f"does not exist (a name missing from params.yaml's lists or sections?)")
    if not problems and drift(root, document):
        problems.append("dvc.yaml is out of date with the code or params.yaml: run python -m lib.stage sync")
    return problems


def main(argv: list[str]) -> int:
    """``sync``: write dvc.yaml; ``check``: validate params.yaml and dvc.yaml (exit 2 on a problem)."""
    command, rest = argv[0], argv[1:]
    if command not in {"sync", "check"} or rest:
        print("usage: python -m lib.stage sync | check", file=sys.stderr)
        return 2
    root = project_root()
    try:
        if command == "sync":
            print("dvc.yaml " + ("written" if sync(root) else "was up to date"))
            return 0
        problems = check(root)
    except P.ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if problems:
        print("error: " + "\n".join(problems), file=sys.stderr)
        return 2
    document = P.read_params(root / "params.yaml")
    n = sum(len(instances(stage, document)) for stage in stages().values())
    print(f"params.yaml and dvc.yaml: checked ({n} stage runs)")
    return 0
