"""The corpus keeps its contract (docs/corpus.md): read from the files, nothing runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from corpus import cases, measures, verify

CASES = cases.case_dirs()


def test_the_corpus_has_cases() -> None:
    assert len(CASES) >= 6, [c.name for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_yaml_keeps_the_contract(case: Path) -> None:
    assert cases.validate(case) == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_bug_names_measurements_the_verifier_knows(case: Path) -> None:
    meta = cases.load(case)
    for v in meta["variants"]:
        for spec in v.get("measure") or []:
            assert spec["check"] in measures.MEASURES, (v["script"], spec)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_shipped_pretrained_weights_are_small_and_reproducible(case: Path) -> None:
    for weights in case.glob("*.pt"):
        assert weights.stat().st_size < 1_000_000, weights
        assert (case / "make_pretrained.py").is_file(), f"{weights} has no script that makes it"


def test_the_vocabulary_is_read_from_the_contract() -> None:
    assert cases.KNOWN_CAUSES <= cases.cause_vocabulary()


def test_validation_reports_contract_breaks(tmp_path: Path) -> None:
    case = tmp_path / "broken"
    case.mkdir()
    (case / "reference.py").write_text("def main(argv=None):\n    pass\n")
    (case / "case.yaml").write_text(
        "case: broken\ntitle: t\nsource: {ref: r, url: 'http://x', kind: blog}\ndata: d\nmodel: m\n"
        "reference: {script: reference.py}\nchance: 2\nvariants:\n"
        "  - {script: bug_x.py, kind: bug, expect: {causes: [cosmic_rays]}}\n")
    problems = "\n".join(cases.validate(case))
    for expected in ("not an https URL", "source.kind 'blog'", "chance must be", "bug_x.py does not exist",
                     "'cosmic_rays' is not in the vocabulary", "missing 'why_silent'",
                     "at least one bug and one ok", "does not seed itself", "__main__"):
        assert expected in problems, expected


def test_learning_threshold() -> None:
    assert verify.learn_threshold(0.01) == pytest.approx(0.03)
    assert verify.learn_threshold(0.5) == pytest.approx(0.75)
