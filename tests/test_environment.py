"""The conda environment and pyproject.toml name the same dependencies."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(p for p in pip if p != "-e .") == sorted(project), (
        "environment.yml and pyproject.toml list different dependencies; update one to match the other"
    )
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python=3.11"


def test_lib_is_tracked_by_git():
    # Common Python .gitignore templates ignore lib/; the package must not be.
    ignore = (ROOT / ".gitignore").read_text().splitlines()
    assert not any(line.strip() in {"lib", "lib/", "/lib", "/lib/"} for line in ignore)


def test_dvc_analytics_off():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config
