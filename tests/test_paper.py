"""The paper's generated front and back matter (paper/sections/{abstract,introduction,claims,discussion,limitations,
compute}.typ): compiled from fake results built with the studies' own models, every number in their text traced to
a results file, the claims rendered or marked "not yet assessed"; and the checks the pipeline test runs on the
whole paper of a smoke run (:func:`untraced_numbers`, :func:`missing_figures`, :func:`unresolved_citations`).

**What counts as a number.** In the text of the elements labelled ``<generated>`` (Typst's ``query``: every
``text`` and ``raw`` leaf of their content), a number is a run of digits with an optional decimal part
(``12``, ``0.731``) that touches no letter, digit, underscore or ``@`` on either side, so that names (MNIST-5k,
R\\@1, MiniLM-L6, ``seed_0``) are not numbers; a sign before it (``+``, ``-``, ``−``) is ignored. Section and page
numbers, references and citations are not text of the content and are not checked.

**Where it may come from.** A number printed with d decimals comes from a results file when some number x in a
JSON file under ``results/`` (any leaf, or a numeral inside a string leaf such as a claim's reported number)
gives it when rounded to d decimals, as x or as 100 x (a percentage). Counts derived by the paper (how many
claims held) are spelled in words, so they are not numbers in this sense.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import typst
import yaml

from lib.eval.claims import Claim, Ladder, LadderRow, verdict_of
from lib.eval.intervals import comparison_cell, holm, interval_cell
from lib.paper import paper_inputs

ROOT = Path(__file__).resolve().parents[1]

#: A number in the generated text (module docstring).
NUMBER = re.compile(r"(?<![\w@.])\d+(?:\.\d+)?(?![\w@]|\.\d)")

#: The generated sections, in the paper's order, as paper.typ includes them.
GENERATED = ("abstract", "introduction", "claims", "discussion", "limitations", "compute")


# ------------------------------------------------------------------ the checks
def _leaves(node) -> Iterator[object]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value)
    else:
        yield node


def results_numbers(root: Path) -> list[float]:
    """Every number in every JSON file under ``root/results``: numeric leaves and numerals inside string leaves."""
    found: list[float] = []
    for path in sorted((root / "results").rglob("*.json")):
        for leaf in _leaves(json.loads(path.read_text(encoding="utf-8"))):
            if isinstance(leaf, bool) or leaf is None:
                continue
            if isinstance(leaf, int | float):
                if math.isfinite(leaf):
                    found.append(float(leaf))
            elif isinstance(leaf, str):
                found += [float(m) for m in NUMBER.findall(leaf)]
    return found


def _texts(node) -> Iterator[str]:
    """The text leaves of a queried content tree (``text`` elements and ``raw`` text)."""
    if isinstance(node, dict):
        if node.get("func") in {"text", "raw"} and isinstance(node.get("text"), str):
            yield node["text"]
        for key, value in node.items():
            if key != "text":
                yield from _texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _texts(value)


def generated_text(source: Path, root: Path, inputs: dict[str, str]) -> list[str]:
    """The text leaves of every element labelled ``<generated>`` in the compiled ``source``."""
    found = json.loads(typst.query(str(source), "<generated>", root=str(root), sys_inputs=inputs))
    return list(_texts(found))


def untraced_numbers(texts: list[str], numbers: list[float]) -> list[str]:
    """The numbers of ``texts`` (module docstring) that no number of the results gives, each with its context."""
    known: dict[int, set[float]] = {}
    missing = []
    for text in texts:
        for match in NUMBER.finditer(text):
            printed = match.group()
            digits = len(printed.partition(".")[2])
            if digits not in known:
                known[digits] = {abs(r) for x in numbers for s in (1.0, 100.0) for r in _roundings(s * x, digits)}
            if float(printed) not in known[digits]:
                missing.append(f"{printed!r} in {text!r}")
    return missing


def _roundings(x: float, digits: int) -> tuple[float, float]:
    """``x`` rounded to ``digits`` decimals half to even (Python) and half away from zero (Typst's calc.round)."""
    away = float(Decimal(repr(x)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
    return round(x, digits), away


def missing_figures(source: Path, root: Path, inputs: dict[str, str]) -> list[str]:
    """The image paths of the compiled ``source`` that name no file (absolute paths are under ``root``)."""
    images = json.loads(typst.query(str(source), "image", root=str(root), sys_inputs=inputs))
    missing = []
    for image in images:
        path = image["source"]
        candidates = [root / path.lstrip("/")] if path.startswith("/") else [source.parent / path,
                                                                               source.parent / "sections" / path]
        if not any(c.is_file() for c in candidates):
            missing.append(path)
    return missing


def unresolved_citations(source: Path, root: Path, inputs: dict[str, str], bibliography: Path) -> list[str]:
    """The citation keys of the compiled ``source`` that ``bibliography`` (Hayagriva YAML) has no entry for."""
    keys = set(yaml.safe_load(bibliography.read_text(encoding="utf-8")))
    cites = json.loads(typst.query(str(source), "cite", root=str(root), sys_inputs=inputs))
    return sorted({c["key"].strip("<>") for c in cites} - keys)


# ------------------------------------------------------------------ fake results from the studies' models
def _claims(study: str, seed_shift: float) -> tuple[list[Ladder], list[Claim]]:
    """A ladder and three claims (one held, one not, one not testable) of made-up values over three seeds."""
    trivial = [0.412, 0.405, 0.431]
    method = [0.611 + seed_shift, 0.598 + seed_shift, 0.623 + seed_shift]
    variant = [0.607, 0.612, 0.603]
    ceiling = interval_cell([0.955, 0.955, 0.955], bounds=(0.0, 1.0))
    held, level = holm([comparison_cell(method, trivial, a="method", b="trivial", bounds=(0.0, 1.0)),
                        comparison_cell(method, variant, a="method", b="variant", bounds=(0.0, 1.0))])
    ladder = Ladder(title=f"{study} on made-up data", metric="Recall@1", rows=[
        LadderRow(name="trivial", rung="trivial", cell=interval_cell(trivial, bounds=(0.0, 1.0)), note="raw pixels"),
        LadderRow(name="method", rung="method", cell=interval_cell(method, bounds=(0.0, 1.0))),
        LadderRow(name="variant", rung="variant", cell=interval_cell(variant, bounds=(0.0, 1.0))),
        LadderRow(name="bound", rung="bound", cell=None, note="no supervised model on this budget"),
        LadderRow(name="ceiling", rung="ceiling", cell=ceiling)], comparisons=[held, level])
    claims = [
        Claim(study=study, claim="the method beats the trivial baseline", original="Recall@1 67.1 vs 52.3 on CUB",
              evidence=held, verdict=verdict_of(held, +1), where="Table 1"),
        Claim(study=study, claim="the method beats its variant", original="+2.4 points on Cars196",
              evidence=level, verdict=verdict_of(level, +1),
              reason="budget: three seeds of a small network cannot separate a difference this small"),
        Claim(study=study, claim="it scales to ImageNet", original="top-1 76.5", evidence=None,
              verdict="not testable here", reason="data: no ImageNet on a CPU"),
    ]
    return [ladder], claims


def make_results(root: Path, assessed: tuple[str, ...] = ("diml", "concepts", "cocoa")) -> Path:
    """A compendium root with paper/ and fake summaries at every path the paper's study list reads: the studies
    in ``assessed`` with ladders and claims, the others without; two run
    manifests."""
    shutil.copytree(ROOT / "paper", root / "paper")
    (root / "dvc.yaml").write_text("stages: {}\n")
    paths = {"diml": ["diml/summary.json"], "concepts": ["concepts/river_city/summary.json"],
             "gpsmaps": ["gpsmaps/summary.json"], "musecl": ["musecl/summary.json"], "cocoa": ["cocoa/summary.json"]}
    for study, files in paths.items():
        for i, rel in enumerate(files):
            summary: dict = {"seeds": [0, 1, 2]} if study != "gpsmaps" else {}
            if study in assessed and i == 0:
                ladders, claims = _claims(study, 0.01 * len(study))
                summary |= {"ladders": [json.loads(x.model_dump_json()) for x in ladders],
                            "claims": [json.loads(c.model_dump_json()) for c in claims]}
            if study == "diml":
                summary |= {"best_epochs": {"margin_global": [3, 4, 2]}, "epochs": 5}
            path = root / "results" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary))
    for name, wall in (("diml_eval", 121.73), ("cocoa_train", 64.2)):
        (root / "results" / name.split("_")[0] / f"{name}.run.json").write_text(json.dumps(
            {"stage": name, "device": "cpu", "gpu": None, "wall_time_s": wall, "reference_units": 2579.1,
             "reference_s": 0.0472, "peak_memory_mib": 2485.5, "seeds": [0, 1, 2]}))
    return root


def harness(root: Path) -> Path:
    """A document of paper.typ's settings and the generated sections only (the study sections need the
    studies' full summaries)."""
    text = (ROOT / "paper" / "paper.typ").read_text(encoding="utf-8")
    settings = "".join(line + "\n" for line in text.splitlines() if line.startswith(("#set", "#show", "#import")))
    body = "".join(f'#block(include "sections/{name}.typ") <generated>\n' for name in GENERATED)
    source = root / "paper" / "generated.typ"
    source.write_text(settings + body)
    return source


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, Path, dict[str, str], list[str]]:
    root = make_results(tmp_path_factory.mktemp("paper"))
    source = harness(root)
    inputs = paper_inputs(root)
    return root, source, inputs, generated_text(source, root, inputs)


# ------------------------------------------------------------------ tests
def test_paper_includes_every_generated_section_labelled():
    text = (ROOT / "paper" / "paper.typ").read_text(encoding="utf-8")
    for name in GENERATED:
        assert f'#block(include "sections/{name}.typ") <generated>' in text, name


def test_generated_sections_compile_and_every_number_comes_from_a_results_file(compiled):
    root, source, inputs, texts = compiled
    pdf = typst.compile(str(source), root=str(root), sys_inputs=inputs)
    assert pdf[:4] == b"%PDF"
    untraced = untraced_numbers(texts, results_numbers(root))
    assert not untraced, untraced
    joined = " ".join(texts)
    assert "121.73" not in joined and "122" in joined  # the compute table: seconds from the manifest, rounded


def test_claims_are_rendered_with_their_verdicts_and_missing_ones_marked(compiled):
    *_, texts = compiled
    joined = " ".join(texts)
    # three studies assessed (three claims each), gpsmaps and musecl not: a line each in the claims section and
    # in the abstract, and their names in the discussion
    assert joined.count("claims of this study not yet assessed") == 2 + 2
    assert "The claims of GPS maps and MuseCL are not yet assessed" in joined
    assert "Recall@1 67.1 vs 52.3 on CUB" in joined and "data: no ImageNet on a CPU" in joined
    for verdict in ("reproduced", "not reproduced", "not testable here"):
        assert verdict in joined
    assert "In all, six of nine claims were reproduced" in joined  # counts in words, from the claims' verdicts


def test_a_hand_typed_number_is_caught(compiled):
    root, *_, texts = compiled
    assert untraced_numbers([*texts, "a recall of 0.731 and 12 seeds"], results_numbers(root)) == [
        "'0.731' in 'a recall of 0.731 and 12 seeds'", "'12' in 'a recall of 0.731 and 12 seeds'"]
    # names and rounded values pass: MNIST-5k, R@1, seed_0, 61.9 (100 x 0.6187 rounded), the sign of -0.000
    numbers = [0.6187, -0.0001]
    assert untraced_numbers(["MNIST-5k R@1 seed_0 61.9 −0.000"], numbers) == []


def test_the_compute_table_lists_every_manifest_and_can_be_left_out(compiled):
    root, source, inputs, texts = compiled
    assert json.loads(inputs["manifests"]) == ["results/cocoa/cocoa_train.run.json", "results/diml/diml_eval.run.json"]
    joined = " ".join(texts)
    assert "cocoa_train" in joined and "diml_eval" in joined and "Timings differ from run to run" in joined
    without = " ".join(generated_text(source, root, paper_inputs(root, [])))
    assert "cocoa_train" not in without and "compiled without the stages" in without


def test_figures_and_citations_are_checked(compiled):
    root, _, inputs, _ = compiled
    (root / "refs.yml").write_text("known:\n  type: article\n  title: T\n  author: A\n  date: 2020\n")
    source = root / "paper" / "figures.typ"
    (root / "results" / "fig.png").write_bytes(_png())
    source.write_text('#image("/results/fig.png", width: 1cm)\nSee @known.\n#bibliography("/refs.yml")\n')
    assert missing_figures(source, root, inputs) == []
    assert unresolved_citations(source, root, inputs, root / "refs.yml") == []
    other = root / "refs_other.yml"
    other.write_text("else:\n  type: article\n  title: T\n  author: A\n  date: 2020\n")
    assert unresolved_citations(source, root, inputs, other) == ["known"]


def _png() -> bytes:
    """A one-pixel grey PNG."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))
