"""Ladders and claims (lib.eval.claims): rung order, verdicts derived from comparisons, reasons required."""

import pytest
from pydantic import ValidationError

from lib.eval.claims import Claim, Ladder, LadderRow, verdict_of
from lib.eval.intervals import comparison_cell, holm, interval_cell


def _rows():
    return [
        LadderRow(name="raw pixels", rung="trivial", cell=interval_cell([0.5, 0.52, 0.51], bounds=(0, 1))),
        LadderRow(name="method", rung="method", cell=interval_cell([0.7, 0.72, 0.69], bounds=(0, 1))),
        LadderRow(name="oracle", rung="ceiling", cell=None, note="no oracle on this data"),
    ]


def test_ladder_keeps_rung_order_and_names_rows():
    ladder = Ladder(title="t", metric="R2", rows=_rows())
    assert [r.rung for r in ladder.rows] == ["trivial", "method", "ceiling"]
    with pytest.raises(ValidationError, match="rows must go"):
        Ladder(title="t", metric="R2", rows=list(reversed(_rows())))
    bad = comparison_cell([0.7, 0.72, 0.69], [0.5, 0.52, 0.51], a="method", b="pixels")
    with pytest.raises(ValidationError, match="no row"):
        Ladder(title="t", metric="R2", rows=_rows(), comparisons=[bad])
    with pytest.raises(ValidationError, match="no cell and no note"):
        LadderRow(name="x", rung="bound", cell=None)


def test_verdict_follows_the_corrected_comparison():
    better = holm([comparison_cell([0.7, 0.72, 0.69, 0.71], [0.5, 0.52, 0.51, 0.5], a="m", b="p")])[0]
    assert better.supported
    assert verdict_of(better, +1) == "reproduced"
    assert verdict_of(better, -1) == "not reproduced"
    noisy = comparison_cell([0.7, 0.2, 0.6], [0.5, 0.6, 0.4], a="m", b="p")
    assert not noisy.supported and verdict_of(noisy, +1) == "not reproduced"
    single = comparison_cell([0.7], [0.5], a="m", b="p")
    assert verdict_of(single, +1) == "not testable here"
    assert verdict_of(None, +1) == "not testable here"
    with pytest.raises(ValueError):
        verdict_of(better, 0)


def test_claim_needs_a_reason_unless_reproduced_and_evidence_unless_untestable():
    cell = comparison_cell([0.7, 0.2, 0.6], [0.5, 0.6, 0.4], a="m", b="p")
    with pytest.raises(ValidationError, match="say why"):
        Claim(study="s", claim="m beats p", original="+5 %", evidence=cell, verdict="not reproduced")
    with pytest.raises(ValidationError, match="not supported"):
        Claim(study="s", claim="m beats p", original="+5 %", evidence=cell, verdict="reproduced")
    with pytest.raises(ValidationError, match="without evidence"):
        Claim(study="s", claim="m beats p", original="+5 %", evidence=None, verdict="not reproduced", reason="r")
    ok = Claim(study="s", claim="m beats p", original="+5 %", evidence=None, verdict="not testable here",
               reason="no street views of real cities")
    assert Claim.model_validate_json(ok.model_dump_json()) == ok


def test_a_training_record_keeps_its_epochs_in_order():
    from lib.eval.claims import TrainingRecord

    ok = TrainingRecord(model="m", seed=0, selected_epoch=3, last_epoch=8, max_epochs=20, stopped_at_plateau=True)
    assert ok.last_epoch == 8
    for selected, last, maximum in ((5, 4, 20), (0, 20, 20), (-1, 3, 20)):
        with pytest.raises(ValidationError, match="selected_epoch"):
            TrainingRecord(model="m", seed=0, selected_epoch=selected, last_epoch=last, max_epochs=maximum,
                           stopped_at_plateau=False)
