"""The front page of a run: ``results/index.html``, the claims against the evidence, then one section per study.

``python -m lib.index results/index.html`` (the ``index`` stage) opens with the
claims-against-evidence table of every study (the ``claims`` of its
``summary.json`` files, :class:`lib.eval.claims.Claim`; a line saying they are
not yet assessed where a study's summaries carry none), then lists, for every
study package (:mod:`lib.studies`), its question, its headline numbers, its key
figures, and its rendered notebooks with what their run manifests say (revision,
device, wall time, peak memory), and links the compiled paper. The page is self-contained: relative links only,
inline styles, no script and nothing fetched from a network, so it reads the
same from a folder, a DVC remote or an archive.

A study names what the page shows in its package: ``TITLE``, ``QUESTION`` and
``FIGURES`` (paths under ``results/``, wildcards allowed). Its headline numbers
are its ladders (the ``ladders`` of its summaries, :class:`lib.eval.claims.Ladder`:
each row a mean with its interval, "mean [low, high]", and a one-line meaning;
each paired comparison with whether it is supported after Holm's correction);
without ladders, ``headlines(results)`` of its ``summary`` module where it has
one (rows of what, value, meaning); else its ``metrics.json`` files.

Every figure made from OpenStreetMap data (written by a stage whose inputs
derive from :data:`OSM_SOURCE`, followed through the stages' declared inputs
and outputs) carries the attribution the Open Database License requires.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from lib import params as P
from lib.eval.claims import Claim, Ladder
from lib.io import project_root, write_text
from lib.stage import Stage, stages

#: The raw OpenStreetMap extract; everything derived from it is credited with :data:`OSM_CREDIT`.
OSM_SOURCE = "data/osm"
OSM_CREDIT = "Map data © OpenStreetMap contributors, under the Open Database License (ODbL 1.0)."
NOT_ASSESSED = "claims of this study not yet assessed"

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #ddd; }
nav a { margin-right: 1rem; } .question { color: #444; font-style: italic; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { padding: .2rem .6rem; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; } caption { text-align: left; font-weight: 600; padding: .3rem 0; }
.figures { display: flex; flex-wrap: wrap; gap: .8rem; } .figures a { flex: 1 1 20rem; }
.figures img { width: 100%; border: 1px solid #ddd; } .figures span { font-size: .8rem; color: #555; }
.muted { color: #777; font-size: .85rem; } td.meaning { text-align: left; color: #555; font-size: .85rem; }
table.claims td, table.claims th { text-align: left; vertical-align: top; } .credit { display: block; font-size: .8rem; color: #555; }
.reproduced { color: #1a7f37; font-weight: 600; } .not-reproduced { color: #b42318; font-weight: 600; }
.not-testable-here { color: #6e6e6e; font-weight: 600; } td.rung { color: #777; }
"""


def flatten(values: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """(key path, leaf value) of a nested mapping."""
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from flatten(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


def metrics_table(path: Path, root: Path) -> str:
    """A metrics.json as a table: rows are the paths to the leaves' parents, columns the leaf names."""
    values = json.loads(path.read_text(encoding="utf-8"))
    rows: dict[str, dict[str, object]] = {}
    for keys, value in flatten(values):
        if len(keys) == 1:  # a number at the top level: a row of its own
            rows.setdefault(keys[0], {})["value"] = value
        else:
            rows.setdefault(" / ".join(keys[:-1]), {})[keys[-1]] = value
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *columns])
    body = "".join(
        "<tr><td>" + html.escape(name) + "</td>"
        + "".join(f"<td>{_number(row.get(c))}</td>" for c in columns) + "</tr>"
        for name, row in rows.items()
    )
    caption = html.escape(str(path.relative_to(root / "results")))
    return f"<table><caption>{caption}</caption><tr>{head}</tr>{body}</table>"


def _number(value: object) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        if value == 0:
            return "0"  # also -0.0
        return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.2e}"
    return html.escape(str(value))


def headline_table(package: str, results: Path) -> str | None:
    """The study's headline numbers with their intervals and what each means (``headlines`` of its ``summary``
    module), or None where it has none or its summary is not written yet."""
    if importlib.util.find_spec(f"{package}.summary") is None:
        return None
    module = importlib.import_module(f"{package}.summary")
    if not hasattr(module, "headlines"):
        return None
    try:
        rows = module.headlines(results)
    except FileNotFoundError:
        return None
    body = "".join(f"<tr><td>{html.escape(what)}</td><td>{html.escape(value)}</td>"
                   f"<td class=meaning>{html.escape(meaning)}</td></tr>" for what, value, meaning in rows)
    caption = "headline numbers: mean [95 % interval] over seeds; comparisons paired by seed, Holm-corrected"
    return (f"<table><caption>{caption}</caption><tr><th></th><th>value</th><th>meaning</th></tr>{body}</table>")


def study_summaries(package: str, results: Path) -> list[dict]:
    """Every ``summary.json`` under the result folders of the study's stages, parsed, in path order."""
    name = package.rpartition(".")[2]
    sections = dict.fromkeys(s.section for s in stages().values() if s.study == name)
    paths = sorted({p for section in sections for p in (results / section).glob("**/summary.json")})
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def study_claims(package: str, results: Path) -> list[Claim] | None:
    """The study's claims over its summaries (validated), or None where no summary carries ``claims`` yet."""
    found = [s["claims"] for s in study_summaries(package, results) if "claims" in s]
    return None if not found else [Claim.model_validate(c) for claims in found for c in claims]


def _evidence(claim: Claim) -> str:
    e = claim.evidence
    if e is None:
        return "&ndash;"
    if hasattr(e, "difference"):
        test = f"Holm p {e.p_holm:.3f}" if e.p_holm is not None else "one repetition: not tested"
        shown = html.escape(e.format(3))
        return (f"{html.escape(e.a)} &minus; {html.escape(e.b)}: " + (f"<b>{shown}</b>" if e.supported else shown)
                + f" <span class=muted>({test})</span>")
    return html.escape(e.format(3))


def claims_table(root: Path) -> str:
    """Every study's claims against the evidence here: the paper's claim and number, the evidence, the verdict
    and why; a study whose summaries carry no claims yet gets a line saying so."""
    results = root / "results"
    rows = []
    for package in P.study_packages():
        if importlib.util.find_spec(f"{package}.summary") is None:
            continue  # a study without results of its own (the datasets) makes no claims
        name = package.rpartition(".")[2]
        link = f'<a href="#{name}">{html.escape(name)}</a>'
        claims = study_claims(package, results)
        if claims is None:
            rows.append(f"<tr><td>{link}</td><td colspan=4 class=muted>{NOT_ASSESSED}</td></tr>")
            continue
        for c in claims:
            where = f" <span class=muted>({html.escape(c.where)})</span>" if c.where else ""
            rows.append(f"<tr><td>{link}</td><td>{html.escape(c.claim)} <span class=muted>({html.escape(c.original)})"
                        f"</span></td><td>{_evidence(c)}{where}</td><td class=\"{c.verdict.replace(' ', '-')}\">"
                        f"{html.escape(c.verdict)}</td><td>{html.escape(c.reason)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("study", "claim (original paper, its number)", "evidence here",
                                             "verdict", "why"))
    caption = ("Claims against the evidence: a paired comparison over seeds (bold where supported after Holm's "
               "correction within the study) or a mean [95 % interval]")
    return f'<table class=claims><caption>{caption}</caption><tr>{head}</tr>{"".join(rows)}</table>'


def ladder_tables(package: str, results: Path) -> list[str]:
    """The study's ladders as tables read from the bottom: rung, row, mean [interval], what the row is; then the
    paired comparisons, each with whether Holm's correction supports it."""
    tables = []
    for ladder in (Ladder.model_validate(x) for s in study_summaries(package, results) for x in s.get("ladders", [])):
        body = "".join(
            f"<tr><td class=rung>{r.rung}</td><td>{html.escape(r.name)}</td>"
            f"<td>{html.escape(r.cell.format(3)) if r.cell is not None else '&ndash;'}</td>"
            f"<td class=meaning>{html.escape(r.note)}</td></tr>" for r in ladder.rows)
        for c in ladder.comparisons:
            verdict = ("one repetition: not tested" if c.p_holm is None else
                       f"{'supported' if c.supported else 'not supported'} after Holm's correction (p {c.p_holm:.3f})")
            body += (f"<tr><td class=rung>paired</td><td>{html.escape(c.a)} &minus; {html.escape(c.b)}</td>"
                     f"<td>{html.escape(c.format(3))}</td><td class=meaning>difference paired by seed: {verdict}</td></tr>")
        better = "higher" if ladder.higher_is_better else "lower"
        caption = f"{html.escape(ladder.title)}: {html.escape(ladder.metric)}, mean [95 % interval] ({better} is better)"
        tables.append(f"<table><caption>{caption}</caption><tr><th>rung</th><th></th><th>value</th>"
                      f"<th>meaning</th></tr>{body}</table>")
    return tables


def osm_derived(root: Path) -> list[str]:
    """The outputs (paths under ``root``) of every stage whose inputs derive from :data:`OSM_SOURCE`, through
    the stages' declared inputs and outputs for params.yaml's option values; none without a params.yaml."""
    from lib.pipeline import instances

    if not (root / "params.yaml").exists():
        return []
    document = P.read_params(root / "params.yaml")
    runs = [(s, c) for s in stages().values() for c in instances(s, document)]
    derived = [OSM_SOURCE]
    grown = True
    while grown:
        grown = False
        for stage, chosen in runs:
            outs = [o.path for o in stage.written(chosen, document)]
            if set(outs) <= set(derived):
                continue
            if any(_under(d, x) or _under(x, d) for d in stage.inputs(chosen, document) for x in derived):
                derived += [o for o in outs if o not in derived]
                grown = True
    return derived[1:]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def rendered_runs(stage: Stage, results: Path) -> list[tuple[Path, dict | None]]:
    """The rendered notebooks (HTML) of a stage, each with its run manifest if there is one."""
    folder = results / stage.section
    pages = sorted({*folder.glob(f"{stage.name}.html"), *folder.glob(f"{stage.name}_*.html")})
    runs = []
    for page in pages:
        manifest = page.with_suffix(".run.json")
        runs.append((page, json.loads(manifest.read_text(encoding="utf-8")) if manifest.exists() else None))
    return runs


def run_row(page: Path, manifest: dict | None, results: Path) -> str:
    link = f'<a href="{html.escape(page.relative_to(results).as_posix())}">{html.escape(page.stem)}</a>'
    if manifest is None:
        return f"<tr><td>{link}</td><td colspan=5 class=muted>no run manifest</td></tr>"
    git = manifest.get("git") or {}
    revision = (git.get("revision") or "?")[:8] + (" (dirty)" if git.get("dirty") else "")
    record = f'<a href="{html.escape(page.with_suffix(".run.json").relative_to(results).as_posix())}">run.json</a>'
    cells = [revision, manifest.get("device", "?"), f"{manifest.get('wall_time_s', 0):.0f} s",
             f"{manifest.get('peak_memory_mib', 0):.0f} MiB"]
    return f"<tr><td>{link}</td>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + f"<td>{record}</td></tr>"


def study_section(package: str, root: Path, osm: list[str] = ()) -> str:
    """One study: question, headline numbers, key figures (those under an output in ``osm`` credited to
    OpenStreetMap), notebooks and their runs."""
    module = importlib.import_module(package)
    name = package.rpartition(".")[2]
    results = root / "results"
    own = [s for s in stages().values() if s.study == name]
    sections = list(dict.fromkeys(s.section for s in own))
    parts = [f'<h2 id="{name}">{html.escape(getattr(module, "TITLE", name))}</h2>']
    if getattr(module, "QUESTION", None):
        parts.append(f'<p class="question">{html.escape(module.QUESTION)}</p>')
    ladders = ladder_tables(package, results)
    headline = None if ladders else headline_table(package, results)
    if ladders:
        parts += ladders
    elif headline is not None:
        parts.append(headline)
    else:
        metrics = sorted(p for section in sections for p in (results / section).rglob("metrics.json"))
        parts += [metrics_table(p, root) for p in metrics]
    figures = [p for pattern in getattr(module, "FIGURES", ()) for p in sorted(results.glob(pattern))]
    if figures:
        parts.append('<div class="figures">' + "".join(
            f'<a href="{html.escape(p.relative_to(results).as_posix())}"><img src="{html.escape(p.relative_to(results).as_posix())}" '
            f'alt="{html.escape(p.stem)}"><span>{html.escape(p.relative_to(results).as_posix())}</span>'
            + (f'<span class=credit>{html.escape(OSM_CREDIT)}</span>'
               if any(_under(p.relative_to(root).as_posix(), o) for o in osm) else "")
            + "</a>" for p in figures) + "</div>")
    rows = [run_row(page, manifest, results) for stage in own for page, manifest in rendered_runs(stage, results)]
    if rows:
        head = "".join(f"<th>{h}</th>" for h in ("notebook", "revision", "device", "wall time", "peak memory", "manifest"))
        parts.append(f"<table><caption>rendered notebooks</caption><tr>{head}</tr>{''.join(rows)}</table>")
    return "\n".join(parts)


def build_index(root: Path) -> str:
    """The whole page as HTML text."""
    packages = P.study_packages()
    names = [p.rpartition(".")[2] for p in packages]
    nav = " ".join(f'<a href="#{n}">{n}</a>' for n in names)
    paper = root / "paper" / "paper.pdf"
    paper_link = '<a href="../paper/paper.pdf">the paper (PDF)</a>' if paper.exists() else "the paper (not compiled yet)"
    osm = osm_derived(root)
    body = "\n".join(study_section(p, root, osm) for p in packages)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>Explainable contrastive representation learning: results</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>Explainable contrastive representation learning on images and places</h1>"
        f"<p>Results of this run of the pipeline: what each study's original paper claimed and what held here, "
        f"then by study its headline numbers, key figures and the rendered notebooks that made them. Read "
        f"{paper_link} for the whole story.</p><nav>{nav}</nav>\n{claims_table(root)}\n{body}\n</body></html>\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lib.index results/index.html", file=sys.stderr)
        return 2
    root = project_root()
    out = write_text(argv[0], build_index(root))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
