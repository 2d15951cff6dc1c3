"""Stage parameters as data: pydantic models, validated before any work.

``params.yaml`` holds the pipeline's defaults, one section per study; each
study declares its sections' models in ``lib/studies/<study>/params.py``,
built on the bases here (:class:`Seeded`, :class:`RunParams`, :class:`Repeated`,
:class:`Optimiser`), and each stage reads only the keys its own model names. Unknown keys and ill-typed
values fail at once with a :class:`ParameterError` that names the key, e.g.
``diml.train.epochs: expected an integer, got 'ten'``.

Parameter files are read as YAML 1.2 reads numbers (:class:`ParamsLoader`): DVC
writes ``dvc exp run -S lr=1e-5`` as ``1e-05``, a float in YAML 1.2 but a string
to PyYAML's YAML 1.1 rules.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

import yaml
from lib.io import project_root
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ParameterError(ValueError):
    """A parameter file or section that does not fit its model."""


class Params(BaseModel):
    """Base of every parameter model: no unknown keys, no silent coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Seeded(Params):
    """Base of a stage's parameters: the seed of every random choice it makes."""

    seed: int


#: The device names a stage accepts (:func:`lib.runtime.select_device`): checked with the other
#: parameters, so a typo fails before any work rather than when the notebook first asks torch.
DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


class OnDevice(Params):
    """Base of a stage that runs a model: the device it runs on."""

    device: str = Field(description="auto = CUDA > MPS > CPU, or cpu, cuda, cuda:N, mps")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps, got {value!r}")
        return value


class RunParams(OnDevice, Seeded):
    """Base of a training or evaluation stage's parameters: one seed and the device."""


class Repeated(OnDevice):
    """Base of a study trained several times: one repetition per seed, every seed a model.

    Tables report the mean over seeds with a 95 % interval and compare variants
    paired by seed (:mod:`lib.eval.intervals`); one seed gives means without intervals.
    """

    seeds: list[int] = Field(min_length=1, description="one trained model (and its evaluation draws) per seed")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
        return seeds


class Optimiser(Params):
    """AdamW and the length of a training run; studies add their batch sizes and loss settings."""

    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap on steps per epoch (smoke runs)")


def study_packages() -> list[str]:
    """The study packages, ``lib.studies.<name>``, found on disk (each a folder with ``__init__.py``)."""
    import lib.studies

    return sorted(f"lib.studies.{m.name}" for m in pkgutil.iter_modules(lib.studies.__path__) if m.ispkg)


def sections() -> dict[str, type[BaseModel]]:
    """params.yaml section -> its model, from every study package's ``SECTIONS``."""
    found: dict[str, type[BaseModel]] = {}
    for package in study_packages():
        for name, model in getattr(importlib.import_module(package), "SECTIONS", {}).items():
            if name in found:
                raise RuntimeError(f"parameter section {name!r} is declared by two studies")
            found[name] = model
    return found


def section_model(section: str) -> type[Params]:
    """The parameter model of a params.yaml section."""
    known = sections()
    if section not in known:
        raise ParameterError(f"unknown parameter section {section!r}; known: {sorted(known)}")
    return known[section]


def validate(section: str, values: Any, model: type[BaseModel] | None = None) -> Params:
    """Validate one section's values against its model (or ``model``, e.g. one stage's
    part of the section); raise ParameterError naming the keys."""
    model = model or section_model(section)
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise ParameterError(_explain(section, model, err)) from None


def validate_document(document: dict, where: str = "params.yaml") -> list[str]:
    """Every problem of a whole parameter document: each declared section validated, a
    section missing or unknown named. Empty when the document is valid."""
    known = sections()
    problems = [f"{where}: unknown section {name!r}; known: {sorted(known)}" for name in document if name not in known]
    for name in known:
        if name not in document:
            problems.append(f"{where}: no section {name!r}")
            continue
        try:
            validate(name, document[name])
        except ParameterError as err:
            problems.append(str(err))
    return problems


def load(section: str, path: str | Path = "params.yaml") -> Params:
    """Read ``path`` and validate its ``section``."""
    path = Path(path)
    document = _read(path)
    if section not in document:
        raise ParameterError(f"{path}: no section {section!r}")
    return validate(section, document[section])


def profile(section: str, name: str, root: str | Path | None = None) -> Params:
    """``section`` of params.yaml overridden by ``params.<name>.yaml`` (e.g. the quick "smoke" profile).

    ``root`` defaults to the compendium's root folder (found from the working directory).
    """
    root = Path(root) if root is not None else project_root()
    base = _read(root / "params.yaml")
    overlay = _read(root / f"params.{name}.yaml")
    return validate(section, _merge(base.get(section, {}), overlay.get(section, {})))


def _merge(base: dict, overlay: dict) -> dict:
    """Deep merge: overlay's values win, nested dicts merge key by key."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading floats as YAML 1.2 does.

    YAML 1.1 (PyYAML) takes a float only with a dot and a signed exponent, so
    ``1e-05`` (how DVC writes ``-S key=1e-5``) and ``2e-3`` load as strings;
    YAML 1.2's core schema, which DVC follows, reads both as numbers. The
    resolver added here accepts a mantissa with or without a dot and an
    exponent with or without a sign; integers and every other scalar resolve as
    before (the int resolver is tried first).
    """


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str):
    """Parse YAML text with :class:`ParamsLoader` (YAML 1.2 floats)."""
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass


def read_params(path: str | Path) -> dict:
    """A parameter file (params.yaml or a profile) as a mapping of sections; errors name the file."""
    return _read(Path(path))


def _read(path: Path) -> dict:
    try:
        document = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParameterError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as err:
        raise ParameterError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(document, dict):
        raise ParameterError(f"{path}: expected a mapping of sections, got {type(document).__name__}")
    return document


def _explain(section: str, model: type[Params], err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join([section, *map(str, e["loc"])])
        if e["type"] == "extra_forbidden":
            known = _known_keys(model, e["loc"][:-1])
            hint = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            lines.append(f"{key}: unknown parameter{suggestion}")
        elif e["type"] == "missing":
            lines.append(f"{key}: missing")
        elif e["type"] == "value_error":  # a check of ours: its message names the value
            lines.append(f"{key}: {e['ctx']['error']}")
        elif isinstance(e.get("input"), dict):  # a check across keys: the message names them
            lines.append(f"{key}: {e['msg']}")
        else:
            lines.append(f"{key}: {e['msg']}, got {e.get('input')!r}")
    return "invalid parameters:\n  " + "\n  ".join(lines)


def _known_keys(model: type[Params], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``, for 'did you mean' hints."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, Params)):
            return []
        model = annotation
    return list(model.model_fields)
