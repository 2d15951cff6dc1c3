"""Tests of lib.params and of the stage runner's validation before any work (lib.stage)."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib import params as P
from lib import stage as S
from lib.studies.diml.params import DimlEvalParams, DimlParams, DimlTrainParams

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def diml_values() -> dict:
    """The diml section of the repository's params.yaml, as plain data to alter."""
    return copy.deepcopy(P.read_params(ROOT / "params.yaml")["diml"])


def error_of(values: dict) -> str:
    with pytest.raises(P.ParameterError) as info:
        P.validate("diml", values)
    return str(info.value)


def test_repository_params_are_valid():
    cfg = P.load("diml", ROOT / "params.yaml")
    assert isinstance(cfg, DimlParams)
    assert cfg.train.batch_size % cfg.train.samples_per_class == 0
    assert not set(cfg.data.train_classes) & set(cfg.data.test_classes)


def test_smoke_profile_overrides_key_by_key():
    base = P.load("diml", ROOT / "params.yaml")
    smoke = P.profile("diml", "smoke", root=ROOT)
    overlay = P.read_params(ROOT / "params.smoke.yaml")["diml"]
    assert smoke.train.epochs == overlay["train"]["epochs"] != base.train.epochs
    assert smoke.train.max_steps_per_epoch == overlay["train"]["max_steps_per_epoch"]
    assert smoke.eval.rerank_k == overlay["eval"]["rerank_k"]
    # Keys the overlay does not name keep params.yaml's values, also inside overridden sections.
    assert smoke.train.lr == base.train.lr
    assert smoke.eval.rerank_weight == base.eval.rerank_weight
    assert smoke.model == base.model


def test_merge_is_deep_and_leaves_its_inputs_alone():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    overlay = {"a": {"c": 20}, "e": 5}
    assert P._merge(base, overlay) == {"a": {"b": 1, "c": 20}, "d": 3, "e": 5}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_unknown_key_is_named_with_a_suggestion(diml_values):
    diml_values["train"]["epoch"] = 10
    message = error_of(diml_values)
    assert "diml.train.epoch: unknown parameter" in message
    assert "did you mean 'epochs'" in message


def test_unknown_top_level_key_is_named(diml_values):
    diml_values["sed"] = 1
    message = error_of(diml_values)
    assert "diml.sed: unknown parameter" in message
    assert "'seeds'" in message


def test_wrong_type_is_named(diml_values):
    diml_values["train"]["epochs"] = "ten"
    message = error_of(diml_values)
    assert "diml.train.epochs" in message
    assert "'ten'" in message


@pytest.mark.parametrize("value", [10.0, 2.5, True])
def test_no_silent_coercion_to_int(diml_values, value):
    diml_values["train"]["epochs"] = value
    assert "diml.train.epochs" in error_of(diml_values)


def test_missing_key_is_named(diml_values):
    del diml_values["model"]["grid"]
    assert "diml.model.grid: missing" in error_of(diml_values)


def test_overlapping_classes_are_rejected(diml_values):
    diml_values["data"]["test_classes"] = [4, 5, 6]
    message = error_of(diml_values)
    assert "diml.data" in message
    assert "overlap in [4]" in message


def test_batch_size_must_be_a_multiple_of_samples_per_class(diml_values):
    diml_values["train"]["batch_size"] = diml_values["train"]["samples_per_class"] * 3 + 1
    message = error_of(diml_values)
    assert "train.batch_size" in message and "multiple of train.samples_per_class" in message


def test_bad_literal_is_named(diml_values):
    diml_values["losses"] = ["margin", "triplet"]
    assert "diml.losses.1" in error_of(diml_values)


def test_unknown_section_is_rejected():
    with pytest.raises(P.ParameterError, match="unknown parameter section 'dimll'"):
        P.validate("dimll", {})


def test_missing_params_file_names_the_file(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(P.ParameterError, match="nowhere.yaml: parameter file not found"):
        P.load("diml", missing)


def test_invalid_yaml_names_the_file(tmp_path):
    broken = tmp_path / "params.yaml"
    broken.write_text("diml:\n  seed: [0\n")
    with pytest.raises(P.ParameterError, match=r"params.yaml: not valid YAML"):
        P.load("diml", broken)


def test_a_file_that_is_not_a_mapping_is_rejected(tmp_path):
    listing = tmp_path / "params.yaml"
    listing.write_text("- diml\n")
    with pytest.raises(P.ParameterError, match="expected a mapping"):
        P.load("diml", listing)


def test_missing_section_is_named(tmp_path):
    other = tmp_path / "params.yaml"
    other.write_text("other: {}\n")
    with pytest.raises(P.ParameterError, match="no section 'diml'"):
        P.load("diml", other)


# ------------------------------------------------------------------ stage options and runner
def test_parse_options_accepts_every_allowed_combination():
    stage = S.get_stage("diml_train")
    chosen = S.parse_options(stage, ["objective=structural", "loss=multi_similarity"])
    assert chosen == {"objective": "structural", "loss": "multi_similarity"}
    assert stage.output_name(chosen) == "diml_train_multi_similarity_structural"
    assert S.parse_options(S.get_stage("diml_eval"), []) == {}


@pytest.mark.parametrize(
    "args, match",
    [
        (["loss=margin", "objective=global", "lr=1"], "unknown stage option 'lr'"),
        (["loss=triplet", "objective=global"], "loss='triplet' must be one of"),
        (["loss=margin"], r"missing: \['objective'\]"),
        (["loss", "objective=global"], "must be key=value"),
    ],
)
def test_parse_options_rejects_bad_options(args, match):
    with pytest.raises(P.ParameterError, match=match):
        S.parse_options(S.get_stage("diml_train"), args)


@pytest.fixture
def bad_root(tmp_path, diml_values) -> Path:
    """A compendium root whose params.yaml has a misspelt key."""
    diml_values["train"]["epoch"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"diml": diml_values}))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    return tmp_path


def test_run_stage_fails_on_a_bad_key_before_any_work(bad_root, monkeypatch):
    import papermill

    def must_not_run(*args, **kwargs):
        raise AssertionError("the notebook ran before the parameters were validated")

    monkeypatch.setattr(papermill, "execute_notebook", must_not_run)
    with pytest.raises(P.ParameterError, match="diml.train.epoch: unknown parameter"):
        S.run_stage("diml_train", ["loss=margin", "objective=global"], bad_root)
    assert not (bad_root / "results").exists()


def test_run_stage_rejects_an_unknown_stage(bad_root):
    with pytest.raises(P.ParameterError, match="unknown stage 'diml_trian'"):
        S.run_stage("diml_trian", [], bad_root)


def test_stage_command_line_names_the_bad_key(bad_root):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "lib.stage", "diml_train", "loss=margin", "objective=global"],
        cwd=bad_root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "diml.train.epoch: unknown parameter" in done.stderr
    assert "did you mean 'epochs'" in done.stderr
    assert not (bad_root / "results").exists()


# ------------------------------------------------------------------ bases and stage parts
def test_every_section_is_the_union_of_its_stages_parts():
    """A section's keys are exactly those its stages read: no key that nothing reads, none read but unchecked."""
    for section, model in P.sections().items():
        stages = [s for s in S.stages().values() if s.section == section]
        assert stages, f"section {section} has no stage"
        if any(s.entry for s in stages):
            continue  # a mapping of entries (cities): each stage reads one entry whole
        read = set().union(*(s.params.model_fields for s in stages))
        assert read == set(model.model_fields), (section, read ^ set(model.model_fields))


def test_common_bases_declare_seed_device_and_the_optimiser_once():
    assert set(P.OnDevice.model_fields) == {"device"}
    assert set(P.RunParams.model_fields) == {"seed", "device"}
    assert set(P.Repeated.model_fields) == {"seeds", "device"}
    assert issubclass(P.RunParams, P.OnDevice) and issubclass(P.Repeated, P.OnDevice)
    assert {"epochs", "lr", "weight_decay", "max_steps_per_epoch"} == set(P.Optimiser.model_fields)
    for model in (DimlTrainParams, DimlEvalParams):
        assert issubclass(model, P.Repeated)


def test_a_stage_part_rejects_keys_of_other_stages(diml_values):
    train_part = {k: diml_values[k] for k in DimlTrainParams.model_fields}
    P.validate("diml", train_part, DimlTrainParams)
    with pytest.raises(P.ParameterError, match="diml.eval: unknown parameter"):
        P.validate("diml", {**train_part, "eval": diml_values["eval"]}, DimlTrainParams)


class _Repeated(P.Repeated):
    pass


@pytest.mark.parametrize("seeds, problem", [([], "at least 1"), ([0, 0], "distinct"), ([1, -2], "non-negative"),
                                            ([0, "1"], "valid integer")])
def test_repeated_runs_need_distinct_seeds(seeds, problem):
    with pytest.raises(P.ParameterError, match=rf"demo\.seeds.*{problem}"):
        P.validate("demo", {"seeds": seeds, "device": "cpu"}, _Repeated)
    assert P.validate("demo", {"seeds": [2, 0, 1], "device": "cpu"}, _Repeated).seeds == [2, 0, 1]


# ------------------------------------------------------------------ parameter files as DVC writes them
FLOATS = ["1e-05", "2e-3", "1E5", "-3e+2", "+4.5e-1", "1.0e5", "1.5", ".5", "-0.25", "6.02e23", "1_0.5e1"]


def test_floats_read_as_dvc_reads_them():
    """YAML 1.2 floats: DVC's own YAML reader (ruamel, YAML 1.2) is the oracle."""
    from dvc.utils.serialize import parse_yaml

    for text in FLOATS:
        ours, dvc = P.load_yaml(f"k: {text}")["k"], parse_yaml(f"k: {text}", "params.yaml")["k"]
        assert isinstance(ours, float) and ours == dvc, text
    # PyYAML's own rules (YAML 1.1) would have given strings: the reason for the loader
    assert yaml.safe_load("k: 1e-05")["k"] == "1e-05"


def test_what_dvc_writes_reads_back_as_the_same_number():
    from dvc.utils.serialize import dumps_yaml

    values = {"a": 1e-5, "b": 2e-3, "c": 1e20, "d": 3.0, "e": 1.5e-7, "f": 10, "g": "1e-5 as text", "h": True}
    assert P.load_yaml(dumps_yaml(values)) == values


def test_other_scalars_keep_their_meaning():
    loaded = P.load_yaml("i: 10\nj: -7\nk: 0x1F\ns: abc\nv: 1.2.3\nw: e5\nq: '1e-5'\nn: null\nt: true\ninf: .inf")
    assert loaded == {"i": 10, "j": -7, "k": 31, "s": "abc", "v": "1.2.3", "w": "e5", "q": "1e-5", "n": None, "t": True,
                      "inf": float("inf")}
    assert all(type(loaded[k]) is int for k in "ijk")


def test_a_float_written_by_dvc_passes_validation(tmp_path, diml_values):
    diml_values["train"]["weight_decay"] = "WD"
    text = yaml.safe_dump({"diml": diml_values}).replace("WD", "1e-05")  # as `dvc exp run -S` writes it
    (tmp_path / "params.yaml").write_text(text)
    assert P.load("diml", tmp_path / "params.yaml").train.weight_decay == 1e-05


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_known_devices_pass(diml_values, device):
    assert P.validate("diml", {**diml_values, "device": device}).device == device


@pytest.mark.parametrize("device", ["gpu0", "cuda:", "cuda:x", "CPU", "cuda0", "", "auto "])
def test_unknown_devices_are_named(diml_values, device):
    message = error_of({**diml_values, "device": device})
    assert "diml.device: device must be auto, cpu, cuda, cuda:N" in message and repr(device) in message


def test_the_whole_document_is_validated_section_by_section():
    document = P.read_params(ROOT / "params.yaml")
    assert P.validate_document(document) == []
    document["concepts"]["device"] = "gpu0"
    document["cities"]["river_city"]["crs"] = "EPSG:99999"
    del document["maps"]
    document["dimll"] = {}
    problems = "\n".join(P.validate_document(document))
    for named in ("unknown section 'dimll'", "no section 'maps'", "concepts.device",
                  "cities.river_city: crs 'EPSG:99999' is not a coordinate reference system"):
        assert named in problems, problems
