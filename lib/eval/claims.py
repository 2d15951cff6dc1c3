"""Ladders and claims: the two shapes in which every study reports what it found.

**A ladder** (:class:`Ladder`) is a results table read from the bottom: a
*trivial* rung (raw pixels, simple statistics, coordinates), the paper's
*method* and its *variants*, a *bound* (a supervised model of the same
architecture), and the known *ceiling* of the data (an oracle on the true
factors). Each row holds one metric as an :class:`IntervalCell` over the
study's repetitions; ``comparisons`` hold the paired comparisons that the text
reads (the method against the trivial rung and against the paper's baseline),
Holm-corrected within the study's family before they are stored.

**A claim** (:class:`Claim`) is one sentence of an original paper put to the
test here: what the paper claimed (and the number it reported, as text, since
it was measured on other data), the evidence here (a comparison or a cell),
and a verdict:

* ``reproduced``: the comparison is supported (Holm-adjusted p < 0.05) in the
  direction the paper claims;
* ``not reproduced``: it is not supported, or supported the other way;
* ``not testable here``: the data or the budget cannot test it (``reason``
  says which), and the evidence may be absent.

:func:`verdict_of` derives the verdict from a comparison and the claimed
direction, so no verdict is typed by hand; ``reason`` says why in words
(budget, data, by construction) and is required unless the claim was
reproduced. The paper's claims tables and the front page render these objects
as they are (``paper/``, :mod:`lib.index`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from lib.eval.intervals import ComparisonCell, IntervalCell

__all__ = ["RUNGS", "Claim", "Ladder", "LadderRow", "TrainingRecord", "Verdict", "verdict_of"]

Rung = Literal["trivial", "method", "variant", "bound", "ceiling"]
#: The rungs in reading order, bottom to top.
RUNGS: tuple[str, ...] = ("trivial", "method", "variant", "bound", "ceiling")
Verdict = Literal["reproduced", "not reproduced", "not testable here"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingRecord(_Strict):
    """How one training of a ladder's row ended: its ``model`` and ``seed``, the epoch validation selected, the
    last epoch trained (both from 0), the maximum number of epochs, and whether early stopping ended it at its
    validation plateau rather than at that maximum (a row is compared only once its model has plateaued)."""

    model: str
    seed: int
    selected_epoch: int
    last_epoch: int
    max_epochs: int
    stopped_at_plateau: bool

    @model_validator(mode="after")
    def _consistent(self) -> TrainingRecord:
        if not 0 <= self.selected_epoch <= self.last_epoch < self.max_epochs:
            raise ValueError(f"training {self.model} seed {self.seed}: need 0 <= selected_epoch "
                             f"({self.selected_epoch}) <= last_epoch ({self.last_epoch}) < max_epochs "
                             f"({self.max_epochs})")
        return self


class LadderRow(_Strict):
    """One row: ``name`` (as the table prints it), its ``rung``, the metric ``cell`` (None where the row has no
    number on this data, with ``note`` saying why) and an optional one-line ``note``."""

    name: str
    rung: Rung
    cell: IntervalCell | None
    note: str = ""

    @model_validator(mode="after")
    def _explained(self) -> LadderRow:
        if self.cell is None and not self.note:
            raise ValueError(f"ladder row {self.name!r} has no cell and no note saying why")
        return self


class Ladder(_Strict):
    """A results table as a ladder: ``metric`` (its name as printed), whether higher is better, the rows in
    rung order, and the paired comparisons the text reads (Holm-corrected in the study's family)."""

    title: str
    metric: str
    higher_is_better: bool = True
    rows: list[LadderRow]
    comparisons: list[ComparisonCell] = []

    @model_validator(mode="after")
    def _ordered(self) -> Ladder:
        if not self.rows:
            raise ValueError(f"ladder {self.title!r} has no rows")
        ranks = [RUNGS.index(r.rung) for r in self.rows]
        if ranks != sorted(ranks):
            raise ValueError(f"ladder {self.title!r}: rows must go {' -> '.join(RUNGS)}, got "
                             f"{[r.rung for r in self.rows]}")
        names = [r.name for r in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"ladder {self.title!r}: row names repeat: {names}")
        for c in self.comparisons:
            for side in (c.a, c.b):
                if side not in names:
                    raise ValueError(f"ladder {self.title!r}: comparison {c.a} - {c.b} names {side!r}, "
                                     f"which is no row ({names})")
        return self


def verdict_of(comparison: ComparisonCell | None, claimed_direction: int) -> Verdict:
    """``reproduced`` when ``comparison`` supports ``a - b`` with the sign ``claimed_direction`` (+1: the paper
    says a beats b, -1: b beats a); ``not testable here`` without a comparison or with one repetition; else
    ``not reproduced``."""
    if claimed_direction not in (-1, 1):
        raise ValueError(f"claimed_direction must be +1 or -1, got {claimed_direction}")
    if comparison is None or comparison.p_value is None:
        return "not testable here"
    return "reproduced" if comparison.supported and comparison.direction == claimed_direction else "not reproduced"


class Claim(_Strict):
    """One claim of the original paper against the evidence here.

    ``claim``: the paper's sentence in our words; ``original``: the number it reported (text, with its
    dataset); ``evidence``: the comparison (or, for a claim about one quantity, the cell) measured here,
    None when not testable; ``verdict`` (derive it with :func:`verdict_of` for comparisons); ``reason``:
    why, in words (required unless reproduced); ``where``: the table or figure that shows it.
    """

    study: str
    claim: str
    original: str
    evidence: ComparisonCell | IntervalCell | None
    verdict: Verdict
    reason: str = ""
    where: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Claim:
        if self.verdict != "reproduced" and not self.reason:
            raise ValueError(f"claim {self.claim!r} is {self.verdict}: say why in reason")
        if self.verdict == "not testable here":
            return self
        if self.evidence is None:
            raise ValueError(f"claim {self.claim!r} is {self.verdict} without evidence")
        if self.verdict == "reproduced" and isinstance(self.evidence, ComparisonCell) and not self.evidence.supported:
            raise ValueError(f"claim {self.claim!r} is reproduced but its comparison is not supported")
        return self
