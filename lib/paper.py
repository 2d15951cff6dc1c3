"""Compile the Typst paper with the ``typst`` package, atomically.

``python -m lib.paper paper/paper.typ paper/paper.pdf`` compiles with the
compendium's root as Typst's root, so the paper reads ``results/**`` (metrics
JSON, figures) directly: no number in the paper is typed by hand. Typst cannot list
a folder, so the stages' run manifests (``results/**/*.run.json``, the compute
section's table) are named to it in ``sys.inputs.manifests``: a JSON list of
their paths under the root, sorted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typst

from lib.io import atomic_path, project_root


def manifests(root: Path) -> list[str]:
    """The run manifests under ``root/results``, as paths relative to ``root``, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in (root / "results").rglob("*.run.json"))


def paper_inputs(root: Path, manifest_paths: list[str] | None = None) -> dict[str, str]:
    """Typst's ``sys.inputs`` for the paper: the run manifests (all under ``root/results`` unless given)."""
    return {"manifests": json.dumps(manifests(root) if manifest_paths is None else manifest_paths)}


def compile_paper(source: str | Path, output: str | Path, manifest_paths: list[str] | None = None) -> Path:
    """Compile ``source`` to ``output`` with the compendium's root as Typst's root; ``manifest_paths``: the run
    manifests the compute section lists (default: every one under results/; [] leaves the table out)."""
    root = project_root(Path(source).parent)
    with atomic_path(output) as tmp:
        typst.compile(str(source), output=str(tmp), root=str(root), sys_inputs=paper_inputs(root, manifest_paths))
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m lib.paper SOURCE.typ OUTPUT.pdf", file=sys.stderr)
        return 2
    try:
        out = compile_paper(*argv)
    except RuntimeError as err:  # typst reports compile errors with file and line
        print(f"error: typst could not compile {argv[0]}: {err}", file=sys.stderr)
        return 1
    print(f"compiled {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
