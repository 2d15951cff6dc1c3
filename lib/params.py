"""Stage parameters as data: pydantic models, validated before any work.

``params.yaml`` holds the pipeline's defaults, one section per study; each
stage validates its section against the model here. Unknown keys and ill-typed
values fail at once with a :class:`ParameterError` that names the key, e.g.
``diml.train.epochs: expected an integer, got 'ten'``.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from lib.io import project_root
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ParameterError(ValueError):
    """A parameter file or section that does not fit its model."""


class Params(BaseModel):
    """Base of every parameter model: no unknown keys, no silent coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --------------------------------------------------------------------- DIML
class DimlData(Params):
    train_classes: list[int] = Field(min_length=2)
    test_classes: list[int] = Field(min_length=2)
    val_fraction: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _disjoint(self) -> DimlData:
        overlap = set(self.train_classes) & set(self.test_classes)
        if overlap:
            raise ValueError(f"train_classes and test_classes overlap in {sorted(overlap)}")
        if not set(self.train_classes + self.test_classes) <= set(range(10)):
            raise ValueError("digit classes must lie in 0..9")
        return self


class DimlModel(Params):
    width: int = Field(ge=4, description="channels of the first ResNet stage")
    embedding_dim: int = Field(ge=2)
    grid: int = Field(ge=1, le=7, description="feature map kept at grid x grid locations")


class StructuralParams(Params):
    epsilon: float = Field(gt=0, description="entropic regularisation of Sinkhorn")
    marginals: Literal["cross_correlation", "uniform"]
    n_iters: int = Field(ge=1, description="Sinkhorn iterations at most")
    tol: float = Field(gt=0, description="stop a pair's iterations when its marginals are this close")


class DimlTrain(Params):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=4)
    samples_per_class: int = Field(ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    max_steps_per_epoch: int | None = Field(default=None, ge=1)
    world_size: int = Field(ge=1, description="processes for torchrun (DDP); 1 = in the kernel")


class DimlEval(Params):
    rerank_k: int = Field(ge=1)
    rerank_weight: float = Field(ge=0, description="weight of the global similarity added to the structural one")
    n_examples: int = Field(ge=1)
    batch_size: int = Field(ge=1)


class DimlParams(Params):
    seed: int
    device: str
    losses: list[Literal["margin", "multi_similarity"]] = Field(min_length=1)
    objectives: list[Literal["global", "structural"]] = Field(min_length=1)
    data: DimlData
    model: DimlModel
    structural: StructuralParams
    train: DimlTrain
    eval: DimlEval

    @model_validator(mode="after")
    def _class_balanced_batches(self) -> DimlParams:
        m, batch = self.train.samples_per_class, self.train.batch_size
        if batch % m or batch > m * len(self.data.train_classes):
            raise ValueError(
                f"train.batch_size ({batch}) must be a multiple of train.samples_per_class ({m}) "
                f"and at most samples_per_class x {len(self.data.train_classes)} train classes"
            )
        return self


#: params.yaml section -> model, or "module:Name" for models that live with
#: their study (imported only when that section is validated).
SECTIONS: dict[str, type[Params] | str] = {
    "diml": DimlParams,
    "cities": "lib.data.city:CitiesParams",
    "maps": "lib.data.osm_maps:MapsParams",
    "concepts": "lib.concepts_study:ConceptsParams",
    "cocoa": "lib.cocoa_study:CocoaParams",
}


def section_model(section: str) -> type[Params]:
    """The parameter model of a params.yaml section."""
    if section not in SECTIONS:
        raise ParameterError(f"unknown parameter section {section!r}; known: {sorted(SECTIONS)}")
    model = SECTIONS[section]
    if isinstance(model, str):
        module, _, name = model.partition(":")
        model = getattr(importlib.import_module(module), name)
    return model


def validate(section: str, values: Any) -> Params:
    """Validate one section's values against its model; raise ParameterError naming keys."""
    model = section_model(section)
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise ParameterError(_explain(section, model, err)) from None


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


def _read(path: Path) -> dict:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
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
