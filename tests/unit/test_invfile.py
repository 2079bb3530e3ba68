"""The invariant file: loading is safe and every malformed case names entry and field;
export -> load -> export is byte-identical; diff and review render what reviewers need."""
from __future__ import annotations

import json
import os
import sys

import pytest
import yaml

from invariants import invfile
from invariants.diff import diff, render_diff
from invariants.invfile import InvariantFileError
from invariants.model import (SCHEMA_VERSION, Invariant, InvariantSet, Support, When, make_id,
                              sort_key)
from invariants.review import render_markdown

# A valid file with two entries; malformed cases below edit the second (invariants[1]).
GOOD = """\
schema: 1
meta: {script: train.py, runs: 3}
invariants:
  - id: disjoint:data.overlap@eval
    template: disjoint
    target: [data.overlap]
    expect: {}
    when: {phase: eval, steps: [0, null]}
    severity: error
    status: accepted
    support: {runs: 3, observations: 12, span: [0.0]}
    why: no eval sample is in the training set
  - id: range:input.mean@train
    template: range
    target: [input.mean]
    expect: {min: -0.5, max: 0.5}
    when: {phase: train, steps: [0, null]}
    severity: error
    status: proposed
    locus: null
    support: {runs: 3, observations: 90, span: [-0.1, 0.1]}
    why: input mean stays near 0
"""
E1 = "invariants[1] (id range:input.mean@train)"


def edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


# (name, file text, substring of the error message, expected `field`). Entry-level cases
# also name the entry; the message is the whole str(error) as a user sees it.
MALFORMED = [
    ("yaml syntax", "schema: 1\ninvariants: [\n", "invalid YAML at line 3", None),
    ("yaml indentation", edit("    template: range", "     template: range"),
     "invalid YAML at line 14", None),
    ("empty file", "", "the file is empty", None),
    ("top level list", "- schema: 1\n", "expected a mapping at the top level", None),
    ("missing schema", edit("schema: 1\n", ""), "missing 'schema'", None),
    ("newer schema", edit("schema: 1", "schema: 2"),
     "written by a newer invar (schema 2; this invar reads ≤ 1): upgrade invar", "schema"),
    ("schema not int", edit("schema: 1", "schema: '1'"),
     "field 'schema': expected an integer schema version, got str '1'", "schema"),
    ("schema zero", edit("schema: 1", "schema: 0"), "schema 0 does not exist", "schema"),
    ("unknown top key", edit("invariants:", "invariant: []\ninvariants:"),
     "unknown key 'invariant' (did you mean 'invariants'?)", "invariant"),
    ("meta not mapping", edit("meta: {script: train.py, runs: 3}", "meta: [train.py]"),
     "field 'meta': expected a mapping, got list", "meta"),
    ("meta date", edit("runs: 3}", "runs: 3, created: 2024-05-01}"),
     "field 'meta.created': expected plain data", "meta.created"),
    ("missing invariants", "schema: 1\nmeta: {}\n", "missing 'invariants'", None),
    ("invariants not list", "schema: 1\ninvariants: {a: 1}\n",
     "field 'invariants': expected a list of invariants, got dict", "invariants"),
    ("entry not mapping", GOOD + "  - just some text\n",
     "invariants[2]: expected a mapping (id, template, target, ...), got str", None),
    ("unknown template", edit("template: range", "template: rnage"),
     f"{E1}: field 'template': unknown template 'rnage': did you mean 'range'? known templates: ",
     "template"),
    ("template not str", edit("template: range", "template: [range]"),
     "field 'template': expected a template name, got list", "template"),
    ("missing id", edit("  - id: range:input.mean@train\n    template", "  - template"),
     "invariants[1]: field 'id': missing", "id"),
    ("id not str", edit("id: range:input.mean@train", "id: 7"),
     "invariants[1]: field 'id': expected non-empty text without spaces, got int 7", "id"),
    ("target str", edit("target: [input.mean]", "target: input.mean"),
     f"{E1}: field 'target': expected a list of 1 variable name, got str 'input.mean' "
     "(write [input.mean])", "target"),
    ("target arity", edit("target: [input.mean]", "target: [input.mean, input.std]"),
     "template 'range' takes 1 variable name, got 2", "target"),
    ("target element", edit("target: [input.mean]", "target: [3]"),
     f"{E1}: field 'target[0]': expected a variable name", "target[0]"),
    ("missing target", edit("    target: [input.mean]\n", ""), f"{E1}: field 'target': missing", "target"),
    ("expect not mapping", edit("expect: {min: -0.5, max: 0.5}", "expect: [-0.5, 0.5]"),
     f"{E1}: field 'expect': expected a mapping of min, max, got list", "expect"),
    ("expect mistyped", edit("min: -0.5", "min: abc"),
     f"invariants.yaml: {E1}: field 'expect.min': expected int | float | null, got str 'abc'",
     "expect.min"),
    ("expect yaml 1.1 exponent", edit("min: -0.5", "min: 1e-3"),
     "got str '1e-3' (YAML 1.1 reads 1e-3 as text: write 1.0e-3)", "expect.min"),
    ("expect bool", edit("min: -0.5", "min: true"),
     "expected int | float | null, got bool True", "expect.min"),
    ("expect nan", edit("min: -0.5", "min: .nan"), "nan is not allowed (use null", "expect.min"),
    ("expect unknown key", edit("max: 0.5}", "max: 0.5, mx: 2}"),
     f"{E1}: field 'expect.mx': template 'range' has no parameter 'mx'; its parameters: min, max",
     "expect.mx"),
    ("expect missing required", edit("expect: {min: -0.5, max: 0.5}", "expect: {min: -0.5}"),
     f"{E1}: field 'expect.max': missing: template 'range' needs it", "expect.max"),
    ("expect min > max", edit("min: -0.5, max: 0.5", "min: 0.5, max: -0.5"),
     "min (0.5) is greater than max (-0.5)", "expect.min"),
    ("expect on empty template", edit("expect: {}", "expect: {value: 0}"),
     "invariants[0] (id disjoint:data.overlap@eval): field 'expect.value': template 'disjoint' "
     "has no parameter 'value'; its parameters: none", "expect.value"),
    ("when not mapping", edit("when: {phase: train, steps: [0, null]}", "when: train"),
     f"{E1}: field 'when': expected a mapping with phase and steps, got str 'train'", "when"),
    ("when phase", edit("phase: train", "phase: test"),
     f"{E1}: field 'when.phase': expected one of train, eval, any, got str 'test'", "when.phase"),
    ("when phase missing", edit("{phase: train, steps: [0, null]}", "{steps: [0, null]}"),
     f"{E1}: field 'when.phase': missing", "when.phase"),
    ("when steps shape", edit("phase: train, steps: [0, null]", "phase: train, steps: [0]"),
     f"{E1}: field 'when.steps': expected [first, last]", "when.steps"),
    ("when steps float", edit("phase: train, steps: [0, null]", "phase: train, steps: [0, 2.5]"),
     "field 'when.steps': expected [first, last]", "when.steps"),
    ("when steps reversed", edit("phase: train, steps: [0, null]", "phase: train, steps: [5, 2]"),
     "the window ends (2) before it starts (5)", "when.steps"),
    ("when unknown key", edit("steps: [0, null]}\n    severity: error\n    status: proposed",
                              "steps: [0, null], stage: 1}\n    severity: error\n    status: proposed"),
     f"{E1}: field 'when.stage': unknown key 'stage'", "when.stage"),
    ("severity", edit("severity: error\n    status: proposed", "severity: fatal\n    status: proposed"),
     f"{E1}: field 'severity': expected one of error, warning, got str 'fatal'", "severity"),
    ("status", edit("status: proposed", "status: approved"),
     f"{E1}: field 'status': expected one of proposed, accepted, disabled, got str 'approved'",
     "status"),
    ("missing status", edit("    status: proposed\n", ""),
     f"{E1}: field 'status': missing", "status"),
    ("locus", edit("locus: null", "locus: 3"), f"{E1}: field 'locus': expected a module name", "locus"),
    ("support missing", edit("    support: {runs: 3, observations: 90, span: [-0.1, 0.1]}\n", ""),
     "field 'support': missing; every entry needs", "support"),
    ("support runs", edit("runs: 3, observations: 90", "runs: -1, observations: 90"),
     f"{E1}: field 'support.runs': expected an integer >= 0, got int -1", "support.runs"),
    ("support span", edit("span: [-0.1, 0.1]", "span: wide"),
     "field 'support.span': expected a list", "support.span"),
    ("support unknown", edit("span: [-0.1, 0.1]}", "span: [-0.1, 0.1], seeds: 3}"),
     "field 'support.seeds': unknown key 'seeds'", "support.seeds"),
    ("why missing", edit("    why: input mean stays near 0\n", ""), f"{E1}: field 'why': missing", "why"),
    ("why not text", edit("why: input mean stays near 0", "why: [a, b]"),
     f"{E1}: field 'why': expected text", "why"),
    ("typo key", edit("severity: error\n    status: proposed", "severty: error\n    status: proposed"),
     f"{E1}: field 'severty': unknown key 'severty' (did you mean 'severity'?)", "severty"),
    ("duplicate id", edit("id: disjoint:data.overlap@eval", "id: range:input.mean@train"),
     f"{E1}: field 'id': duplicate id 'range:input.mean@train' (first used by invariants[0])", "id"),
    ("duplicate yaml key", edit("    status: proposed\n", "    status: proposed\n    status: accepted\n"),
     "duplicate key 'status'", None),
    ("yaml alias", edit("meta: {script: train.py, runs: 3}", "meta: {a: &x [1], b: *x}"),
     "aliases (*name) are not allowed", None),
    ("python tag", edit("why: input mean stays near 0", "why: !!python/name:os.getcwd ''"),
     "refusing YAML tag !!python/name:os.getcwd at line 22", None),
    ("local tag", edit("min: -0.5", "min: !float -0.5"), "refusing YAML tag !float", None),
    ("schedule point", edit("template: range\n    target: [input.mean]\n    expect: {min: -0.5, max: 0.5}",
                            "template: schedule\n    target: [input.mean]\n"
                            "    expect: {points: [[0, 1, 2], [1, 3]], factor: 3}"),
     f"{E1}: field 'expect.points[1]': expected [step, low, high]", "expect.points[1]"),
    ("schedule order", edit("template: range\n    target: [input.mean]\n    expect: {min: -0.5, max: 0.5}",
                            "template: schedule\n    target: [input.mean]\n"
                            "    expect: {points: [[2, 1, 2], [1, 1, 2]], factor: 3}"),
     "steps must increase: 1 after 2", "expect.points[1]"),
]


@pytest.mark.parametrize("name,text,message,field", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_file_names_entry_and_field(name, text, message, field):
    with pytest.raises(InvariantFileError) as info:
        invfile.loads(text, "yaml", source="invariants.yaml")
    err = info.value
    assert message in str(err)
    assert str(err).startswith("invariants.yaml: ")
    assert err.field == field
    if message.startswith("invariants[") or E1 in message:
        assert err.entry is not None and err.entry in str(err)


def test_good_text_loads():
    s = invfile.loads(GOOD, "yaml")
    assert [i.id for i in s.invariants] == ["disjoint:data.overlap@eval", "range:input.mean@train"]
    assert s.by_id()["range:input.mean@train"].expect == {"min": -0.5, "max": 0.5}


JSON_MALFORMED = [
    ('{"schema": 1,,}', "invalid JSON: line 1, column 14"),
    ('{"schema": 1, "schema": 1, "invariants": []}', "duplicate key 'schema'"),
    ('{"schema": 1, "invariants": [], "meta": {"x": NaN}}', "NaN is not a number JSON allows"),
    ('[1, 2]', "expected a mapping at the top level"),
]


@pytest.mark.parametrize("text,message", JSON_MALFORMED)
def test_malformed_json(text, message):
    with pytest.raises(InvariantFileError, match=None) as info:
        invfile.loads(text, "json", source="inv.json")
    assert message in str(info.value)


def test_python_object_payload_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = edit("why: input mean stays near 0",
                   f"why: !!python/object/apply:os.system ['touch {marker}']")
    path = tmp_path / "invariants.yaml"
    path.write_text(payload)
    with pytest.raises(InvariantFileError) as info:
        invfile.load(path)
    assert "refusing YAML tag !!python/object/apply:os.system" in str(info.value)
    assert "nothing is executed" in str(info.value)
    assert not marker.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="payload uses a POSIX shell command")
def test_payload_is_live_under_an_unsafe_loader(tmp_path):
    # Control for the test above: the same payload does run under yaml.unsafe_load, so
    # "the marker does not exist" really means the safe loader refused it.
    marker = tmp_path / "pwned"
    yaml.unsafe_load(f"x: !!python/object/apply:os.system ['touch {marker}']")
    assert marker.exists()


def test_extension_and_missing_file(tmp_path):
    with pytest.raises(InvariantFileError, match=r"extension '\.txt'"):
        invfile.load(tmp_path / "invariants.txt")
    with pytest.raises(InvariantFileError, match=r"extension '\.toml'"):
        invfile.dump(sample_set(), tmp_path / "invariants.toml")
    with pytest.raises(InvariantFileError, match="cannot read the file"):
        invfile.load(tmp_path / "absent.yaml")


# ------------------------------------------------------------------------- round trip

def inv(template, target, expect, phase="train", steps=(0, None), severity="error",
        status="proposed", span=None, locus=None, why="held in every reference run"):
    return Invariant(id=make_id(template, target, phase), template=template, target=list(target),
                     expect=dict(expect), when=When(phase, steps), severity=severity,
                     status=status, support=Support(3, 90, None if span is None else list(span)),
                     why=why, locus=locus)


def sample_set() -> InvariantSet:
    """Built the way the miner builds sets (dicts and lists in, any order)."""
    invs = [
        inv("range", ["block.layer2.grad_norm"], {"max": None, "min": 1e-05}, steps=(0, 29),
            severity="warning", locus="layer2", span=[2e-05, 3.0]),
        inv("range", ["input.mean"], {"min": -0.123456789012, "max": 1 / 3},
            span=[0.1, 123456789.123456789], why="`input.mean` (train) in [-0.1235, 0.3333]: a \"quoted\" "
                                                 "# not a comment: yes\nsecond line  "),
        inv("all_none", ["block.layer2.trainable_fraction"], {"quantifier": "all"},
            locus="layer2", span=[1.0]),
        inv("one_of", ["input.shape"], {"values": ["3x32x32", "yes", "1e-3", "null"]},
            span=["3x32x32"]),
        inv("equal", ["data.eval.mean", "data.train.mean"], {"offset": -0.0, "tolerance": 5e-324},
            phase="eval", span=[-1.5e300, 2]),
        inv("disjoint", ["data.overlap"], {}, phase="eval", status="accepted", span=[0.0]),
        inv("constant", ["optim.type"], {"value": "SGD"}, severity="warning", status="disabled",
            why="optimizer — ünïcode ✓"),
        inv("trend", ["loss.value"], {"direction": "decreasing", "min_change": 0.2},
            steps=(0, 29), phase="any"),
        inv("schedule", ["optim.lr_max"], {"points": [[0, 1e-4, 1e-4], [1, 2e-4, 2.5e-4], [5, 0.001, 0.001]],
                                           "factor": 3.0}, steps=(0, 29), severity="warning"),
    ]
    meta = {"torch": "2.13.0", "script": "train.py", "args": ["--lr", "0.1", "--flag"], "runs": 3,
            "steps": 30, "created": "2024-05-01T12:00:00Z", "invar": "0.1.0", "extra": {"b": 1, "a": [1, 2]}}
    return InvariantSet(schema=SCHEMA_VERSION, meta=meta, invariants=tuple(invs))


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_load_export_is_byte_identical(fmt):
    s = sample_set()
    text = invfile.dumps(s, fmt)
    back = invfile.loads(text, fmt)
    assert invfile.dumps(back, fmt) == text
    # Same content; the file order is canonical (block, template, id).
    assert back.invariants == tuple(sorted(s.invariants, key=sort_key))
    assert back.meta == s.meta
    if fmt == "json":
        json.loads(text)  # standard JSON, nothing invar-specific


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_dump_load_files(tmp_path, suffix):
    s = sample_set()
    path = tmp_path / ("invariants" + suffix)
    invfile.dump(s, path)
    first = path.read_bytes()
    invfile.dump(invfile.load(path), path)
    assert path.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_floats_round_trip_exactly():
    s = invfile.loads(invfile.dumps(sample_set()), "yaml")
    e = s.by_id()["equal:data.eval.mean,data.train.mean@eval"]
    assert e.expect["tolerance"] == 5e-324 and e.support.span == (-1.5e300, 2)
    r = s.by_id()["range:input.mean@train"]
    assert r.expect["max"] == 1 / 3 and isinstance(r.expect["max"], float)
    assert "min: 1.0e-05" in invfile.dumps(s)  # YAML 1.1 needs the dot to read a float


def test_yaml_layout_is_reviewable():
    text = invfile.dumps(sample_set())
    assert text.startswith("# invar invariant file (schema 1)")
    assert "status: disabled" in text and "skipped by `invar check`" in text
    assert "edit a bound here" in text and "Regenerate:" in text
    entry = text[text.index("  - id: range:input.mean@train"):].split("\n\n")[0]
    keys = [line.split(":")[0].strip() for line in entry.splitlines() if not line.startswith("      ")]
    assert keys == ["- id", "template", "target", "expect", "when", "severity", "status", "locus",
                    "support", "why"]
    assert "    target: [input.mean]\n" in entry
    assert "&" not in text.replace("&&", "")  # no YAML anchors


def test_edits_to_status_and_expect_are_honoured():
    text = invfile.dumps(sample_set())
    text = text.replace("min: -0.123456789012", "min: -2.0")
    text = text.replace("    status: proposed\n    locus: null\n    support:\n      runs: 3\n"
                        "      observations: 90\n      span: [0.1, 123456789.12345679]",
                        "    status: disabled\n    locus: null\n    support:\n      runs: 3\n"
                        "      observations: 90\n      span: [0.1, 123456789.12345679]")
    s = invfile.loads(text, "yaml")
    r = s.by_id()["range:input.mean@train"]
    assert r.expect["min"] == -2.0 and r.status == "disabled"
    assert r not in s.active()


def test_dumps_refuses_what_could_not_be_loaded():
    bad = InvariantSet(SCHEMA_VERSION, {}, (inv("range", ["x"], {"min": float("nan"), "max": 1.0}),))
    with pytest.raises(InvariantFileError) as info:
        invfile.dumps(bad)
    assert info.value.field == "expect.min" and "range:x@train" in str(info.value)


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "invariants.yaml"
    path.write_text("old contents\n")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(invfile.os, "replace", crash)
    with pytest.raises(OSError):
        invfile.dump(sample_set(), path)
    assert path.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["invariants.yaml"]


# ------------------------------------------------------------------------- model

def test_model_ids_status_and_hashing():
    assert make_id("range", ["input.mean"], "train") == "range:input.mean@train"
    assert make_id("equal", ("output.width", "data.train.label_max"), "train") == \
        "equal:output.width,data.train.label_max@train"
    s = sample_set()
    assert len({*s.invariants}) == len(s.invariants) and hash(s) == hash(sample_set())
    t = s.with_status("range:input.mean@train", "disabled")
    assert s.by_id()["range:input.mean@train"].status == "proposed"  # s unchanged
    assert len(t.active()) == len(s.active()) - 1
    with pytest.raises(KeyError):
        s.with_status("nope", "accepted")
    with pytest.raises(ValueError):
        s.with_status("range:input.mean@train", "approved")
    with pytest.raises(ValueError, match="duplicate"):
        InvariantSet(SCHEMA_VERSION, {}, s.invariants + s.invariants[:1])
    with pytest.raises(TypeError):
        s.invariants[0].expect["min"] = 0  # read-only


# ------------------------------------------------------------------------- diff, review

def test_diff_of_a_file_with_itself_is_empty():
    a = invfile.loads(invfile.dumps(sample_set()), "yaml")
    d = diff(a, sample_set())
    assert not d and render_diff(d) == "no differences"


def test_diff_shows_a_changed_bound_added_and_removed():
    a = sample_set()
    text = invfile.dumps(a).replace("min: -0.123456789012", "min: -0.2")
    text = text.replace("severity: warning\n    status: disabled", "severity: error\n    status: disabled")
    b = invfile.loads(text, "yaml")
    extra = inv("range", ["input.std"], {"min": 0.9, "max": 1.1})
    gone = "disjoint:data.overlap@eval"
    b = InvariantSet(b.schema, b.meta, tuple(i for i in b.invariants if i.id != gone) + (extra,))
    d = diff(a, b)
    assert d
    changed = dict(d.changed)
    assert changed["range:input.mean@train"] == {"expect.min": (-0.123456789012, -0.2)}
    assert changed["constant:optim.type@train"] == {"severity": ("warning", "error")}
    assert [i.id for i in d.added] == ["range:input.std@train"]
    assert [i.id for i in d.removed] == [gone]
    text = render_diff(d)
    assert "expect.min: -0.123456789012 -> -0.2" in text
    assert "+ range:input.std@train" in text and "1 added, 1 removed, 2 changed" in text


def test_diff_evidence_only_is_not_a_difference():
    a = sample_set()
    b = invfile.loads(invfile.dumps(a).replace("observations: 90", "observations: 120", 1), "yaml")
    d = diff(a, b)
    assert not d and len(d.evidence) == 1
    assert render_diff(d).startswith("no differences")
    assert "support.observations: 90 -> 120" in render_diff(d)


def test_markdown_groups_by_block_and_family():
    md = render_markdown(sample_set())
    assert md.startswith("# Invariants for `train.py`")
    assert "| template | error | warning | total |" in md
    assert "| range | 1 | 1 | 2 |" in md
    whole, layer2 = md.index("## Whole run"), md.index("## Block `layer2`")
    assert whole < layer2
    assert md.index("### all_none", layer2) < md.index("### range", layer2)
    assert "| `range:input.mean@train` |" in md
    assert "in [-0.1235, 0.3333]" in md and "3 runs, 90 obs, span [0.1," in md
    assert "second line" in md and "\nsecond line" not in md  # a why never breaks the table



def test_schedule_compares_at_the_same_step():
    from invariants.templates.temporal import Schedule
    e = {"points": [[0, 1e-4, 1e-4], [10, 1e-3, 1e-3]], "factor": 3.0}
    assert Schedule.holds(e, [2e-4], 0) and not Schedule.holds(e, [2e-4], 12)  # warm-up skipped
    assert Schedule.holds(e, [2e-3], 15) and not Schedule.holds(e, [5e-3], 15)
