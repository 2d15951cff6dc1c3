"""Compile the Typst paper with the ``typst`` package, atomically.

``python -m lib.paper paper/paper.typ paper/paper.pdf`` compiles with the
compendium's root as Typst's root, so the paper reads ``results/**`` (metrics
JSON, figures) directly: no number in the paper is typed by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typst

from lib.io import atomic_path, project_root


def compile_paper(source: str | Path, output: str | Path) -> Path:
    root = project_root(Path(source).parent)
    with atomic_path(output) as tmp:
        typst.compile(str(source), output=str(tmp), root=str(root))
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
